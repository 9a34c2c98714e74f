//! Withdrawals under chaos, on real processes: `coinsensei up` with its Ethereum withdrawal
//! worker, a private Postgres (its own `initdb` data directory) and a private anvil, N
//! withdrawals (ETH and an ERC-20 mixed, each to a fresh recipient) sent through
//! `/api/v1/withdrawals` while the worker process is SIGKILLed every 1 to 5 s, Postgres is
//! restarted once and anvil once (its mempool lost; its chain kept by `--state`). At the end
//! it reads the chain, not the store: every recipient received exactly its amount once, none
//! is lost, each withdrawal is `completed` or `manual_review` with a reason. It prints the
//! counts and the figures (throughput, request → broadcast and → completed percentiles).
//!
//! The suite runs a CI-sized run (`COINSENSEI_CHAOS_WITHDRAWALS`, default 60); `cargo xtask
//! chaos withdrawals` runs the full-sized one (1,000) and prints its report.
//! `COINSENSEI_CHAOS_KILLS=0` turns the faults off, for a throughput figure.

#![allow(
    clippy::float_arithmetic,
    reason = "percentiles and rates of the report; no money"
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use chain::address::{Address, Network};
use chain::provider::SubmitOutcome;
use common::*;
use domain::Chain;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use signer::Signer;
use testkit::wait_for;
use tokio::process::{Child, Command};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
const WORKER: &str = "ethereum-withdrawal-1";
const TOKEN_BIN: &str = include_str!("../../chain-ethereum/fixtures/erc20/TestToken.bin");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A private Postgres: its own data directory, port and postmaster, owned by the `postgres`
/// user (initdb refuses root).
struct Postgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Postgres {
    fn bin() -> PathBuf {
        let root = Path::new("/usr/lib/postgresql");
        let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
            .expect("PostgreSQL's binaries under /usr/lib/postgresql")
            .map(|entry| entry.unwrap().path())
            .collect();
        versions.sort();
        versions.pop().expect("a PostgreSQL version").join("bin")
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .stdin(Stdio::null());
        command.output().expect("run a PostgreSQL tool as postgres")
    }

    fn start_new(dir: &Path) -> Postgres {
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let postgres = Postgres {
            dir: data,
            port: free_port(),
            bin: Postgres::bin(),
        };
        let data = postgres.dir.to_str().unwrap().to_string();
        let init = postgres.as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        postgres.start();
        postgres
    }

    fn start(&self) {
        let data = self.dir.to_str().unwrap();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port, data
        );
        let log = format!("{data}/log");
        let started = self.as_postgres(
            "pg_ctl",
            &["-D", data, "-l", &log, "-o", &options, "-w", "start"],
        );
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
    }

    /// Restarts it the hard way: connections cut, in-flight transactions lost, then back.
    fn restart(&self) {
        let data = self.dir.to_str().unwrap();
        let stopped = self.as_postgres("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        assert!(
            stopped.status.success(),
            "{}",
            String::from_utf8_lossy(&stopped.stderr)
        );
        self.start();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.to_str().unwrap().to_string();
        let _ = self.as_postgres("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

/// A private anvil on a fixed port that can be stopped and started again with its chain.
struct Devnet {
    port: u16,
    state: PathBuf,
    child: Option<Child>,
}

impl Devnet {
    async fn start(dir: &Path) -> Devnet {
        let mut devnet = Devnet {
            port: free_port(),
            state: dir.join("anvil-state.json"),
            child: None,
        };
        devnet.spawn().await;
        devnet
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let binary =
            std::env::var("COINSENSEI_ANVIL").expect("COINSENSEI_ANVIL (cargo xtask test)");
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--block-time", "1", "--state"])
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start anvil");
        self.child = Some(child);
        let url = self.url();
        wait_for("anvil answers", Duration::from_secs(20), || async {
            chain_ethereum::Ethereum::connect(&url, Some(31337))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    /// Stops anvil (it writes its chain to `--state`; its mempool is lost) and starts it again.
    async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id().unwrap() as i32, Signal::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        }
        self.spawn().await;
    }
}

async fn deploy_token(client: &chain_ethereum::Ethereum, hot: &signer::InProcessSigner) -> String {
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let mut code = hex::decode(TOKEN_BIN.trim()).unwrap();
    code.extend_from_slice(&U256::from(10u128.pow(15)).to_be_bytes::<32>());
    let nonce = client.pending_nonce(&from).await.unwrap();
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let signed = chain_ethereum::sign(
        client.build_contract_creation(code, nonce, fees, 3_000_000),
        hot,
        0,
    )
    .unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    let creator = alloy_primitives::Address::from(from.ethereum_bytes().unwrap());
    let token = creator.create(nonce).to_checksum(None);
    let address = Address::parse(Chain::Ethereum, Network::Mainnet, &token).unwrap();
    wait_for("the token deployed", Duration::from_secs(20), || async {
        client
            .token_balance(&address, &from)
            .await
            .ok()
            .filter(|b| !b.is_zero())
    })
    .await;
    token
}

fn recipient(n: u64) -> String {
    let digest = alloy_primitives::keccak256(format!("chaos-recipient-{n}-{}", std::process::id()));
    alloy_primitives::Address::from_slice(&digest[..20]).to_checksum(None)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn seconds_between(from: &str, to: &str) -> f64 {
    let from = chrono::DateTime::parse_from_rfc3339(from).unwrap();
    let to = chrono::DateTime::parse_from_rfc3339(to).unwrap();
    (to - from).num_milliseconds() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_survive_kills_and_restarts() {
    let count = env_number("COINSENSEI_CHAOS_WITHDRAWALS", 60);
    let chaos = env_number("COINSENSEI_CHAOS_KILLS", 1) != 0;
    // `COINSENSEI_CHAOS_STORE=sqlite`: the embedded store instead (no database to restart).
    let sqlite = std::env::var("COINSENSEI_CHAOS_STORE").is_ok_and(|store| store == "sqlite");
    let dir = tempfile_dir();
    let postgres = (!sqlite).then(|| Postgres::start_new(&dir.join("pg")));
    let mut devnet = Devnet::start(&dir).await;
    let hot = signer::InProcessSigner::new(
        &signer::Mnemonic::parse(MNEMONIC).unwrap(),
        Network::Mainnet,
    );
    let client = chain_ethereum::Ethereum::connect(&devnet.url(), Some(31337))
        .await
        .unwrap();
    let token = deploy_token(&client, &hot).await;

    let keystore = common::backend::keystore_lines(&dir, MNEMONIC);
    let config = dir.join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 0.5\njob_lease = 3\nconcurrency = 16\ndatabase_max_connections = 20\n\
             ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\nethereum_confirmations = 2\n\
             ethereum_replace_after = 30\n\
             {keystore}\
             [[assets]]\nchain = \"ethereum\"\nsymbol = \"USDT\"\ndecimals = 6\ncontract = \"{token}\"\n\
             [[workers]]\nkind = \"withdrawal\"\nchain = \"ethereum\"\n",
            devnet.url(),
        ),
    )
    .unwrap();
    let database_url = match &postgres {
        Some(postgres) => postgres.url(),
        None => format!("sqlite://{}", dir.join("coinsensei.db").display()),
    };
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &database_url)],
    )
    .await;
    let backend = common::backend::Backend::new(&database_url, &up).await;
    let http = backend.client.clone();
    let token_secret = backend.token.clone();
    let base = format!("http://{}", up.address);

    // The faults, while the requests go in and the payments go out.
    let stop = tokio_util::sync::CancellationToken::new();
    let kills = tokio::spawn({
        let stop = stop.clone();
        let database_url = database_url.clone();
        async move {
            let mut killed = 0u32;
            let mut seed = u64::from(std::process::id());
            while chaos && !stop.is_cancelled() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let wait = Duration::from_millis(1000 + (seed >> 33) % 4000);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                let output = run(&database_url, &["workers", "list", "--json"]).await;
                let Ok(workers) = serde_json::from_slice::<Vec<Value>>(&output.stdout) else {
                    continue;
                };
                if let Some(pid) = find(&workers, WORKER)
                    .filter(|worker| worker["status"] == "running")
                    .and_then(|worker| worker["pid"].as_i64())
                    && nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        Signal::SIGKILL,
                    )
                    .is_ok()
                {
                    killed += 1;
                }
            }
            killed
        }
    });

    let started = Instant::now();
    let mut expected: HashMap<String, (bool, U256)> = HashMap::new();
    let mut created_ids = Vec::new();
    let mut restarted_postgres = false;
    let mut restarted_anvil = false;
    for n in 0..count {
        let to = recipient(n);
        let usdt = n % 2 == 1;
        let (asset, amount_text, units) = if usdt {
            (
                "USDT",
                format!("1.{:06}", n + 1),
                U256::from(1_000_000 + n + 1),
            )
        } else {
            (
                "ETH",
                format!("0.001{:06}", n + 1),
                U256::from(1_000_000_000_000_000u64 + (n + 1) * 1_000_000_000),
            )
        };
        let body = json!({"chain": "ethereum", "asset": asset, "to": to, "amount": amount_text, "reference": format!("chaos:{n}")});
        // The backend retries until it has an answer: the same key, so never two withdrawals.
        let created = wait_for(
            "the withdrawal accepted",
            Duration::from_secs(120),
            || async {
                let response = http
                    .post(format!("{base}/api/v1/withdrawals"))
                    .bearer_auth(&token_secret)
                    .header("Idempotency-Key", format!("chaos-{n}"))
                    .json(&body)
                    .send()
                    .await
                    .ok()?;
                let status = response.status().as_u16();
                let value: Value = response.json().await.ok()?;
                matches!(status, 200 | 201).then_some(value)
            },
        )
        .await;
        created_ids.push(created["id"].as_i64().unwrap());
        expected.insert(to, (usdt, units));
        if chaos
            && !restarted_postgres
            && n >= count * 2 / 5
            && let Some(postgres) = &postgres
        {
            postgres.restart();
            restarted_postgres = true;
        }
        if chaos && !restarted_anvil && n >= count * 3 / 5 {
            devnet.restart().await;
            restarted_anvil = true;
        }
    }
    let sent = started.elapsed();

    let list = |state: &'static str| {
        let http = http.clone();
        let base = base.clone();
        let token_secret = token_secret.clone();
        async move {
            let mut rows = Vec::new();
            let mut before: Option<i64> = None;
            loop {
                let mut url = format!("{base}/api/v1/withdrawals?limit=1000&state={state}");
                if let Some(before) = before {
                    url.push_str(&format!("&before_id={before}"));
                }
                let response = http.get(url).bearer_auth(&token_secret).send().await.ok()?;
                let page: Value = response.json().await.ok()?;
                rows.extend(page["withdrawals"].as_array()?.iter().cloned());
                match page["next_before_id"].as_i64() {
                    Some(next) => before = Some(next),
                    None => return Some(rows),
                }
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120 + count);
    let (completed, review) = loop {
        let completed = list("completed").await.unwrap_or_default();
        let review = list("manual_review").await.unwrap_or_default();
        if completed.len() + review.len() == count as usize {
            break (completed, review);
        }
        if Instant::now() > deadline {
            // Say where the others are, and why, before failing.
            for state in ["pending", "processing", "broadcast", "confirming", "failed"] {
                let rows = list(state).await.unwrap_or_default();
                println!("  still {state}: {}", rows.len());
                for row in rows.iter().take(5) {
                    println!(
                        "    {} txid {} error {}",
                        row["id"], row["txid"], row["error"]
                    );
                }
            }
            let jobs = run(
                &database_url,
                &["jobs", "list", "--queue", "ethereum.withdrawal", "--json"],
            )
            .await;
            println!(
                "  jobs: {}",
                String::from_utf8_lossy(&jobs.stdout)
                    .chars()
                    .take(4000)
                    .collect::<String>()
            );
            panic!("not every withdrawal settled in time");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settled_after = started.elapsed();
    stop.cancel();
    let killed = kills.await.unwrap();

    // The chain, not the store.
    let client = chain_ethereum::Ethereum::connect(&devnet.url(), Some(31337))
        .await
        .unwrap();
    let token_address = Address::parse(Chain::Ethereum, Network::Mainnet, &token).unwrap();
    let (mut paid_once, mut duplicates, mut lost) = (0, 0, 0);
    let mut wrong = Vec::new();
    for (to, (usdt, units)) in &expected {
        let address = Address::parse(Chain::Ethereum, Network::Mainnet, to).unwrap();
        let held = if *usdt {
            client
                .token_balance(&token_address, &address)
                .await
                .unwrap()
        } else {
            client.balance(&address).await.unwrap()
        }
        .base_units();
        let in_review = review.iter().any(|row| row["to"] == to.as_str());
        if held == *units {
            paid_once += 1;
        } else if held.is_zero() && in_review {
            // Not paid, and a person was told why.
        } else if held.is_zero() {
            lost += 1;
        } else {
            if held > *units {
                duplicates += 1;
            }
            wrong.push(format!("{to}: holds {held}, asked {units}"));
        }
    }
    let reasons: Vec<String> = review
        .iter()
        .map(|row| format!("{}: {}", row["id"], row["error"]))
        .collect();
    // Figures, from the store's times (created, and the moves in each row's history).
    let mut to_completed: Vec<f64> = completed
        .iter()
        .map(|row| {
            seconds_between(
                row["created_at"].as_str().unwrap(),
                row["updated_at"].as_str().unwrap(),
            )
        })
        .collect();
    to_completed.sort_by(f64::total_cmp);
    let mut to_broadcast = Vec::new();
    for id in created_ids.iter().step_by((count as usize / 50).max(1)) {
        let shown = run(
            &database_url,
            &["withdrawals", "show", &id.to_string(), "--json"],
        )
        .await;
        if let Ok(row) = serde_json::from_slice::<Value>(&shown.stdout)
            && let Some(entry) = row["audit"].as_array().and_then(|audit| {
                audit
                    .iter()
                    .find(|entry| entry["action"] == "withdrawal.broadcast")
            })
        {
            to_broadcast.push(seconds_between(
                row["created_at"].as_str().unwrap(),
                entry["at"].as_str().unwrap(),
            ));
        }
    }
    to_broadcast.sort_by(f64::total_cmp);
    let store = if sqlite { "SQLite" } else { "Postgres" };
    println!(
        "chaos withdrawals on anvil (ETH and ERC-20), {store}, {count} withdrawals, faults {chaos}:"
    );
    println!(
        "  faults: {killed} worker SIGKILLs, Postgres restarted: {restarted_postgres}, anvil restarted: {restarted_anvil}"
    );
    println!(
        "  chain: paid exactly once {paid_once}, duplicates {duplicates}, lost {lost}, wrong amounts {}",
        wrong.len()
    );
    println!(
        "  store: completed {}, manual_review {}",
        completed.len(),
        review.len()
    );
    for reason in &reasons {
        println!("    manual_review {reason}");
    }
    println!(
        "  requests sent in {:.1} s; all settled after {:.1} s: {:.0} withdrawals/hour end to end",
        sent.as_secs_f64(),
        settled_after.as_secs_f64(),
        count as f64 / settled_after.as_secs_f64() * 3600.0
    );
    println!(
        "  request -> broadcast: p50 {:.2} s, p99 {:.2} s ({} sampled); request -> completed: p50 {:.2} s, p99 {:.2} s",
        percentile(&to_broadcast, 50.0),
        percentile(&to_broadcast, 99.0),
        to_broadcast.len(),
        percentile(&to_completed, 50.0),
        percentile(&to_completed, 99.0)
    );
    assert!(
        wrong.is_empty() && duplicates == 0 && lost == 0,
        "{wrong:#?}"
    );
    assert!(paid_once as u64 + review.len() as u64 >= count);
    for row in &review {
        assert!(row["error"].is_string(), "a manual review says why: {row}");
    }
    assert!(up.stop().await.success());
}

/// A directory of this run's own, removed at the end unless the run failed.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coinsensei-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
