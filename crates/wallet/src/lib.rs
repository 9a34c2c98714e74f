//! What the workers do with any chain, written once over the provider contract
//! ([`chain::provider`]) instead of once per chain:
//!
//! - [`Wallet`]: the seed's operations (`createWallet`, `getBalance`, `getTokenBalance`,
//!   `sendTransaction`, `sendToken`, `getTransaction`, `estimateFee`), with the seed's
//!   sign-and-send split into its safe steps: metadata, a nonce from the store's allocator,
//!   build, sign the payloads, combine, read the bytes back and check them against the
//!   payment, **store them**, and only then broadcast (DESIGN.md §2.2);
//! - [`scanner::Scanner`]: deposits by block scan, each block stored with its hash, reorgs
//!   found by parent hash and rolled back, credits by the confirmation policy;
//! - [`nonces`]: payments by account nonces (Ethereum), each nonce tied to its payout:
//!   [`Wallet::pay_nonce`] pays a payout once whatever crashes, [`Wallet::settle_nonces`]
//!   settles each nonce by which of its stored transactions was mined (or `Foreign`), sends
//!   again what the node dropped and replaces what waits too long;
//! - [`attempts`]: payments on chains without nonces (TRON): [`Wallet::pay`] stores each
//!   payout's signed bytes as an attempt before broadcasting them, and
//!   [`Wallet::reconcile_attempts`] settles attempts by the chain's death rule or sends the
//!   same bytes again;
//! - [`sweeps::Sweeper`]: consolidation on Ethereum: deposit addresses swept into the hot
//!   wallet, a token sweep's gas topped up first, each payment through the nonce path under
//!   a payout key of its sweep (`gas:<id>`, `sweep:<id>`), the sweep stored before either;
//! - [`energy_sweeps::EnergySweeper`]: consolidation on TRON: a token sweep's energy lent by
//!   the staking account (Stake 2.0 delegation) and taken back after it, or TRX topped up
//!   to burn when it cannot lend enough; the deposit address activated first; every
//!   transaction through the attempts path under a payout key of its sweep (`gas:<id>`,
//!   `delegate:<id>`, `sweep:<id>`, `reclaim:<id>`, `cold:<id>`);
//! - [`attempt_log::StoreAttempts`]: the chain crates' attempt log (`chain::attempts`) over the
//!   store's payout attempts and output reservations (Bitcoin's `Payer` records through it);
//! - [`conformance`]: the checks every chain adapter passes on a live node.

pub mod attempt_log;
pub mod attempts;
pub mod conformance;
pub mod energy_sweeps;
pub mod nonces;
pub mod scanner;
pub mod sweeps;
pub mod withdrawals;

use std::sync::Arc;
use std::time::Duration;

use chain::address::Address;
use chain::provider::{
    Asset, ChainBuild, ChainError, ChainSubmit, Payment, SubmitOutcome, TxStatus,
};
use domain::Amount;
use signer::{Signer, SignerError};
use store::{Store, StoreError};

pub use nonces::{NONCES_SETTLE_MAX, NonceOutcome, NonceSettlePolicy, NonceSettled};

/// How long a reserved nonce is held for its holder before it can be handed out again: well
/// over the time from reservation to the signed bytes being stored.
pub const NONCE_LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signer: {0}")]
    Signer(#[from] SignerError),
    #[error("invalid payment: {0}")]
    Invalid(String),
    /// The signed bytes do not do what was asked: nothing was stored or sent.
    #[error("the signed transaction does not match the payment: {0}")]
    Mismatch(String),
    #[error("{0}")]
    Unsupported(String),
    /// The payout's nonce was consumed by a transaction that is none of ours: whether it was
    /// paid is for a person to find out (`manual_review`), never for a retry.
    #[error("nonce {nonce} of payout {payout} was consumed by a transaction that is none of ours")]
    NonceForeign { payout: String, nonce: u64 },
}

impl WalletError {
    /// Whether the same call may succeed later.
    pub fn is_retriable(&self) -> bool {
        match self {
            WalletError::Chain(error) => error.retriable,
            WalletError::Store(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// A payment that went out (or may have): its txid, the nonce it holds, and what the node
/// said. Whatever the outcome, the signed bytes are stored under the nonce first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub txid: String,
    pub sequence: Option<u64>,
    pub outcome: SubmitOutcome,
}

/// What [`Wallet::reconcile`] found among an address's unmined transactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Known to the node (in its pool or mined since).
    pub known: usize,
    /// Dropped by the node, sent again byte for byte: (nonce, txid, outcome).
    pub rebroadcast: Vec<(u64, String, SubmitOutcome)>,
}

/// The seed's wallet operations on one chain.
pub struct Wallet<P> {
    provider: P,
    signer: Arc<dyn Signer>,
    store: Store,
    /// Who holds this wallet's nonce reservations (a worker id and incarnation).
    holder: String,
}

impl<P> std::fmt::Debug for Wallet<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl<P: ChainBuild + ChainSubmit> Wallet<P> {
    pub fn new(
        provider: P,
        signer: Arc<dyn Signer>,
        store: Store,
        holder: impl Into<String>,
    ) -> Self {
        Wallet {
            provider,
            signer,
            store,
            holder: holder.into(),
        }
    }

    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// `createWallet(index)`: the address of key `index` (a deposit address, or a hot wallet).
    pub fn create_wallet(&self, index: u32) -> Result<Address, WalletError> {
        Ok(self.signer.address(self.provider.chain(), index)?)
    }

    /// `getBalance(address, token?)`: the native balance, or a token's with `token`.
    pub async fn get_balance(
        &self,
        address: &Address,
        token: Option<&Address>,
    ) -> Result<Amount, WalletError> {
        let asset = token.map_or(Asset::Native, |token| Asset::Token(token.clone()));
        self.check_address(address)?;
        Ok(self.provider.balance(address, &asset).await?)
    }

    /// `getTokenBalance(address, token)`.
    pub async fn get_token_balance(
        &self,
        address: &Address,
        token: &Address,
    ) -> Result<Amount, WalletError> {
        self.get_balance(address, Some(token)).await
    }

    /// `getTransaction(txid)`: where it is, with confirmations once in a block.
    pub async fn get_transaction(&self, txid: &str) -> Result<TxStatus, WalletError> {
        Ok(self.provider.transaction(txid).await?)
    }

    /// `estimateFee`: the most `payment` can cost in fees, in the native coin's base units.
    pub async fn estimate_fee(&self, payment: &Payment) -> Result<Amount, WalletError> {
        self.check_payment(payment)?;
        let metadata = self.provider.metadata(payment).await?;
        Ok(self.provider.max_fee(&metadata))
    }

    /// `sendTransaction(from index, to, amount)`: the native coin.
    pub async fn send_transaction(
        &self,
        from_index: u32,
        to: &Address,
        amount: Amount,
    ) -> Result<Sent, WalletError> {
        let payment = self.payment(from_index, to, Asset::Native, amount)?;
        self.send(&payment).await
    }

    /// `sendToken(from index, token, to, amount)`: `amount` in the token's base units.
    pub async fn send_token(
        &self,
        from_index: u32,
        token: &Address,
        to: &Address,
        amount: Amount,
    ) -> Result<Sent, WalletError> {
        let payment = self.payment(from_index, to, Asset::Token(token.clone()), amount)?;
        self.send(&payment).await
    }

    fn payment(
        &self,
        from_index: u32,
        to: &Address,
        asset: Asset,
        amount: Amount,
    ) -> Result<Payment, WalletError> {
        Ok(Payment {
            from_index,
            from: self.create_wallet(from_index)?,
            to: to.clone(),
            asset,
            amount,
        })
    }

    fn check_address(&self, address: &Address) -> Result<(), WalletError> {
        if address.chain() != self.provider.chain() {
            return Err(WalletError::Invalid(format!(
                "{address} is a {} address, not {}",
                address.chain(),
                self.provider.chain()
            )));
        }
        Ok(())
    }

    fn check_payment(&self, payment: &Payment) -> Result<(), WalletError> {
        self.check_address(&payment.to)?;
        self.check_address(&payment.from)?;
        if let Asset::Token(token) = &payment.asset {
            self.check_address(token)?;
        }
        if payment.amount.is_zero() {
            return Err(WalletError::Invalid("an amount of zero".into()));
        }
        if payment.to == payment.from {
            return Err(WalletError::Invalid("a payment to its own sender".into()));
        }
        let key = self.create_wallet(payment.from_index)?;
        if key != payment.from {
            return Err(WalletError::Invalid(format!(
                "key {} is {key}, not {}",
                payment.from_index, payment.from
            )));
        }
        Ok(())
    }

    /// Builds, signs and reads back `payment`: the signed bytes, once they say exactly the
    /// payment (and use `nonce`, where the chain has nonces).
    fn sign_checked(
        &self,
        payment: &Payment,
        metadata: &P::Metadata,
        nonce: Option<u64>,
    ) -> Result<chain::provider::SignedTransaction, WalletError> {
        let chain = self.provider.chain();
        let unsigned = self.provider.build(payment, metadata)?;
        let signatures = self
            .signer
            .sign_payloads(chain, &self.provider.payloads(&unsigned))?;
        let signed = self.provider.combine(unsigned, &signatures)?;
        let parsed = self.provider.parse(&signed)?;
        if !parsed.matches(payment) || parsed.sequence != nonce {
            return Err(WalletError::Mismatch(format!(
                "asked {} {} from {} to {} with nonce {nonce:?}; the bytes say {} {} from {} to \
                 {} with nonce {:?}",
                payment.amount.base_units(),
                payment.asset,
                payment.from,
                payment.to,
                parsed.amount.base_units(),
                parsed.asset,
                parsed.from,
                parsed.to,
                parsed.sequence
            )));
        }
        Ok(signed)
    }
}
