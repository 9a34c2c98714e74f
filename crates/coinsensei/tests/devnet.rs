//! `coinsensei up --devnet` as a new user runs it: anvil, a regtest bitcoind and the TRON
//! simulation started and funded, a withdrawal worker per chain, and a withdrawal of every
//! asset (ETH, the ERC-20 USDT, TRX, TRC-20 USDT, BTC) sent through `/api/v1/withdrawals`
//! with a service token, each `completed`, and each recipient paid exactly once on its chain
//! (read from the chain, not the store). TRON is paid through `up` end to end here. And the
//! devnet refuses what could point it at something real: `--config`, a chain's environment
//! variable, a directory it did not make.

mod common;

use std::time::{Duration, Instant};

use chain::address::{Address, Network};
use chain::provider::{Asset, ChainRead, WatchSet};
use common::*;
use domain::Chain;
use serde_json::{Value, json};
use testkit::wait_for;

const ETH_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const TRON_TO: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";

/// A regtest address of a key nobody here holds (the devnet mines its blocks elsewhere).
fn btc_to() -> Address {
    use signer::Signer;
    let mnemonic = signer::Mnemonic::parse(
        "legal winner thank year wave sausage worth useful legal winner thank yellow",
    )
    .unwrap();
    signer::InProcessSigner::new(&mnemonic, Network::Regtest)
        .address(Chain::Bitcoin, 0)
        .unwrap()
}

fn tools() -> Vec<(&'static str, String)> {
    ["COINSENSEI_ANVIL", "COINSENSEI_BITCOIND"]
        .into_iter()
        .map(|name| {
            (
                name,
                std::env::var(name).unwrap_or_else(|_| {
                    panic!("{name} is not set: run the tests with `cargo xtask test`")
                }),
            )
        })
        .collect()
}

/// A value of the devnet's configuration file.
fn configured(dir: &std::path::Path, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join("devnet/coinsensei.toml")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{key} in the devnet's configuration:\n{text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_of_every_asset_is_paid_on_the_devnet() {
    let dir = std::env::temp_dir().join(format!("coinsensei-devnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.to_str().unwrap();
    let tools = tools();
    let env: Vec<(&str, &str)> = tools.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let started = Instant::now();
    let up = Up::start(&["--devnet", "--data-dir", data_dir], &env).await;
    let ready = started.elapsed();
    let banner = wait_for("the devnet's banner", Duration::from_secs(10), || async {
        let printed = up.printed.lock().unwrap().join("\n");
        printed.contains("Press Ctrl-C").then_some(printed)
    })
    .await;
    for expected in [
        "DEVNET",
        "PUBLIC test mnemonic",
        "TRON SIMULATION",
        "NOT a TRON node",
        "anvil at http://",
        "bitcoind -regtest at http://",
        "service token  cst_",
        "/api/v1/withdrawals",
    ] {
        assert!(banner.contains(expected), "{expected:?} in:\n{banner}");
    }
    assert!(!banner.contains("left out"), "{banner}");
    let database_url = format!("sqlite://{data_dir}/devnet/coinsensei.db");
    let api = common::backend::Backend::new(&database_url, &up).await;

    let btc_to = btc_to().to_string();
    let requests = [
        ("ethereum", "ETH", ETH_TO, "0.5"),
        ("ethereum", "USDT", ETH_TO, "12.5"),
        ("tron", "TRX", TRON_TO, "3.25"),
        ("tron", "USDT", TRON_TO, "12.5"),
        ("bitcoin", "BTC", btc_to.as_str(), "0.1"),
    ];
    let sent = Instant::now();
    for (n, (chain, asset, to, amount)) in requests.iter().enumerate() {
        let body = json!({"chain": chain, "asset": asset, "to": to, "amount": amount, "reference": format!("user:{n}")});
        let (status, created) = api.create(&format!("first-{n}"), &body).await;
        assert_eq!(status, 201, "{created}");
    }
    let done = wait_for(
        "every devnet withdrawal completed",
        Duration::from_secs(180),
        || async {
            let rows = api.list("").await;
            for row in &rows {
                assert!(
                    !matches!(row["state"].as_str(), Some("failed" | "manual_review")),
                    "{row}"
                );
            }
            rows.iter()
                .all(|row| row["state"] == "completed")
                .then_some(rows)
                .filter(|rows| rows.len() == requests.len())
        },
    )
    .await;
    let settled = sent.elapsed();
    let by = |chain: &str, asset: &str| -> Value {
        done.iter()
            .find(|row| row["chain"] == chain && row["asset"] == asset)
            .cloned()
            .unwrap()
    };
    println!(
        "devnet ready in {:.1} s; all five withdrawals completed {:.1} s after they were sent",
        ready.as_secs_f64(),
        settled.as_secs_f64()
    );

    // Ethereum, from anvil.
    let ethereum =
        chain_ethereum::Ethereum::connect(&configured(&dir, "ethereum_rpc_url"), Some(31337))
            .await
            .unwrap();
    let eth_to = Address::parse(Chain::Ethereum, Network::Mainnet, ETH_TO).unwrap();
    let token_text = std::fs::read_to_string(dir.join("devnet/coinsensei.toml"))
        .unwrap()
        .lines()
        .find_map(|line| {
            line.strip_prefix("contract = \"")
                .map(|rest| rest.trim_end_matches('"').to_string())
        })
        .unwrap();
    let token = Address::parse(Chain::Ethereum, Network::Mainnet, &token_text).unwrap();
    // anvil funds this account with 10,000 ETH; it received 0.5 more, once.
    assert_eq!(
        ethereum.balance(&eth_to).await.unwrap().base_units(),
        alloy_primitives::U256::from(10_000_500_000_000_000_000_000u128)
    );
    assert_eq!(
        ethereum
            .token_balance(&token, &eth_to)
            .await
            .unwrap()
            .base_units(),
        alloy_primitives::U256::from(12_500_000u64)
    );

    // TRON, from the simulation's API through the client.
    let tron = chain_tron::Tron::new(chain_tron::Config::new(
        configured(&dir, "tron_rpc_url").parse().unwrap(),
    ))
    .unwrap();
    let tron_to = Address::parse(Chain::Tron, Network::Mainnet, TRON_TO).unwrap();
    let usdt = Address::parse(Chain::Tron, Network::Mainnet, tron_sim::USDT).unwrap();
    assert_eq!(
        tron.balance(&tron_to, &Asset::Native).await.unwrap(),
        domain::Amount::from_u128(3_250_000)
    );
    assert_eq!(
        tron.balance(&tron_to, &Asset::Token(usdt)).await.unwrap(),
        domain::Amount::from_u128(12_500_000)
    );
    assert!(by("tron", "USDT")["txid"].is_string());

    // Bitcoin, from the regtest node's blocks.
    let url = configured(&dir, "bitcoin_rpc_url");
    let cookie = std::fs::read_to_string(configured(&dir, "bitcoin_rpc_cookie_file")).unwrap();
    let rpc = chain_bitcoin::Rpc::with_cookie(&url, &cookie, Duration::from_secs(30)).unwrap();
    let tip = rpc
        .call("getblockcount", json!([]))
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    let watch = WatchSet {
        addresses: vec![self::btc_to()],
        tokens: vec![],
    };
    let paid = chain_bitcoin::scan_deposits(&rpc, Network::Regtest, 1, tip, &watch)
        .await
        .unwrap();
    let amounts: Vec<u128> = paid
        .deposits
        .iter()
        .map(|deposit| deposit.amount.base_units().to::<u128>())
        .collect();
    assert_eq!(amounts, vec![10_000_000], "paid once, 0.1 BTC");
    assert_eq!(
        paid.deposits[0].txid,
        by("bitcoin", "BTC")["txid"].as_str().unwrap()
    );

    // The health checker reaches the three nodes, each on the network the devnet configures.
    let config = dir.join("devnet/coinsensei.toml");
    let output = common::coinsensei(["--config", config.to_str().unwrap(), "health", "--json"])
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", common::stderr(&output)));
    for chain in ["ethereum", "tron", "bitcoin"] {
        let judged = report["chains"]
            .as_array()
            .unwrap()
            .iter()
            .find(|each| each["blockchain"] == chain)
            .unwrap_or_else(|| panic!("{chain} in {report:#}"));
        assert_eq!(judged["node_status"], "healthy", "{judged:#}");
        let network = judged["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|check| check["name"] == "network")
            .unwrap();
        assert_eq!(
            network["value"], 1,
            "{chain} checked against its configuration: {network}"
        );
    }

    // The processes the devnet started go with it. (Checked by process, not by port: another
    // test's node may be given the same ephemeral port a moment after anvil lets it go.)
    let children = children_of(up.pid().as_raw());
    assert!(
        children
            .iter()
            .any(|(_, command)| command.contains("anvil")),
        "anvil runs under the devnet: {children:?}"
    );
    assert!(up.stop().await.success());
    for (pid, command) in &children {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|stat| stat.contains(") Z ")),
            "{command} ({pid}) stopped with the devnet"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What could point the devnet at something real is refused before anything starts.
#[tokio::test]
async fn the_devnet_refuses_what_could_reach_a_real_chain() {
    let dir = std::env::temp_dir().join(format!("coinsensei-devnet-no-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("devnet")).unwrap();
    std::fs::write(dir.join("devnet/precious"), "not the devnet's").unwrap();
    let data_dir = dir.to_str().unwrap();
    /// Arguments, an environment variable, what the error says.
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 3] = [
        (
            &["up", "--devnet", "--data-dir", data_dir],
            Some(("COINSENSEI_ETHEREUM_RPC_URL", "https://mainnet.example")),
            "COINSENSEI_ETHEREUM_RPC_URL is set",
        ),
        (
            &[
                "--config",
                "/dev/null",
                "up",
                "--devnet",
                "--data-dir",
                data_dir,
            ],
            None,
            "leave out --config",
        ),
        (
            &["up", "--devnet", "--data-dir", data_dir],
            None,
            "was not made by --devnet",
        ),
    ];
    for (args, env, expected) in cases {
        let mut command = coinsensei(args);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        let output = command
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // Nothing of the user's was touched.
    assert!(dir.join("devnet/precious").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The processes whose parent is `parent`: pid and command line.
fn children_of(parent: i32) -> Vec<(i32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": the command may hold spaces and parentheses.
        let Some(after) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
            continue;
        };
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|ppid| ppid.parse::<i32>().ok());
        if ppid == Some(parent) {
            let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                .unwrap_or_default();
            children.push((pid, command));
        }
    }
    children
}
