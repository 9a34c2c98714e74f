//! The health checker's chain checks through the real binary against real nodes: anvil
//! (reachable, the wrong chain id configured, killed, back), a regtest bitcoind (syncing, then
//! on its tip; the wrong network configured) and the TRON simulation (its genesis checked,
//! stopped, back); and the action on a chain's withdrawals through a real `serve` on both
//! stores: the queue paused while the node is down and resumed when it is back (by a control
//! plane restarted meanwhile), audited as `health`, and an operator's pause never undone.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;
use store::AuditList;
use testkit::{Anvil, Backend, Bitcoind, TestDb, wait_for};

const WAIT: Duration = Duration::from_secs(30);
/// A regtest address of nobody's, to mine to.
const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn config(db: &TestDb, text: &str) -> PathBuf {
    let path = db.dir().join("coinsensei.toml");
    std::fs::write(&path, format!("health_node_timeout = 2\n{text}")).unwrap();
    path
}

/// `coinsensei health --json` (judged locally, the nodes probed once): the exit code and
/// the report.
async fn health_json(db: &TestDb, config: &std::path::Path) -> (i32, Value) {
    let output = run(
        &db.url,
        &["--config", config.to_str().unwrap(), "health", "--json"],
    )
    .await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{error}: {text} {}", stderr(&output)));
    (output.status.code().unwrap_or(-1), report)
}

fn chain<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|chain| chain["blockchain"] == name)
        .unwrap_or_else(|| panic!("{name} in {report:#}"))
}

fn check<'a>(report: &'a Value, chain_name: &str, name: &str) -> &'a Value {
    chain(report, chain_name)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("{chain_name} {name} in {report:#}"))
}

fn anvil_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn reason(check: &Value) -> &str {
    check["reason"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_node_reachable_on_its_chain_killed_and_back() {
    let db = TestDb::new(Backend::Sqlite).await;
    db.store().await.close().await;
    let anvil = Anvil::start().await;
    let port = anvil.port();
    let good = format!(
        "ethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\n",
        anvil.url
    );
    let path = config(&db, &good);
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(chain(&report, "ethereum")["node_status"], "healthy");
    let reachable = check(&report, "ethereum", "node_reachable");
    assert_eq!(reachable["status"], "healthy", "{reachable}");
    assert!(reachable["value"].as_i64().unwrap() >= 0);
    let network = check(&report, "ethereum", "network");
    assert_eq!(
        (&network["status"], &network["value"]),
        (&"healthy".into(), &1.into())
    );
    assert_eq!(reason(network), "on chain id 31337");
    let lag = check(&report, "ethereum", "sync_lag");
    assert_eq!(lag["status"], "healthy", "{lag}");
    assert!(reason(lag).starts_with("newest block 0 is"), "{lag}");

    // The node is fine, the configuration names another chain: unhealthy, and it says why.
    let path = config(
        &db,
        &format!(
            "ethereum_rpc_url = \"{}\"\nethereum_chain_id = 1\n",
            anvil.url
        ),
    );
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 2, "{report:#}");
    let network = check(&report, "ethereum", "network");
    assert_eq!(
        (&network["status"], &network["value"]),
        (&"unhealthy".into(), &0.into())
    );
    assert_eq!(
        reason(network),
        "on chain id 31337, but ethereum_chain_id says chain id 1"
    );
    assert_eq!(chain(&report, "ethereum")["node_status"], "unhealthy");

    // Killed: unreachable, and nothing else is claimed of it.
    anvil.kill().await;
    let path = config(&db, &good);
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 2, "{report:#}");
    let reachable = check(&report, "ethereum", "node_reachable");
    assert_eq!(
        (&reachable["status"], &reachable["value"]),
        (&"unhealthy".into(), &(-1).into())
    );
    assert!(reason(reachable).starts_with("no answer: "), "{reachable}");
    assert!(
        reason(reachable).contains(&format!("127.0.0.1:{port}")),
        "the endpoint is named: {reachable}"
    );
    // A provider's key in the URL's path never shows in a reason.
    let keyed = config(
        &db,
        &format!("ethereum_rpc_url = \"{}/v2/sekrit-key\"\n", anvil_url(port)),
    );
    let (_, keyed) = health_json(&db, &keyed).await;
    let reachable_keyed = check(&keyed, "ethereum", "node_reachable");
    assert!(
        reason(reachable_keyed).starts_with("no answer: "),
        "{reachable_keyed}"
    );
    assert!(!keyed.to_string().contains("sekrit"), "{keyed:#}");
    for name in ["network", "sync_lag"] {
        let check = check(&report, "ethereum", name);
        assert_eq!(check["status"], "unhealthy", "{check}");
        assert!(reason(check).starts_with("not measured"), "{check}");
    }

    // Back on the same address: healthy again.
    let _anvil = Anvil::start_on(port, &[]).await;
    let path = config(&db, &good);
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        check(&report, "ethereum", "node_reachable")["status"],
        "healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoin_node_network_and_sync() {
    let db = TestDb::new(Backend::Sqlite).await;
    db.store().await.close().await;
    let node = Bitcoind::start().await;
    let cookie = node.datadir.join("regtest").join(".cookie");
    let text = |network: &str| {
        format!(
            "bitcoin_rpc_url = \"{}\"\nbitcoin_rpc_cookie_file = \"{}\"\nbitcoin_network = \"{network}\"\n",
            node.url,
            cookie.display()
        )
    };
    let path = config(&db, &text("regtest"));
    // A fresh regtest node has only the 2011 genesis block: in initial block download.
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(
        check(&report, "bitcoin", "node_reachable")["status"],
        "healthy"
    );
    assert_eq!(reason(check(&report, "bitcoin", "network")), "on regtest");
    let lag = check(&report, "bitcoin", "sync_lag");
    assert_eq!(lag["status"], "unhealthy", "{lag}");
    assert!(reason(lag).contains("initial block download"), "{lag}");

    // A block now: on its tip.
    node.cli(&["generatetoaddress", "1", ELSEWHERE]).await;
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 0, "{report:#}");
    let lag = check(&report, "bitcoin", "sync_lag");
    assert_eq!(lag["status"], "healthy", "{lag}");
    assert!(reason(lag).starts_with("newest block 1 is"), "{lag}");

    // Configured for another network.
    let path = config(&db, &text("testnet"));
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 2, "{report:#}");
    let network = check(&report, "bitcoin", "network");
    assert_eq!(network["value"], 0);
    assert_eq!(reason(network), "on regtest, but bitcoin_network says test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tron_node_by_its_genesis_stopped_and_back() {
    let db = TestDb::new(Backend::Sqlite).await;
    db.store().await.close().await;
    let mut sim = tron_sim::Sim::start(
        tron_sim::Ledger {
            head: 100,
            ..tron_sim::Ledger::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let _miner = sim.spawn_miner();
    let url = sim.url.clone();
    let text = |genesis: &str| {
        format!("tron_rpc_url = \"{url}\"\ntron_genesis_block_id = \"{genesis}\"\n")
    };
    let genesis = tron_sim::block_id(0);
    let path = config(&db, &text(&genesis));
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 0, "{report:#}");
    let network = check(&report, "tron", "network");
    assert_eq!(network["value"], 1, "{network}");
    assert_eq!(reason(network), format!("on genesis {genesis}"));
    assert_eq!(check(&report, "tron", "sync_lag")["status"], "healthy");

    // Mainnet's genesis expected: the simulation is not mainnet.
    let mainnet = "00000000000000001ebf88508a03865c71d452e25f4d51194196a1d22b6653dc";
    let (code, report) = health_json(&db, &config(&db, &text(mainnet))).await;
    assert_eq!(code, 2, "{report:#}");
    let network = check(&report, "tron", "network");
    assert_eq!(network["status"], "unhealthy");
    assert!(
        reason(network).ends_with(&format!("tron_genesis_block_id says genesis {mainnet}")),
        "{network}"
    );

    sim.stop().await;
    let path = config(&db, &text(&genesis));
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(
        check(&report, "tron", "node_reachable")["status"],
        "unhealthy"
    );

    sim.restart().await.unwrap();
    let (code, report) = health_json(&db, &path).await;
    assert_eq!(code, 0, "{report:#}");
}

/// The newest audit entries of the actor `health` on the Ethereum withdrawal queue.
async fn health_actions(store: &store::Store) -> Vec<String> {
    store
        .audit_list(&AuditList {
            actor: Some("health".into()),
            target: Some("queue:ethereum.withdrawal".into()),
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect()
}

async fn paused(store: &store::Store) -> bool {
    store
        .queue_stats(chrono::Utc::now())
        .await
        .unwrap()
        .iter()
        .find(|queue| queue.name.as_str() == "ethereum.withdrawal")
        .expect("the queue exists")
        .paused
}

async fn ethereum_health(up: &Up, token: &str) -> Value {
    let report: Value = reqwest::Client::new()
        .get(format!("http://{}/api/admin/health", up.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    chain(&report, "ethereum").clone()
}

async fn node_status(up: &Up, token: &str) -> Value {
    ethereum_health(up, token).await["node_status"].clone()
}

async fn withdrawals_paused_while_the_node_is_down(backend: Backend) {
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let anvil = Anvil::start().await;
    let port = anvil.port();
    let path = config(
        &db,
        &format!(
            "heartbeat_interval = 0.2\nhealth_pause_after = 0.5\nethereum_rpc_url = \"{}\"\nethereum_chain_id = 31337\n",
            anvil.url
        ),
    );
    // A withdrawal queue with a job in it (no worker runs here: `serve` runs none).
    let now = chrono::Utc::now();
    store
        .job_insert(&store::JobInsert {
            queue: domain::Name::new("ethereum.withdrawal").unwrap(),
            kind: domain::Name::new("withdrawal.reconcile").unwrap(),
            args: serde_json::json!({}),
            priority: 0,
            run_at: now,
            retry: None,
            unique_key: None,
            now,
        })
        .await
        .unwrap();
    let up = Up::serve(
        &["--config", path.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let (_, token) = web::auth::issue(&store, "ops", domain::Role::Operator, now)
        .await
        .unwrap();
    wait_for("the node judged healthy", WAIT, || async {
        (node_status(&up, &token).await == "healthy").then_some(())
    })
    .await;
    assert!(!paused(&store).await);

    // The node dies: after the grace period the queue is paused, by `health`, once.
    anvil.kill().await;
    let killed = std::time::Instant::now();
    wait_for("the queue paused by health", WAIT, || async {
        (health_actions(&store).await == ["queue.pause"]).then_some(())
    })
    .await;
    // A figure, not a limit: the grace period is 0.5 s, the probes and judgements every 0.2 s.
    eprintln!(
        "{backend:?}: paused {} ms after the node was killed",
        killed.elapsed().as_millis()
    );
    assert!(paused(&store).await);
    let entry = store
        .audit_list(&AuditList {
            actor: Some("health".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(entry.details["chain"], "ethereum");
    assert!(
        entry.details["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("node_reachable: no answer"),
        "{}",
        entry.details
    );

    // The control plane restarts meanwhile: the new one learns from the audit log that the
    // pause is the health checker's. Back: resumed, by `health`.
    assert!(up.stop().await.success());
    let up = Up::serve(
        &["--config", path.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let anvil = Anvil::start_on(port, &[]).await;
    let back = std::time::Instant::now();
    wait_for("the queue resumed by health", WAIT, || async {
        (health_actions(&store).await == ["queue.resume", "queue.pause"]).then_some(())
    })
    .await;
    eprintln!(
        "{backend:?}: resumed {} ms after the node was back",
        back.elapsed().as_millis()
    );
    assert!(!paused(&store).await);

    // An operator pauses it; the node dies and comes back: their pause stays.
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/admin/queues/ethereum.withdrawal/pause",
            up.address
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    anvil.kill().await;
    // Unhealthy for three times the grace period: the loop has had its chance to act.
    wait_for("the node unhealthy past the grace period", WAIT, || async {
        let since = ethereum_health(&up, &token).await["node_unhealthy_since"]
            .as_str()
            .map(|since| chrono::DateTime::parse_from_rfc3339(since).unwrap());
        since
            .filter(|since| {
                chrono::Utc::now() - since.to_utc() > chrono::TimeDelta::milliseconds(1_500)
            })
            .map(|_| ())
    })
    .await;
    let _anvil = Anvil::start_on(port, &[]).await;
    wait_for("the node judged healthy again", WAIT, || async {
        (node_status(&up, &token).await == "healthy").then_some(())
    })
    .await;
    // What did not happen has no signal to wait for: give the loop (every 0.2 s) ten rounds
    // after the recovery it just judged.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(paused(&store).await, "the operator's pause was undone");
    assert_eq!(
        health_actions(&store).await,
        ["queue.resume", "queue.pause"],
        "the health checker acted on an operator's pause"
    );
    assert!(up.stop().await.success());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_paused_on_sqlite() {
    withdrawals_paused_while_the_node_is_down(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_paused_on_postgres() {
    withdrawals_paused_while_the_node_is_down(Backend::Postgres).await;
}
