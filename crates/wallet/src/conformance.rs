//! The checks every chain adapter passes against a live node (a devnet in the tests): the
//! read side agrees with itself, transactions built and signed without the node are what the
//! node sees (same txid), sending the same bytes twice is one payment, a scan finds what was
//! paid, in the right block, and bad input is refused without anything sent.
//!
//! An adapter's test calls [`run`] (chains with nonces) or [`run_attempts`] (chains whose
//! payments are stored attempts, TRON) with a [`Fixture`]: a signer with a funded key, a
//! store for the nonce allocator or the attempts, and what to pay. It panics with the failed
//! check's reason. The checks are the same for both; only how the wallet pays differs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::address::Address;
use chain::provider::{
    Asset, BlockRef, ChainAttempts, ChainBuild, ChainSubmit, Payment, SignedTransaction,
    SubmitOutcome, TxStatus, WatchSet,
};
use domain::Amount;
use signer::Signer;
use store::Store;

use crate::attempts::Settled;
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

/// How the suite pays through the wallet: by the store's nonces (Ethereum) or by stored
/// attempts under payout keys (TRON). The checks are the same; only the entry point and what
/// "nothing was sent" looks like differ.
pub trait Pays<P>: Send + Sync {
    /// Pays `payment` through `wallet`: its txid and what the node said.
    fn pay(
        &self,
        wallet: &Wallet<P>,
        payment: &Payment,
    ) -> impl Future<Output = Result<(String, SubmitOutcome), WalletError>> + Send;
    /// Asserts the wallet's own reconcile finds nothing the node dropped.
    fn nothing_dropped(
        &self,
        wallet: &Wallet<P>,
        from_index: u32,
    ) -> impl Future<Output = ()> + Send;
    /// What the chain and the store say the sender has sent: unchanged by refused input.
    fn footprint(&self, wallet: &Wallet<P>, from: &Address) -> impl Future<Output = String> + Send;
}

/// Payments by nonces from the store's allocator ([`Wallet::send`]).
#[derive(Debug, Clone, Copy)]
pub struct ByNonces;

impl<P: ChainBuild + ChainSubmit> Pays<P> for ByNonces {
    async fn pay(
        &self,
        wallet: &Wallet<P>,
        payment: &Payment,
    ) -> Result<(String, SubmitOutcome), WalletError> {
        // The seed's operations (sendTransaction, sendToken); a payment whose key is not its
        // sender can only be put to `send` itself.
        let sent = if wallet.create_wallet(payment.from_index).ok().as_ref() != Some(&payment.from)
        {
            wallet.send(payment).await?
        } else {
            match &payment.asset {
                Asset::Native => {
                    wallet
                        .send_transaction(payment.from_index, &payment.to, payment.amount)
                        .await?
                }
                Asset::Token(token) => {
                    wallet
                        .send_token(payment.from_index, token, &payment.to, payment.amount)
                        .await?
                }
            }
        };
        Ok((sent.txid, sent.outcome))
    }

    async fn nothing_dropped(&self, wallet: &Wallet<P>, from_index: u32) {
        let reconciled = wallet.reconcile(from_index).await.expect("reconcile");
        assert!(
            reconciled.rebroadcast.is_empty(),
            "nothing was dropped: {reconciled:?}"
        );
    }

    async fn footprint(&self, wallet: &Wallet<P>, from: &Address) -> String {
        let sequence = wallet
            .provider()
            .account_sequence(from)
            .await
            .expect("sequence");
        format!("{sequence:?}")
    }
}

/// Payments by attempts stored under payout keys ([`Wallet::pay`]), for chains without
/// nonces; each payment gets its own payout key.
#[derive(Debug, Default)]
pub struct ByAttempts {
    payouts: std::sync::atomic::AtomicU32,
}

impl<P: ChainAttempts> Pays<P> for ByAttempts {
    async fn pay(
        &self,
        wallet: &Wallet<P>,
        payment: &Payment,
    ) -> Result<(String, SubmitOutcome), WalletError> {
        let n = self
            .payouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let paid = wallet.pay(&format!("conformance-{n}"), payment).await?;
        Ok((paid.txid, paid.outcome))
    }

    async fn nothing_dropped(&self, wallet: &Wallet<P>, _from_index: u32) {
        // Each live attempt is either settled or known to the node already; one the node
        // took again (Accepted) had been dropped.
        for settled in wallet.reconcile_attempts(None).await.expect("reconcile") {
            assert!(
                matches!(
                    settled,
                    Settled::Landed { success: true, .. }
                        | Settled::Rebroadcast {
                            outcome: SubmitOutcome::AlreadyKnown,
                            ..
                        }
                ),
                "nothing was dropped: {settled:?}"
            );
        }
    }

    async fn footprint(&self, wallet: &Wallet<P>, from: &Address) -> String {
        let live = wallet
            .store
            .attempts_live(wallet.provider().chain(), Some(from.as_str()))
            .await
            .expect("live attempts");
        let txids: Vec<String> = live.into_iter().map(|attempt| attempt.txid).collect();
        format!("{txids:?}")
    }
}

/// Runs every check against `provider`, paying through the store's nonces.
pub async fn run<P: ChainBuild + ChainSubmit + Clone>(provider: P, fixture: Fixture) {
    run_with(provider, fixture, ByNonces).await;
}

/// Runs every check against `provider`, a chain without nonces, paying by stored attempts.
pub async fn run_attempts<P: ChainAttempts + Clone>(provider: P, fixture: Fixture) {
    run_with(provider, fixture, ByAttempts::default()).await;
}

/// Runs every check against `provider`, paying through the wallet as `pays` does.
pub async fn run_with<P: ChainBuild + ChainSubmit + Clone, M: Pays<P>>(
    provider: P,
    fixture: Fixture,
    pays: M,
) {
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

    // The seed's operations through the wallet (sendTransaction, sendToken: by the store's
    // nonces or by stored attempts, as the chain pays).
    let (sent_txid, outcome) = pays.pay(&wallet, &payment).await.expect("sendTransaction");
    assert_eq!(outcome, SubmitOutcome::Accepted);
    let (_, success) = included(&provider, &sent_txid, fixture.inclusion_timeout).await;
    assert!(success);
    match wallet
        .get_transaction(&sent_txid)
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
        let token_payment = Payment {
            asset: Asset::Token(token.clone()),
            amount: *amount,
            ..payment.clone()
        };
        let (sent_txid, outcome) = pays.pay(&wallet, &token_payment).await.expect("sendToken");
        assert_eq!(outcome, SubmitOutcome::Accepted);
        let (block, success) = included(&provider, &sent_txid, fixture.inclusion_timeout).await;
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
                .any(|deposit| deposit.txid == sent_txid
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
    pays.nothing_dropped(&wallet, fixture.funded).await;

    // Bad input: refused, nothing sent.
    let footprint = pays.footprint(&wallet, &from).await;
    let zero = pays
        .pay(
            &wallet,
            &Payment {
                amount: Amount::from_u128(0),
                ..payment.clone()
            },
        )
        .await;
    assert!(matches!(zero, Err(WalletError::Invalid(_))), "{zero:?}");
    let to_self = pays
        .pay(
            &wallet,
            &Payment {
                to: from.clone(),
                ..payment.clone()
            },
        )
        .await;
    assert!(
        matches!(to_self, Err(WalletError::Invalid(_))),
        "{to_self:?}"
    );
    let mut stranger = payment.clone();
    stranger.from_index = fixture.recipient;
    let stranger = pays.pay(&wallet, &stranger).await;
    assert!(
        matches!(stranger, Err(WalletError::Invalid(_))),
        "{stranger:?}"
    );
    assert_eq!(
        pays.footprint(&wallet, &from).await,
        footprint,
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
