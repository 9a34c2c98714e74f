//! `coinsensei chain status|balance --chain bitcoin` with the real binary against a private
//! regtest node (`testkit::Bitcoind`): the node's state, a balance after mining, another
//! network's address refused before any connection, a node on another network refused, and
//! the RPC password never shown.

mod common;

use std::process::{Output, Stdio};

use common::*;
use testkit::Bitcoind;

/// An address of no wallet here (BIP173's regtest example).
const MINED_TO: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

async fn chain(envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = coinsensei(["chain"].iter().chain(args));
    command
        .env("COINSENSEI_LOG", "trace")
        .envs(envs.iter().copied())
        .stdin(Stdio::null());
    command.output().await.expect("run coinsensei chain")
}

fn out(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn cookie_file(node: &Bitcoind) -> String {
    node.datadir.join("regtest/.cookie").display().to_string()
}

#[tokio::test]
async fn status_and_balance_from_a_regtest_node() {
    let node = Bitcoind::start().await;
    let cookie = cookie_file(&node);
    let env = [
        ("COINSENSEI_BITCOIN_RPC_URL", node.url.as_str()),
        ("COINSENSEI_BITCOIN_RPC_COOKIE_FILE", cookie.as_str()),
        ("COINSENSEI_BITCOIN_NETWORK", "regtest"),
    ];
    let status = chain(&env, &["status", "--chain", "bitcoin"]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    let genesis = node.cli(&["getblockhash", "0"]).await;
    assert_eq!(
        out(&status),
        format!(
            "bitcoin node {}: reachable, network regtest, tip 0 {genesis}, headers 0 (0 blocks \
             ahead), verification progress 1, in initial block download",
            node.url
        )
    );

    let balance = |address: &'static str| async move {
        chain(
            &env,
            &["balance", "--chain", "bitcoin", "--address", address],
        )
        .await
    };
    let empty = balance(MINED_TO).await;
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert_eq!(out(&empty), "0 BTC (0 satoshi)");

    // 101 blocks of 50 BTC each to the address (immature coinbase outputs count: they are
    // in the UTXO set).
    node.cli(&["generatetoaddress", "101", MINED_TO]).await;
    let mined = balance(MINED_TO).await;
    assert!(mined.status.success(), "{}", stderr(&mined));
    assert_eq!(out(&mined), "5050 BTC (505000000000 satoshi)");

    let status = chain(&env, &["status", "--chain", "bitcoin"]).await;
    let tip = node.cli(&["getbestblockhash"]).await;
    assert!(
        out(&status).ends_with(&format!(
            "tip 101 {tip}, headers 101 (0 blocks ahead), verification progress 1"
        )),
        "{}",
        out(&status)
    );

    // The same node with the user and password of its cookie, given apart: the password
    // shows nowhere, not even in trace logs.
    let (user, password) = node
        .cookie()
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .unwrap();
    let by_password = chain(
        &[
            ("COINSENSEI_BITCOIN_RPC_URL", node.url.as_str()),
            ("COINSENSEI_BITCOIN_RPC_USER", user.as_str()),
            ("COINSENSEI_BITCOIN_RPC_PASSWORD", password.as_str()),
        ],
        &[
            "--network",
            "regtest",
            "balance",
            "--chain",
            "bitcoin",
            "--address",
            MINED_TO,
        ],
    )
    .await;
    assert!(by_password.status.success(), "{}", stderr(&by_password));
    assert_eq!(out(&by_password), "5050 BTC (505000000000 satoshi)");
    assert!(!stderr(&by_password).contains(&password));
    assert!(!out(&by_password).contains(&password));

    // A wrong password: refused by the node, said, and still not shown.
    let wrong = chain(
        &[
            ("COINSENSEI_BITCOIN_RPC_URL", node.url.as_str()),
            ("COINSENSEI_BITCOIN_RPC_USER", user.as_str()),
            ("COINSENSEI_BITCOIN_RPC_PASSWORD", "not-the-password-42"),
            ("COINSENSEI_BITCOIN_NETWORK", "regtest"),
        ],
        &["status", "--chain", "bitcoin"],
    )
    .await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("refused the RPC credentials"),
        "{}",
        stderr(&wrong)
    );
    assert!(
        !stderr(&wrong).contains("not-the-password-42"),
        "{}",
        stderr(&wrong)
    );

    // The node is on regtest; a configuration saying testnet is refused at connection.
    let testnet = chain(
        &[
            ("COINSENSEI_BITCOIN_RPC_URL", node.url.as_str()),
            ("COINSENSEI_BITCOIN_RPC_COOKIE_FILE", cookie.as_str()),
        ],
        &["--network", "testnet", "status", "--chain", "bitcoin"],
    )
    .await;
    assert_eq!(testnet.status.code(), Some(1));
    assert!(
        stderr(&testnet)
            .contains("the bitcoin node is on \"regtest\", the configuration says testnet"),
        "{}",
        stderr(&testnet)
    );
}

#[tokio::test]
async fn bad_addresses_and_settings_are_refused_before_any_connection() {
    // Nothing listens on port 9: a connection would fail differently.
    let env = [
        ("COINSENSEI_BITCOIN_RPC_URL", "http://127.0.0.1:9"),
        ("COINSENSEI_BITCOIN_RPC_COOKIE_FILE", "/nonexistent/.cookie"),
        ("COINSENSEI_BITCOIN_NETWORK", "regtest"),
    ];
    for (address, why) in [
        // Mainnet and testnet addresses on a regtest configuration.
        (
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "an address for mainnet",
        ),
        (
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
            "this system runs on regtest",
        ),
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt081", ""),
        ("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", ""),
    ] {
        let output = chain(
            &env,
            &["balance", "--chain", "bitcoin", "--address", address],
        )
        .await;
        assert_eq!(output.status.code(), Some(1), "{address}");
        assert!(out(&output).is_empty(), "{address}: {}", out(&output));
        assert!(
            stderr(&output).contains(why),
            "{address}: {}",
            stderr(&output)
        );
        assert!(
            !stderr(&output).contains("cookie"),
            "{address}: {}",
            stderr(&output)
        );
    }
    // Credentials in the URL: refused by the configuration, not shown back.
    let output = chain(
        &[
            (
                "COINSENSEI_BITCOIN_RPC_URL",
                "http://ops:s3cret-in-url@127.0.0.1:9",
            ),
            ("COINSENSEI_BITCOIN_RPC_COOKIE_FILE", "/nonexistent/.cookie"),
        ],
        &["status", "--chain", "bitcoin"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("carries credentials"),
        "{}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains("s3cret-in-url"));
    // No node configured: said, with the key to set.
    let output = chain(&[], &["status", "--chain", "bitcoin"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("bitcoin_rpc_url"),
        "{}",
        stderr(&output)
    );
}

/// `chain deposits --chain bitcoin`: the outputs paying an address in a range of blocks
/// (here the coinbase outputs of blocks mined to it), keyed txid:vout, with confirmations
/// tip − height + 1, as lines and as JSON; bad ranges and addresses refused.
#[tokio::test]
async fn deposits_by_block_range_from_a_regtest_node() {
    let node = Bitcoind::start().await;
    let cookie = cookie_file(&node);
    let env = [
        ("COINSENSEI_BITCOIN_RPC_URL", node.url.as_str()),
        ("COINSENSEI_BITCOIN_RPC_COOKIE_FILE", cookie.as_str()),
        ("COINSENSEI_BITCOIN_NETWORK", "regtest"),
    ];
    use signer::Signer;
    // An address of this test: BIP84 receive key 0 of the all-abandon mnemonic on regtest.
    let watched = signer::InProcessSigner::new(
        &signer::Mnemonic::parse(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
             abandon about",
        )
        .unwrap(),
        chain::address::Network::Regtest,
    )
    .address(domain::Chain::Bitcoin, 0)
    .unwrap()
    .to_string();
    let watched = watched.as_str();
    node.cli(&["generatetoaddress", "2", MINED_TO]).await;
    node.cli(&["generatetoaddress", "3", watched]).await;
    node.cli(&["generatetoaddress", "1", MINED_TO]).await;
    let deposits = |args: &'static [&'static str]| async move {
        let mut all = vec!["deposits", "--chain", "bitcoin", "--address", watched];
        all.extend_from_slice(args);
        chain(&env, &all).await
    };
    let lines = deposits(&["--from", "1"]).await;
    assert!(lines.status.success(), "{}", stderr(&lines));
    let text = out(&lines);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    for (row, height) in rows.iter().zip(3u64..=5) {
        let hash = node.cli(&["getblockhash", &height.to_string()]).await;
        let block = node.cli(&["getblock", &hash]).await;
        let block: serde_json::Value = serde_json::from_str(&block).unwrap();
        let coinbase = block["tx"][0].as_str().unwrap();
        assert_eq!(
            *row,
            format!(
                "block {height} ({} confirmations) 50 BTC (5000000000 satoshi) to {watched} in \
                 {coinbase}:0",
                6 - height + 1
            )
        );
    }
    // A range without them, and JSON.
    let none = deposits(&["--from", "1", "--to", "2"]).await;
    assert!(none.status.success(), "{}", stderr(&none));
    assert_eq!(out(&none), "no deposits in blocks 1..=2");
    let json = deposits(&["--from", "4", "--to", "4", "--json"]).await;
    assert!(json.status.success(), "{}", stderr(&json));
    let rows: serde_json::Value = serde_json::from_str(&out(&json)).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["block"], 4);
    assert_eq!(rows[0]["confirmations"], 3);
    assert_eq!(rows[0]["position"], 0);
    assert_eq!(rows[0]["amount"], "5000000000");
    assert_eq!(rows[0]["asset"], "BTC");
    assert_eq!(rows[0]["to"], watched);
    // Past the head, backwards, another network's address, a token: refused, saying why.
    let past = deposits(&["--from", "1", "--to", "7"]).await;
    assert_eq!(past.status.code(), Some(1));
    assert!(
        stderr(&past).contains("past the node's head (6)"),
        "{}",
        stderr(&past)
    );
    let backwards = deposits(&["--from", "3", "--to", "2"]).await;
    assert_eq!(backwards.status.code(), Some(1));
    assert!(
        stderr(&backwards).contains("before --from"),
        "{}",
        stderr(&backwards)
    );
    let mainnet = chain(
        &env,
        &[
            "deposits",
            "--chain",
            "bitcoin",
            "--address",
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "--from",
            "1",
        ],
    )
    .await;
    assert_eq!(mainnet.status.code(), Some(1));
    assert!(out(&mainnet).is_empty());
    assert!(
        stderr(&mainnet).contains("an address for mainnet"),
        "{}",
        stderr(&mainnet)
    );
}
