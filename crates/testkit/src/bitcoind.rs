//! A private Bitcoin regtest node per test: its own data directory and RPC port, cookie
//! authentication, killed (and its directory removed) when dropped. The binary comes from
//! `COINSENSEI_BITCOIND`, which `cargo xtask test` sets after installing bitcoind
//! (`xtask/scripts/install-bitcoind.sh`); `bitcoin-cli` is expected beside it.
//!
//! bitcoind cannot pick its own RPC port, so a free one is asked of the kernel and handed
//! over. If another process takes it first, this node fails to bind and exits, and a new port
//! is tried. A node answering on the port is known to be this one because it accepted this
//! data directory's cookie, which no other node has.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// A running regtest node (no node wallet: the tests' wallet is CoinSensei's).
pub struct Bitcoind {
    child: tokio::process::Child,
    pub url: String,
    pub rpc_port: u16,
    /// The data directory; its `regtest/.cookie` holds the RPC credentials.
    pub datadir: PathBuf,
    cli: PathBuf,
}

impl Bitcoind {
    pub async fn start() -> Bitcoind {
        Bitcoind::start_with(&[]).await
    }

    /// A node with `extra` arguments after the usual ones (a later argument wins, e.g.
    /// `-txindex=0`).
    pub async fn start_with(extra: &[&str]) -> Bitcoind {
        let binary = PathBuf::from(std::env::var("COINSENSEI_BITCOIND").expect(
            "COINSENSEI_BITCOIND is not set: run the tests with `cargo xtask test`, which installs bitcoind",
        ));
        let cli = binary.with_file_name("bitcoin-cli");
        let mut last_error = String::new();
        for _ in 0..5 {
            let rpc_port = free_port();
            let datadir = std::env::temp_dir().join(format!(
                "coinsensei-bitcoind-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&datadir).expect("creating the node's data directory");
            let child = tokio::process::Command::new(&binary)
                .arg("-regtest")
                .arg(format!("-datadir={}", datadir.display()))
                .arg(format!("-rpcport={rpc_port}"))
                .args(chain_bitcoin::REGTEST_NODE_ARGS)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("cannot start bitcoind at {}: {error}", binary.display())
                });
            let node = Bitcoind {
                child,
                url: format!("http://127.0.0.1:{rpc_port}"),
                rpc_port,
                datadir,
                cli: cli.clone(),
            };
            match node.wait_ready().await {
                Ok(()) => return node,
                // Dropping it kills the process and removes its directory.
                Err(error) => last_error = error,
            }
        }
        panic!("bitcoind did not start: {last_error}");
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let output = tokio::process::Command::new(&self.cli)
                .args(self.cli_args())
                .arg("getblockcount")
                .output()
                .await
                .map_err(|error| format!("cannot run {}: {error}", self.cli.display()))?;
            if output.status.success() {
                return Ok(());
            }
            let log =
                std::fs::read_to_string(self.datadir.join("regtest/debug.log")).unwrap_or_default();
            if log.contains("Unable to bind") || log.contains("Shutdown: done") {
                return Err(format!(
                    "bitcoind exited: {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "no RPC answer within 60 s: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn cli_args(&self) -> Vec<String> {
        vec![
            "-regtest".into(),
            format!("-datadir={}", self.datadir.display()),
            format!("-rpcport={}", self.rpc_port),
            "-rpcconnect=127.0.0.1".into(),
        ]
    }

    /// The RPC credentials, `user:password`, from the node's cookie file.
    pub fn cookie(&self) -> String {
        std::fs::read_to_string(self.datadir.join("regtest/.cookie"))
            .expect("bitcoind's cookie file")
            .trim()
            .to_string()
    }

    /// Runs `bitcoin-cli` against this node; its standard output, trimmed. Panics on failure.
    pub async fn cli(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new(&self.cli)
            .args(self.cli_args())
            .args(args)
            .output()
            .await
            .expect("running bitcoin-cli");
        assert!(
            output.status.success(),
            "bitcoin-cli {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("the port").port()
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.datadir);
    }
}
