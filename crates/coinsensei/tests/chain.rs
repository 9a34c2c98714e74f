//! `coinsensei chain status|balance|deposits` against a real devnet; bad addresses are refused
//! before any connection; an RPC URL's path (where providers put API keys) never shows.

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

/// A devnet, a client on it, and the signer holding its funded keys.
async fn devnet() -> (Anvil, chain_ethereum::Ethereum, signer::InProcessSigner) {
    let anvil = Anvil::start().await;
    let client = chain_ethereum::Ethereum::connect(&anvil.url, Some(31337))
        .await
        .unwrap();
    let hot = signer::InProcessSigner::new(
        &signer::Mnemonic::parse("test test test test test test test test test test test junk")
            .unwrap(),
        chain::address::Network::Mainnet,
    );
    (anvil, client, hot)
}

/// Waits until `txid` is in a block.
async fn included(client: &chain_ethereum::Ethereum, txid: alloy_primitives::B256) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !matches!(
        client.transaction_status(txid).await.unwrap(),
        chain::provider::TxStatus::Included { .. }
    ) {
        assert!(tokio::time::Instant::now() < deadline, "{txid} not mined");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
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

#[tokio::test]
async fn token_balances_by_contract_and_by_catalogue_symbol() {
    use chain::address::{Address, Network};
    use chain_ethereum::sign;
    use domain::Chain;
    use signer::Signer;

    let (anvil, client, hot) = devnet().await;
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let mut code = alloy_primitives::hex::decode(
        include_str!("../../chain-ethereum/fixtures/erc20/TestToken.bin").trim(),
    )
    .unwrap();
    let mut supply = [0u8; 32];
    supply[16..].copy_from_slice(&1_000_000_000_000u128.to_be_bytes());
    code.extend_from_slice(&supply);
    let nonce = client.pending_nonce(&from).await.unwrap();
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let signed = sign(
        client.build_contract_creation(code, nonce, fees, 3_000_000),
        &hot,
        0,
    )
    .unwrap();
    client.submit(&signed).await;
    included(&client, signed.txid).await;
    let token = contract_address(&from, nonce);
    let balance = chain(
        &anvil.url,
        &[
            "balance",
            "--chain",
            "ethereum",
            "--address",
            from.as_str(),
            "--token",
            token.as_str(),
        ],
    )
    .await;
    assert!(balance.status.success(), "{}", stderr(&balance));
    assert_eq!(
        out(&balance),
        format!("1000000 (token {token}, 6 decimals; 1000000000000 base units)")
    );
    // USDT's mainnet contract has no code on a devnet: said, not a zero balance.
    let usdt = chain(
        &anvil.url,
        &[
            "balance",
            "--chain",
            "ethereum",
            "--address",
            from.as_str(),
            "--asset",
            "usdt",
        ],
    )
    .await;
    assert_eq!(usdt.status.code(), Some(1));
    assert!(
        stderr(&usdt).contains("did not answer decimals like an ERC-20"),
        "{}",
        stderr(&usdt)
    );
    let unknown = chain(
        &anvil.url,
        &[
            "balance",
            "--chain",
            "ethereum",
            "--address",
            from.as_str(),
            "--asset",
            "DOGE",
        ],
    )
    .await;
    assert!(
        stderr(&unknown).contains("no asset DOGE on ethereum"),
        "{}",
        stderr(&unknown)
    );

    fn contract_address(from: &Address, nonce: u64) -> Address {
        // keccak(rlp([sender, nonce]))[12..]
        let sender = alloy_primitives::Address::from(from.ethereum_bytes().unwrap());
        let created = sender.create(nonce).to_checksum(None);
        Address::parse(Chain::Ethereum, Network::Mainnet, &created).unwrap()
    }
}

#[tokio::test]
async fn deposits_in_a_range_of_blocks() {
    use chain::provider::SubmitOutcome;
    use chain_ethereum::{Transfer, sign};
    use domain::{Amount, Chain};
    use signer::Signer;

    let (anvil, client, hot) = devnet().await;
    let watched = hot.address(Chain::Ethereum, 21).unwrap();
    let other = hot.address(Chain::Ethereum, 22).unwrap();
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let mut txids = Vec::new();
    for (nonce, to) in [(0, &watched), (1, &other)] {
        let signed = sign(
            client
                .build_transfer(&Transfer {
                    to: to.clone(),
                    value: Amount::from_u128(1_500_000_000_000_000_000),
                    nonce,
                    fees,
                })
                .unwrap(),
            &hot,
            0,
        )
        .unwrap();
        assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
        txids.push(signed.txid);
    }
    for txid in &txids {
        included(&client, *txid).await;
    }
    let listed = chain(
        &anvil.url,
        &[
            "deposits",
            "--chain",
            "ethereum",
            "--address",
            watched.as_str(),
            "--from",
            "0",
        ],
    )
    .await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = out(&listed);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&format!("1.5 ETH to {watched} in {}", txids[0])),
        "{text}"
    );
    assert!(
        !text.contains(other.as_str()),
        "an unwatched address: {text}"
    );

    let json = chain(
        &anvil.url,
        &[
            "deposits",
            "--chain",
            "ethereum",
            "--address",
            watched.as_str(),
            "--address",
            other.as_str(),
            "--from",
            "0",
            "--json",
        ],
    )
    .await;
    assert!(json.status.success(), "{}", stderr(&json));
    let rows: serde_json::Value = serde_json::from_str(&out(&json)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["amount"], "1500000000000000000");
    assert_eq!(rows[1]["to"], other.as_str());
    assert!(rows[0]["confirmations"].as_u64().unwrap() >= 2);

    // Bad input: said, exit 1, before or instead of any scan.
    for (args, expected) in [
        (
            vec!["--address", "0x123", "--from", "0"],
            "invalid ethereum address",
        ),
        (
            vec!["--address", watched.as_str(), "--from", "5", "--to", "2"],
            "is before --from",
        ),
        (
            vec!["--address", watched.as_str(), "--from", "999999"],
            "past the node's head",
        ),
    ] {
        let mut all = vec!["deposits", "--chain", "ethereum"];
        all.extend(args);
        let refused = chain(&anvil.url, &all).await;
        assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
        assert!(stderr(&refused).contains(expected), "{}", stderr(&refused));
    }
}
