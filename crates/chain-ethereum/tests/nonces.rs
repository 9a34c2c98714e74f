//! 50 concurrent sends from one address through the store's nonce allocator, on anvil: no
//! duplicate nonce, no gap (every transaction is mined, and the node's count ends exactly 50
//! higher); a sender that dies between reserving and signing leaves no gap either.

use std::time::Duration;

use chain::address::{Address, Network};
use chain::provider::SubmitOutcome;
use chain_ethereum::{Ethereum, FeeQuote, Transfer, sign};
use chrono::Utc;
use domain::{Amount, Chain};
use signer::{InProcessSigner, Mnemonic, Signer};
use store::NonceReserve;
use testkit::{Anvil, Backend, TestDb};

mod common;
use common::{ANVIL_MNEMONIC, mined};

/// Reserves a nonce, builds, signs, binds and submits one transfer.
async fn send(
    client: &Ethereum,
    store: &store::Store,
    hot: &InProcessSigner,
    from: &Address,
    to: &Address,
    fees: FeeQuote,
    holder: &str,
) -> (u64, alloy::primitives::B256) {
    let node_pending = client.pending_nonce(from).await.unwrap();
    let now = Utc::now();
    let nonce = store
        .nonce_reserve(&NonceReserve {
            chain: Chain::Ethereum,
            address: from.to_string(),
            payout: format!("payout-{holder}"),
            node_pending,
            holder: holder.into(),
            lease_until: now + Duration::from_secs(30),
            now,
        })
        .await
        .unwrap()
        .nonce;
    let unsigned = client
        .build_transfer(&Transfer {
            to: to.clone(),
            value: Amount::from_u128(1_000),
            nonce,
            fees,
        })
        .unwrap();
    let signed = sign(unsigned, hot, 0).unwrap();
    store
        .nonce_bind(&store::NonceBind {
            chain: Chain::Ethereum,
            address: from.to_string(),
            nonce,
            holder: holder.into(),
            payout: format!("payout-{holder}"),
            tx: store::NonceTxNew {
                txid: signed.txid.to_string(),
                raw: signed.raw.clone(),
                fees: None,
            },
            now,
        })
        .await
        .unwrap();
    assert_eq!(client.submit(&signed).await, SubmitOutcome::Accepted);
    (nonce, signed.txid)
}

async fn all_mined(client: &Ethereum, txids: &[alloy::primitives::B256]) {
    for txid in txids {
        assert!(mined(client, *txid).await, "{txid} reverted");
    }
}

async fn concurrent_sends(backend: Backend) {
    let anvil = Anvil::start().await;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let client = Ethereum::connect(&anvil.url, Some(31337)).await.unwrap();
    let hot = InProcessSigner::new(&Mnemonic::parse(ANVIL_MNEMONIC).unwrap(), Network::Mainnet);
    let from = hot.address(Chain::Ethereum, 0).unwrap();
    let to = hot.address(Chain::Ethereum, 5).unwrap();
    let fees = client.fees(1_000_000_000_000).await.unwrap();
    let start = client.pending_nonce(&from).await.unwrap();

    // A sender reserves and dies before signing: its nonce must not become a gap.
    let now = Utc::now();
    let abandoned = store
        .nonce_reserve(&NonceReserve {
            chain: Chain::Ethereum,
            address: from.to_string(),
            payout: "payout-crashed".into(),
            node_pending: start,
            holder: "crashed".into(),
            lease_until: now + Duration::from_millis(200),
            now,
        })
        .await
        .unwrap()
        .nonce;
    assert_eq!(abandoned, start);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut tasks = Vec::new();
    for worker in 0..50 {
        let (client, store, from, to) = (client.clone(), store.clone(), from.clone(), to.clone());
        let hot = InProcessSigner::new(&Mnemonic::parse(ANVIL_MNEMONIC).unwrap(), Network::Mainnet);
        tasks.push(tokio::spawn(async move {
            send(
                &client,
                &store,
                &hot,
                &from,
                &to,
                fees,
                &format!("worker-{worker}"),
            )
            .await
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap());
    }
    let mut nonces: Vec<u64> = sent.iter().map(|(nonce, _)| *nonce).collect();
    nonces.sort_unstable();
    assert_eq!(
        nonces,
        (start..start + 50).collect::<Vec<u64>>(),
        "distinct, contiguous, the abandoned one reused"
    );
    let txids: Vec<_> = sent.iter().map(|(_, txid)| *txid).collect();
    all_mined(&client, &txids).await;
    assert_eq!(client.pending_nonce(&from).await.unwrap(), start + 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_on_postgres() {
    concurrent_sends(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_on_sqlite() {
    concurrent_sends(Backend::Sqlite).await;
}
