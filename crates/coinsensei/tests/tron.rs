//! `coinsensei chain status|balance --chain tron` against a small node serving the recorded
//! TRON API answers (`crates/chain-tron/fixtures/recorded`, copied from the shared fixtures with their sources; no TRON node can run here), and the offline
//! `tx build` byte for byte against tronpy's committed vectors (`crates/chain-tron/xcheck/
//! golden.json`, the ones made from the test mnemonic's keys), with no connection opened and
//! no key material in anything it prints or logs.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use common::*;
use serde_json::{Value, json};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../chain-tron/fixtures/recorded"
);
const GOLDEN: &str = include_str!("../../chain-tron/xcheck/golden.json");
const API_KEY: &str = "tron-key-5d1c9e";
const HOLDER: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";

fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap()
}

fn out(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// What the node saw: the paths asked and the API keys sent.
#[derive(Default)]
struct Seen {
    paths: Vec<String>,
    keys: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

fn block_id(number: u64) -> String {
    let mut id = [0x5au8; 32];
    id[..8].copy_from_slice(&number.to_be_bytes());
    hex::encode(id)
}

/// The block holding the recorded mainnet block's two transactions (a TRX transfer of 1 sun
/// to `THj9L6EiYceGY2Pwo8dJ4UowhfK1JQi9aK` and a USDT call), whose TransactionInfo carries
/// the recorded USDT Transfer log (3.5 USDT to `TUikLT3nTTjTkXPAuC4xUGj84vfSERCWRn`).
const DEPOSIT_BLOCK: u64 = 70_000_005;

fn block(number: u64) -> Value {
    let mut block = fixture("wallet_getnowblock.nile_header_transactions_elided.json");
    block["blockID"] = json!(block_id(number));
    let raw = &mut block["block_header"]["raw_data"];
    raw["number"] = json!(number);
    raw["parentHash"] = json!(block_id(number - 1));
    if number == DEPOSIT_BLOCK {
        block["transactions"] =
            fixture("wallet_getblockbynum.mainnet_transfer_and_usdt_abridged.json")["transactions"]
                .clone();
    }
    block
}

async fn handle(
    State(seen): State<Shared>,
    headers: HeaderMap,
    path: axum::http::Uri,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut seen = seen.lock().unwrap();
    seen.paths.push(path.path().to_string());
    if let Some(key) = headers.get("TRON-PRO-API-KEY") {
        seen.keys.push(key.to_str().unwrap().to_string());
    }
    let answer = match path.path() {
        "/wallet/getnowblock" => block(70_000_019),
        "/walletsolidity/getnowblock" => block(70_000_000),
        "/wallet/getaccount" if body["address"] == HOLDER => {
            let mut account = fixture("wallet_getaccount.local_node_visible_true.json");
            account["address"] = body["address"].clone();
            account["balance"] = json!(12_345_678_901u64);
            account
        }
        "/wallet/getaccount" => fixture("wallet_getaccount.unactivated_empty.json"),
        "/wallet/triggerconstantcontract" => {
            let mut answer = fixture("wallet_triggerconstantcontract.nile_usdt_balanceOf.json");
            let word = match body["function_selector"].as_str().unwrap() {
                "decimals()" => 18u128,
                "balanceOf(address)" => 2_500_001,
                other => panic!("no {other}"),
            };
            answer["constant_result"][0] = json!(format!("{word:064x}"));
            answer
        }
        "/wallet/getblockbylimitnext" => {
            let (start, end) = (
                body["startNum"].as_u64().unwrap(),
                body["endNum"].as_u64().unwrap(),
            );
            assert!(end > start && end - start <= 100);
            let mut answer =
                fixture("wallet_getblockbylimitnext.nile_first_block_transactions_elided.json");
            answer["block"] = json!((start..end).map(block).collect::<Vec<_>>());
            answer
        }
        "/wallet/gettransactioninfobyblocknum" => {
            assert_eq!(
                body["num"], DEPOSIT_BLOCK,
                "infos only for blocks with contract calls"
            );
            json!([fixture(
                "wallet_gettransactioninfobyid.mainnet_usdt_transfer_success.json"
            )])
        }
        other => panic!("the node has no {other}"),
    };
    Json(answer)
}

async fn node() -> (String, Shared) {
    let seen = Shared::default();
    let app = axum::Router::new()
        .fallback(post(handle))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

async fn chain(url: &str, args: &[&str]) -> Output {
    coinsensei(["chain"].iter().chain(args))
        .env("COINSENSEI_TRON_RPC_URL", url)
        .env("COINSENSEI_TRON_API_KEY", API_KEY)
        .env("COINSENSEI_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run coinsensei chain")
}

#[tokio::test]
async fn status_and_balances_from_the_node() {
    let (url, seen) = node().await;
    let status = chain(&url, &["status", "--chain", "tron"]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        out(&status)
            .ends_with("reachable, head 70000019, solidified 70000000 (19 blocks behind the head)"),
        "{}",
        out(&status)
    );

    let balance = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut all = vec!["balance", "--chain", "tron"];
            all.extend_from_slice(args);
            chain(&url, &all).await
        }
    };
    let trx = balance(&["--address", HOLDER]).await;
    assert_eq!(
        out(&trx),
        "12345.678901 TRX (12345678901 sun)",
        "{}",
        stderr(&trx)
    );
    let empty = balance(&["--address", "TUoHaVjx7n5xz8LwPRDckgFrDWhMhuSuJM"]).await;
    assert_eq!(
        out(&empty),
        "0 TRX (0 sun) (not activated: it never received TRX)"
    );
    // USDT by symbol: the catalogue's 6 decimals, no decimals() call.
    let usdt = balance(&["--address", HOLDER, "--asset", "usdt"]).await;
    assert_eq!(
        out(&usdt),
        format!("2.500001 (token {USDT}, 6 decimals; 2500001 base units)"),
        "{}",
        stderr(&usdt)
    );
    // Any contract: its decimals are asked (18 here).
    let token = balance(&["--address", HOLDER, "--token", USDT]).await;
    assert_eq!(
        out(&token),
        format!("0.000000000002500001 (token {USDT}, 18 decimals; 2500001 base units)")
    );

    let seen_before = seen.lock().unwrap().paths.len();
    // Bad addresses are refused before any connection: exit 1, a clear message.
    for (address, expected) in [
        ("TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU8", "checksum"),
        ("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "TRON"),
    ] {
        let refused = chain(&url, &["balance", "--chain", "tron", "--address", address]).await;
        assert_eq!(refused.status.code(), Some(1), "{address}");
        assert!(
            stderr(&refused)
                .to_lowercase()
                .contains(&expected.to_lowercase()),
            "{address}: {}",
            stderr(&refused)
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.paths.len(),
        seen_before,
        "a refused address reached the node"
    );
    assert!(
        seen.paths
            .contains(&"/walletsolidity/getnowblock".to_string())
    );
    // The key went to the node as its header, and nowhere else.
    assert!(!seen.keys.is_empty() && seen.keys.iter().all(|key| key == API_KEY));
    for output in [&status, &trx, &usdt, &token] {
        assert!(!out(output).contains(API_KEY) && !stderr(output).contains(API_KEY));
    }
}

#[tokio::test]
async fn deposits_from_the_node_trx_and_allowlisted_tokens_only() {
    let (url, seen) = node().await;
    let trx_to = "THj9L6EiYceGY2Pwo8dJ4UowhfK1JQi9aK";
    let usdt_to = "TUikLT3nTTjTkXPAuC4xUGj84vfSERCWRn";
    let range = ["--from", "70000004", "--to", "70000006"];
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "deposits",
            "--chain",
            "tron",
            "--address",
            trx_to,
            "--address",
            usdt_to,
        ];
        args.extend_from_slice(&range);
        args.extend_from_slice(extra);
        args
    };
    let output = chain(&url, &args(&["--token", USDT, "--json"])).await;
    assert!(output.status.success(), "{output:?}");
    let rows: Value = serde_json::from_str(&out(&output)).unwrap();
    let rows: Vec<(u64, String, String, String, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["block"].as_u64().unwrap(),
                row["asset"].as_str().unwrap().to_string(),
                row["to"].as_str().unwrap().to_string(),
                row["amount"].as_str().unwrap().to_string(),
                row["confirmations"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (DEPOSIT_BLOCK, "TRX".into(), trx_to.into(), "1".into(), 15),
            (
                DEPOSIT_BLOCK,
                USDT.into(),
                usdt_to.into(),
                "3500000".into(),
                15
            ),
        ]
    );
    // Lines, with the token's decimals asked of the contract (the test node says 18).
    let output = chain(&url, &args(&["--token", USDT])).await;
    assert!(output.status.success(), "{output:?}");
    let text = out(&output);
    assert!(
        text.contains("0.000001 TRX to THj9L6EiYceGY2Pwo8dJ4UowhfK1JQi9aK"),
        "{text}"
    );
    assert!(
        text.contains(&format!("of token {USDT} to {usdt_to}")),
        "{text}"
    );
    // Without the token on the list, its Transfer logs are not deposits (and no
    // TransactionInfos are asked).
    let before = seen.lock().unwrap().paths.len();
    let output = chain(&url, &args(&["--json"])).await;
    assert!(output.status.success(), "{output:?}");
    let rows: Value = serde_json::from_str(&out(&output)).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert!(
        !seen.lock().unwrap().paths[before..]
            .iter()
            .any(|path| path.contains("gettransactioninfobyblocknum"))
    );
    // Bad input: refused before any connection.
    let before = seen.lock().unwrap().paths.len();
    let output = chain(
        &url,
        &[
            "deposits",
            "--chain",
            "tron",
            "--address",
            "TNotAnAddress",
            "--from",
            "1",
        ],
    )
    .await;
    assert!(!output.status.success());
    let output = chain(
        &url,
        &[
            "deposits",
            "--chain",
            "tron",
            "--address",
            trx_to,
            "--from",
            "9",
            "--to",
            "8",
        ],
    )
    .await;
    assert!(!output.status.success());
    assert_eq!(
        seen.lock().unwrap().paths.len(),
        before,
        "no request for bad input"
    );
}

#[tokio::test]
async fn no_node_configured_says_what_to_set() {
    let output = coinsensei(["chain", "status", "--chain", "tron"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("COINSENSEI_TRON_RPC_URL"),
        "{}",
        stderr(&output)
    );
}

struct Keystore {
    dir: PathBuf,
    keystore: PathBuf,
    password: PathBuf,
}

fn keystore(mnemonic: &str) -> Keystore {
    let dir = std::env::temp_dir().join(format!(
        "coinsensei-tx-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, "pw").unwrap();
    let words = dir.join("words");
    std::fs::write(&words, mnemonic).unwrap();
    let keystore = dir.join("keystore.json");
    let status = std::process::Command::new(BIN)
        .args(["keys", "import", "--mnemonic-file"])
        .arg(&words)
        .env("COINSENSEI_KEYSTORE", &keystore)
        .env("COINSENSEI_KEYSTORE_PASSWORD_FILE", &password)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    std::fs::remove_file(&words).unwrap();
    Keystore {
        dir,
        keystore,
        password,
    }
}

/// `coinsensei ARGS` with the keystore, full logging, and a TRON node configured at
/// `node_url` (which must never be asked).
async fn offline(keys: &Keystore, node_url: &str, args: &[String]) -> Output {
    coinsensei(args)
        .env("COINSENSEI_KEYSTORE", &keys.keystore)
        .env("COINSENSEI_KEYSTORE_PASSWORD_FILE", &keys.password)
        .env("COINSENSEI_TRON_RPC_URL", node_url)
        .env("COINSENSEI_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

fn build_args(case: &Value) -> Vec<String> {
    let asset = if case["contract"].is_null() {
        "TRX"
    } else {
        "USDT"
    };
    let amount = domain::Amount::from_base_units(case["amount"].as_str().unwrap().parse().unwrap())
        .format_decimal(6);
    let mut args: Vec<String> = [
        "tx",
        "build",
        "--chain",
        "tron",
        "--index",
        &case["index"].to_string(),
        "--to",
        case["to"].as_str().unwrap(),
        "--asset",
        asset,
        "--amount",
        &amount,
        "--ref-block-id",
        case["ref_block_id"].as_str().unwrap(),
        "--timestamp",
        &case["timestamp"].to_string(),
        "--expiration",
        &case["expiration"].to_string(),
    ]
    .iter()
    .map(|text| text.to_string())
    .collect();
    if !case["contract"].is_null() {
        args.extend(["--fee-limit".into(), case["fee_limit"].to_string()]);
    }
    args
}

fn assert_no_words(text: &str, phrase: &str) {
    let words: Vec<&str> = phrase.split(' ').collect();
    for pair in words.windows(2) {
        assert!(
            !text.contains(&pair.join(" ")),
            "key material leaked: {text}"
        );
    }
}

#[tokio::test]
async fn tx_build_matches_tronpy_byte_for_byte_and_touches_no_network() {
    let cases: Vec<Value> = serde_json::from_str(GOLDEN).unwrap();
    let cases: Vec<&Value> = cases
        .iter()
        .filter(|case| case["mnemonic"].is_string())
        .collect();
    assert!(cases.len() >= 2, "golden.json lost its mnemonic vectors");
    // A listener configured as the TRON node: any connection to it would show in its backlog.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let node_url = format!("http://{}/", listener.local_addr().unwrap());
    let mut seen_assets = HashMap::new();
    for case in cases {
        let mnemonic = case["mnemonic"].as_str().unwrap();
        let keys = keystore(mnemonic);
        let tronpy = &case["tronpy"];
        let address = offline(
            &keys,
            &node_url,
            &[
                "keys",
                "address",
                "--chain",
                "tron",
                "--index",
                &case["index"].to_string(),
            ]
            .map(String::from),
        )
        .await;
        assert_eq!(out(&address), tronpy["owner"].as_str().unwrap());

        let mut args = build_args(case);
        args.push("--json".into());
        let built = offline(&keys, &node_url, &args).await;
        assert!(built.status.success(), "{}", stderr(&built));
        let ours: Value = serde_json::from_str(&out(&built)).unwrap();
        for field in ["raw_data_hex", "txid", "signature"] {
            assert_eq!(ours[field], tronpy[field], "{field} of {}", case["name"]);
        }
        // Without --json: the same three fields as lines.
        let lines = offline(&keys, &node_url, &build_args(case)).await;
        assert_eq!(
            out(&lines),
            format!(
                "raw_data_hex {}\ntxid {}\nsignature {}",
                tronpy["raw_data_hex"].as_str().unwrap(),
                tronpy["txid"].as_str().unwrap(),
                tronpy["signature"].as_str().unwrap()
            )
        );
        for output in [&address, &built, &lines] {
            assert_no_words(&out(output), mnemonic);
            assert_no_words(&stderr(output), mnemonic);
        }
        seen_assets.insert(case["contract"].is_null(), ());
        std::fs::remove_dir_all(&keys.dir).unwrap();
    }
    assert_eq!(seen_assets.len(), 2, "a TRX and a USDT vector");
    assert!(
        listener.accept().is_err(),
        "tx build connected to the configured node"
    );
}

#[tokio::test]
async fn tx_build_refuses_bad_input_before_opening_the_keystore() {
    let case = serde_json::from_str::<Vec<Value>>(GOLDEN)
        .unwrap()
        .into_iter()
        .find(|case| case["mnemonic"].is_string() && !case["contract"].is_null())
        .unwrap();
    // No keystore exists: every refusal below happens before it would be opened.
    let keys = Keystore {
        dir: PathBuf::new(),
        keystore: Path::new("/nonexistent/keystore.json").to_path_buf(),
        password: Path::new("/nonexistent/password").to_path_buf(),
    };
    let good = build_args(&case);
    let with = |flag: &str, value: &str| {
        let mut args = good.clone();
        match args.iter().position(|arg| arg == flag) {
            Some(at) => args[at + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
        args
    };
    let without_fee_limit: Vec<String> = good[..good.len() - 2].to_vec();
    let timestamp = case["timestamp"].as_i64().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (with("--to", "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU8"), "--to"),
        (
            with("--to", "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            "--to",
        ),
        (with("--chain", "ethereum"), "tron only"),
        (with("--asset", "DOGE"), "DOGE"),
        (with("--amount", "2.5000001"), "at most 6"),
        (with("--amount", "0"), "--amount"),
        (with("--amount", "-1"), "--amount"),
        (with("--amount", "1e6"), "--amount"),
        (with("--ref-block-id", "abcd"), "--ref-block-id"),
        (with("--expiration", &timestamp.to_string()), "expiration"),
        (
            with(
                "--expiration",
                &(timestamp + 24 * 3_600_000 + 1).to_string(),
            ),
            "24 hours",
        ),
        (without_fee_limit, "needs --fee-limit"),
        (with("--fee-limit", "100000001"), "tron_fee_limit_max_sun"),
        (with("--fee-limit", "0"), "--fee-limit"),
        (with("--fee-limit", "-5"), "--fee-limit"),
        (with("--timestamp", "-5"), "timestamp"),
        (
            {
                let mut args = with("--asset", "TRX");
                args.truncate(args.len() - 2);
                args.extend(["--fee-limit".into(), "1000".into()]);
                args
            },
            "TRC-20 transfers only",
        ),
    ];
    for (args, expected) in cases {
        let output = offline(&keys, "http://127.0.0.1:9/", &args).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(out(&output).is_empty(), "{args:?} printed {}", out(&output));
    }
    // The good arguments reach the keystore (its password file first), which does not exist.
    let output = offline(&keys, "http://127.0.0.1:9/", &good).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("password file"),
        "{}",
        stderr(&output)
    );
}
