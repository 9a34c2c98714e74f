//! A private anvil (Ethereum devnet) per test: its own port, killed when dropped. The binary
//! comes from `COINSENSEI_ANVIL`, which `cargo xtask test` sets after installing the pinned
//! npm package.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

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
        Anvil::start_on(0, extra).await
    }

    /// On `port` (0: one anvil picks): to bring a node back where a killed one was.
    pub async fn start_on(port: u16, extra: &[&str]) -> Anvil {
        let binary = std::env::var("COINSENSEI_ANVIL").expect(
            "COINSENSEI_ANVIL is not set: run the tests with `cargo xtask test`, which installs anvil",
        );
        // anvil picks its own free port and says which: no window in which two tests could
        // be handed the same port (and one talk to the other's devnet).
        let mut child = tokio::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start anvil at {binary}: {error}"));
        let stdout = child.stdout.take().expect("anvil's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("anvil's output") {
                if let Some(address) = line.trim().strip_prefix("Listening on ") {
                    return address.to_string();
                }
            }
            panic!("anvil exited before listening");
        })
        .await
        .expect("anvil did not listen within 20 s");
        // anvil logs every call; keep reading so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Anvil {
            _child: child,
            url: format!("http://{listening}"),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("anvil's URL ends with its port")
    }

    /// Kills it (SIGKILL, as a crash) and waits until it is gone, its port free.
    pub async fn kill(mut self) {
        self._child.kill().await.expect("kill anvil");
    }
}
