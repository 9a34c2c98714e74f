//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask test`: every test of the workspace (what CI runs). Uses cargo-nextest when
//!   installed (each test in its own process, in parallel), `cargo test` otherwise.
//! - `cargo xtask bench [control|queue]`: the figures the issues ask for, on real processes:
//!   `control` (worker control latency, lost detection, RSS, time to ready; both stores) and
//!   `queue` (`coinsensei bench queue` on Postgres, SQLite and Redis beside BullMQ and
//!   graphile-worker installed from npm, on the same Postgres and Redis). Default: both.

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask <test|bench> [extra arguments passed on]

  test    run every test of the workspace (needs Postgres on 127.0.0.1:5432; see README.md)
  bench [control|queue] [--jobs N] [--concurrency C]
          control: worker control latency, lost-worker detection, idle RSS, `up` time to ready
          queue:   the job queue on Postgres, SQLite and Redis beside BullMQ and graphile-worker
                   (needs node and npm; writes target/bench-queue.json)";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let result = match task.as_deref() {
        Some("test") => test(&rest),
        Some("bench") => bench(&rest),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(mut command: Command) -> anyhow::Result<()> {
    eprintln!("+ {command:?}");
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    if has_nextest() {
        let mut command = cargo();
        command
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(extra);
        run(command)?;
        // nextest does not run doctests.
        let mut command = cargo();
        command.args(["test", "--workspace", "--doc"]);
        run(command)
    } else {
        eprintln!(
            "cargo-nextest not found: using cargo test (install it with `cargo install cargo-nextest` for faster runs)"
        );
        let mut command = cargo();
        command
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(extra);
        run(command)
    }
}

fn bench(extra: &[String]) -> anyhow::Result<()> {
    let mut command = cargo();
    command
        .args(["bench", "--package", "coinsensei", "--bench", "control"])
        .args(extra);
    run(command)
}
