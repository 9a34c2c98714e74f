//! The checks every chain adapter passes against a live node (a devnet in the tests): the
//! read side agrees with itself, transactions built and signed without the node are what the
//! node sees (same txid), sending the same bytes twice is one payment, a scan finds what was
//! paid, in the right block, and bad input is refused without anything sent.
//!
//! An adapter's test calls [`run`] with a [`Fixture`]: a signer with a funded key, a store
//! for the nonce allocator, and what to pay. It panics with the failed check's reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::address::Address;
use chain::provider::{
    Asset, BlockRef, ChainBuild, ChainSubmit, Payment, SignedTransaction, SubmitOutcome, TxStatus,
    WatchSet,
};
use domain::Amount;
use signer::Signer;
use store::Store;

use crate::{Wallet, WalletError};

/// What the suite needs from the test that runs it.
pub struct Fixture {
    pub signer: Arc<dyn Signer>,
    pub store: Store,
    /// A key with enough of the native coin (and of `token`) for a few payments and fees.
    pub funded: u32,
    /// Another key of the signer: the recipient.
    pub recipient: u32,
    /// What a native payment moves.
    pub native_amount: Amount,
    /// A token the funded key holds, and what a token payment moves.
    pub token: Option<(Address, Amount)>,
    /// The longest a transaction takes to be included.
    pub inclusion_timeout: Duration,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("funded", &self.funded)
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}

/// Waits until `txid` is in a block; its block and whether it succeeded.
pub async fn included<P: ChainBuild>(
    provider: &P,
    txid: &str,
    timeout: Duration,
) -> (BlockRef, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        match provider.transaction(txid).await {
            Ok(TxStatus::Included {
                block,
                success,
                confirmations,
            }) => {
                assert!(
                    confirmations >= 1,
                    "{txid}: included with {confirmations} confirmations"
                );
                return (block, success);
            }
            Ok(_) => {}
            Err(error) => assert!(error.retriable, "{txid}: {error}"),
        }
        assert!(
            Instant::now() < deadline,
            "{txid} not included within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs every check against `provider`.
pub async fn run<P: ChainBuild + ChainSubmit + Clone>(provider: P, fixture: Fixture) {
    let chain = provider.chain();
    let wallet = Wallet::new(
        provider.clone(),
        fixture.signer.clone(),
        fixture.store.clone(),
        "conformance",
    );
    let from = wallet
        .create_wallet(fixture.funded)
        .expect("the funded key's address");
    let to = wallet
        .create_wallet(fixture.recipient)
        .expect("the recipient's address");
    assert_eq!(from.chain(), chain);
    assert_ne!(from, to);

    // Read side: the tip, blocks chained by their parents, nothing past the head.
    let tip = provider.tip().await.expect("tip");
    assert!(tip.head >= 1, "a chain with blocks");
    if let Some(finalized) = tip.finalized {
        assert!(
            finalized <= tip.head,
            "finalized {finalized} past the head {}",
            tip.head
        );
    }
    let head = provider
        .block(tip.head)
        .await
        .expect("head block")
        .expect("the head exists");
    let parent = provider
        .block(tip.head - 1)
        .await
        .expect("parent")
        .expect("the parent exists");
    assert_eq!(head.number, tip.head);
    assert_eq!(
        head.parent_hash, parent.hash,
        "blocks chain by their parent hash"
    );
    assert_eq!(
        provider
            .block(tip.head + 1_000)
            .await
            .expect("future block"),
        None
    );
    let batch = provider
        .scan(tip.head - 1, tip.head, &WatchSet::default())
        .await
        .expect("scan of two blocks");
    assert_eq!(batch.blocks, vec![parent.clone(), head.clone()]);

    // The steps by hand: metadata, build, payloads, sign, combine, parse; no node needed
    // between metadata and submit.
    let payment = Payment {
        from_index: fixture.funded,
        from: from.clone(),
        to: to.clone(),
        asset: Asset::Native,
        amount: fixture.native_amount,
    };
    let before = provider
        .balance(&to, &Asset::Native)
        .await
        .expect("balance");
    let metadata = provider.metadata(&payment).await.expect("metadata");
    assert!(!provider.max_fee(&metadata).is_zero(), "a fee is quoted");
    let unsigned = provider.build(&payment, &metadata).expect("build");
    let payloads = provider.payloads(&unsigned);
    assert!(!payloads.is_empty());
    assert!(
        payloads
            .iter()
            .all(|payload| payload.index == fixture.funded)
    );
    assert!(
        provider.combine(unsigned.clone(), &[]).is_err(),
        "combining without signatures fails"
    );
    let signatures = fixture
        .signer
        .sign_payloads(chain, &payloads)
        .expect("sign");
    let signed = provider.combine(unsigned, &signatures).expect("combine");
    let parsed = provider.parse(&signed).expect("parse");
    assert!(parsed.matches(&payment), "{parsed:?} is not {payment:?}");
    assert_eq!(parsed.sequence, provider.sequence(&metadata));
    let mut tampered = signed.clone();
    let last = tampered.raw.len() - 1;
    tampered.raw[last] ^= 1;
    assert!(
        provider.parse(&tampered).is_err(),
        "altered bytes do not pass for the transaction"
    );

    // Submit: accepted once, the same bytes again are the same transaction; the txid computed
    // locally is the one the node knows.
    let outcome = provider.submit(&signed).await;
    assert_eq!(outcome, SubmitOutcome::Accepted);
    let again = provider.submit(&signed).await;
    assert_eq!(
        again,
        SubmitOutcome::AlreadyKnown,
        "a rebroadcast is not a second payment"
    );
    let (block, success) = included(&provider, &signed.txid, fixture.inclusion_timeout).await;
    assert!(success);
    assert_eq!(
        provider.submit(&signed).await,
        SubmitOutcome::AlreadyKnown,
        "mined: still known"
    );
    let after = provider
        .balance(&to, &Asset::Native)
        .await
        .expect("balance");
    assert_eq!(
        after.checked_sub(before),
        Some(fixture.native_amount),
        "paid once, exactly"
    );

    // A scan finds it, in its block, under its block's hash.
    let watch = WatchSet {
        addresses: vec![to.clone()],
        tokens: fixture
            .token
            .iter()
            .map(|(token, _)| token.clone())
            .collect(),
    };
    let found = provider
        .scan(block.number, block.number, &watch)
        .await
        .expect("scan");
    assert_eq!(found.blocks, vec![block.clone()]);
    let deposit = found
        .deposits
        .iter()
        .find(|deposit| deposit.txid == signed.txid)
        .expect("the payment is found as a deposit");
    assert_eq!(
        (&deposit.to, &deposit.asset, deposit.amount, &deposit.block),
        (&to, &Asset::Native, fixture.native_amount, &block)
    );
    let unwatched = provider
        .scan(block.number, block.number, &WatchSet::default())
        .await
        .expect("scan");
    assert!(
        unwatched.deposits.is_empty(),
        "nothing for addresses nobody watches"
    );

    // The seed's operations through the wallet, with the store's nonces.
    let sent = wallet
        .send_transaction(fixture.funded, &to, fixture.native_amount)
        .await
        .expect("sendTransaction");
    assert_eq!(sent.outcome, SubmitOutcome::Accepted);
    let (_, success) = included(&provider, &sent.txid, fixture.inclusion_timeout).await;
    assert!(success);
    match wallet
        .get_transaction(&sent.txid)
        .await
        .expect("getTransaction")
    {
        TxStatus::Included { success: true, .. } => {}
        other => panic!("getTransaction says {other:?}"),
    }
    let quoted = wallet.estimate_fee(&payment).await.expect("estimateFee");
    assert!(!quoted.is_zero());
    if let Some((token, amount)) = &fixture.token {
        let before = wallet
            .get_token_balance(&to, token)
            .await
            .expect("getTokenBalance");
        let sent = wallet
            .send_token(fixture.funded, token, &to, *amount)
            .await
            .expect("sendToken");
        assert_eq!(sent.outcome, SubmitOutcome::Accepted);
        let (block, success) = included(&provider, &sent.txid, fixture.inclusion_timeout).await;
        assert!(success);
        let after = wallet
            .get_balance(&to, Some(token))
            .await
            .expect("getBalance of a token");
        assert_eq!(after.checked_sub(before), Some(*amount));
        let found = provider
            .scan(block.number, block.number, &watch)
            .await
            .expect("scan");
        assert!(
            found
                .deposits
                .iter()
                .any(|deposit| deposit.txid == sent.txid
                    && deposit.asset == Asset::Token(token.clone())
                    && deposit.amount == *amount
                    && deposit.to == to),
            "the token payment is found as a deposit: {found:?}"
        );
        let no_tokens = WatchSet {
            addresses: vec![to.clone()],
            tokens: Vec::new(),
        };
        let found = provider
            .scan(block.number, block.number, &no_tokens)
            .await
            .expect("scan");
        assert!(
            found
                .deposits
                .iter()
                .all(|deposit| deposit.asset == Asset::Native),
            "a token not on the list is never a deposit"
        );
    }
    let reconciled = wallet.reconcile(fixture.funded).await.expect("reconcile");
    assert!(
        reconciled.rebroadcast.is_empty(),
        "nothing was dropped: {reconciled:?}"
    );

    // Bad input: refused, nothing sent.
    let sequence_before = provider.account_sequence(&from).await.expect("sequence");
    let zero = wallet
        .send_transaction(fixture.funded, &to, Amount::from_u128(0))
        .await;
    assert!(matches!(zero, Err(WalletError::Invalid(_))), "{zero:?}");
    let to_self = wallet
        .send_transaction(fixture.funded, &from, fixture.native_amount)
        .await;
    assert!(
        matches!(to_self, Err(WalletError::Invalid(_))),
        "{to_self:?}"
    );
    let mut stranger = payment.clone();
    stranger.from_index = fixture.recipient;
    assert!(matches!(
        wallet.send(&stranger).await,
        Err(WalletError::Invalid(_))
    ));
    assert_eq!(
        provider.account_sequence(&from).await.expect("sequence"),
        sequence_before,
        "nothing left the process"
    );
    match provider.transaction(&unknown_txid(&signed)).await {
        Ok(TxStatus::NotFound) => {}
        other => panic!("an unknown txid: {other:?}"),
    }
    let error = provider
        .transaction("not a txid")
        .await
        .expect_err("a bad txid");
    assert!(!error.retriable);
    let garbage = SignedTransaction {
        txid: signed.txid.clone(),
        raw: vec![0xde, 0xad, 0xbe, 0xef],
    };
    assert!(
        matches!(
            provider.submit(&garbage).await,
            SubmitOutcome::Rejected {
                retriable: false,
                ..
            }
        ),
        "garbage is refused for good"
    );
}

/// A txid of the same shape that no transaction has.
fn unknown_txid(signed: &SignedTransaction) -> String {
    let mut text: Vec<char> = signed.txid.chars().collect();
    let last = text.len() - 1;
    text[last] = if text[last] == '0' { '1' } else { '0' };
    let first = text.len() - 8;
    for digit in &mut text[first..last] {
        *digit = 'f';
    }
    text.into_iter().collect()
}
