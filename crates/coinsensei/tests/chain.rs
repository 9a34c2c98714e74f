//! `coinsensei chain status|balance` against a real devnet; bad addresses are refused before
//! any connection; an RPC URL's path (where providers put API keys) never shows.

mod common;

use std::process::{Output, Stdio};

use common::*;
use testkit::Anvil;

async fn chain(rpc_url: &str, args: &[&str]) -> Output {
    let mut command = coinsensei(["chain"].iter().chain(args));
    command
        .env("COINSENSEI_ETHEREUM_RPC_URL", rpc_url)
        .env("COINSENSEI_LOG", "trace")
        .stdin(Stdio::null());
    command.output().await.expect("run coinsensei chain")
}

fn out(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test]
async fn status_and_balance_from_the_node() {
    let anvil = Anvil::start().await;
    let status = chain(&anvil.url, &["status", "--chain", "ethereum"]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        out(&status).contains("reachable, chain 31337, head"),
        "{}",
        out(&status)
    );

    let balance = chain(
        &anvil.url,
        &[
            "balance",
            "--chain",
            "ethereum",
            "--address",
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        ],
    )
    .await;
    assert!(balance.status.success(), "{}", stderr(&balance));
    assert_eq!(out(&balance), "10000 ETH (10000000000000000000000 wei)");

    // A typo in a checksummed address: refused as a typo, exit 1.
    let typo = chain(
        &anvil.url,
        &[
            "balance",
            "--chain",
            "ethereum",
            "--address",
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92267",
        ],
    )
    .await;
    assert_eq!(typo.status.code(), Some(1));
    assert!(stderr(&typo).contains("EIP-55"), "{}", stderr(&typo));
    let tron = chain(&anvil.url, &["status", "--chain", "tron"]).await;
    assert!(stderr(&tron).contains("not built yet"), "{}", stderr(&tron));
}

#[tokio::test]
async fn the_rpc_key_never_shows() {
    let secret = "/v3/0123456789abcdefsecretkey";
    let url = format!("http://127.0.0.1:9{secret}");
    let status = chain(&url, &["status", "--chain", "ethereum"]).await;
    assert_eq!(status.status.code(), Some(1));
    let text = format!("{}{}", out(&status), stderr(&status));
    assert!(!text.contains("secretkey"), "{text}");
    assert!(text.contains("127.0.0.1:9"), "the host is shown: {text}");
    // The chain id is checked.
    let anvil = Anvil::start().await;
    let mut command = coinsensei(["chain", "status", "--chain", "ethereum"]);
    let wrong = command
        .env("COINSENSEI_ETHEREUM_RPC_URL", &anvil.url)
        .env("COINSENSEI_ETHEREUM_CHAIN_ID", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        stderr(&wrong).contains("on chain 31337, not the configured 1"),
        "{}",
        stderr(&wrong)
    );
}
