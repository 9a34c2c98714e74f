//! A private anvil (Ethereum devnet) per test: its own port, killed when dropped. The binary
//! comes from `COINSENSEI_ANVIL`, which `cargo xtask test` sets after installing the pinned
//! npm package.

use std::process::Stdio;
use std::time::Duration;

/// A running anvil with anvil's default funded accounts (mnemonic "test test ... junk").
pub struct Anvil {
    _child: tokio::process::Child,
    pub url: String,
}

impl Anvil {
    pub async fn start() -> Anvil {
        Anvil::start_with(&[]).await
    }

    /// With extra arguments, e.g. `--no-mining` (blocks only on `evm_mine`).
    pub async fn start_with(extra: &[&str]) -> Anvil {
        let binary = std::env::var("COINSENSEI_ANVIL").expect(
            "COINSENSEI_ANVIL is not set: run the tests with `cargo xtask test`, which installs anvil",
        );
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("its address").port()
        };
        let child = tokio::process::Command::new(&binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--silent",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start anvil at {binary}: {error}"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "anvil did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Anvil {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}
