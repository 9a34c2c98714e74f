//! Nonce allocation for sending addresses: never two transactions with one nonce, and no gap
//! left behind by a process that reserved a nonce and died before signing with it.
//!
//! `nonce_reserve` hands out, in one transaction under the address's counter lock, either the
//! lowest expired unbound reservation at or above the node's pending count (a gap to fill) or
//! the next fresh nonce (at least the node's pending count, so transactions sent from
//! elsewhere are respected). `nonce_bind` records the txid signed with a reservation (only by
//! its holder, before anyone else took it over); `nonce_release` gives back one that will not
//! be used.

use chrono::{DateTime, Utc};
use domain::Chain;

use crate::{Store, StoreError};

macro_rules! on_dialect {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call,
            Store::Sqlite($store) => $call,
        }
    };
}

/// A request for the next nonce of `address` on `chain`.
#[derive(Debug, Clone)]
pub struct NonceReserve {
    pub chain: Chain,
    /// The sending address in its canonical form.
    pub address: String,
    /// The node's count of the address's transactions, pending ones included.
    pub node_pending: u64,
    /// Who reserves (a worker id and incarnation): only it may bind or release.
    pub holder: String,
    /// Until when the reservation holds without a bound transaction.
    pub lease_until: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

fn validate(address: &str, holder: &str) -> Result<(), StoreError> {
    if address.is_empty() || address.len() > 100 {
        return Err(StoreError::Invalid("an address is 1 to 100 bytes".into()));
    }
    if holder.is_empty() || holder.len() > 200 {
        return Err(StoreError::Invalid("a holder is 1 to 200 bytes".into()));
    }
    Ok(())
}

fn validate_tx(txid: &str, raw: &[u8]) -> Result<(), StoreError> {
    if txid.is_empty() || txid.len() > 100 {
        return Err(StoreError::Invalid("a txid is 1 to 100 bytes".into()));
    }
    if raw.is_empty() || raw.len() > RAW_TX_BYTES_MAX {
        return Err(StoreError::Invalid(format!(
            "a signed transaction is 1 to {RAW_TX_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

/// The largest signed transaction kept (a node's own limit is 128 KiB).
pub const RAW_TX_BYTES_MAX: usize = 128 * 1024;

/// A nonce bound to a signed transaction the node has not mined yet (by its latest count).
#[derive(Clone, PartialEq, Eq)]
pub struct UnminedNonce {
    pub nonce: u64,
    pub txid: String,
    pub raw: Vec<u8>,
}

impl std::fmt::Debug for UnminedNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnminedNonce")
            .field("nonce", &self.nonce)
            .field("txid", &self.txid)
            .field("bytes", &self.raw.len())
            .finish()
    }
}

pub(crate) fn to_i64(nonce: u64) -> Result<i64, StoreError> {
    i64::try_from(nonce).map_err(|_| StoreError::Invalid(format!("nonce {nonce} is out of range")))
}

impl Store {
    pub async fn nonce_reserve(&self, reserve: &NonceReserve) -> Result<u64, StoreError> {
        validate(&reserve.address, &reserve.holder)?;
        to_i64(reserve.node_pending)?;
        if reserve.lease_until <= reserve.now {
            return Err(StoreError::Invalid(
                "a reservation must last a while".into(),
            ));
        }
        on_dialect!(self, store => store.nonce_reserve(reserve).await)
    }

    /// Binds reservation `nonce` to the transaction signed with it, keeping its bytes (sent
    /// again if the node drops it: [`Store::nonce_unmined`]). Call it before broadcasting.
    /// `Stale` when `holder` no longer holds it (its lease ran out and the nonce went to
    /// someone else), or it is bound.
    pub async fn nonce_bind(
        &self,
        chain: Chain,
        address: &str,
        nonce: u64,
        holder: &str,
        txid: &str,
        raw: &[u8],
    ) -> Result<(), StoreError> {
        validate(address, holder)?;
        validate_tx(txid, raw)?;
        let bound = on_dialect!(self, store => store.nonce_bind(chain, address, to_i64(nonce)?, holder, txid, raw).await)?;
        if bound {
            Ok(())
        } else {
            Err(StoreError::Stale(format!(
                "nonce {nonce} of {address} is not held by {holder} (bound, or taken over)"
            )))
        }
    }

    /// Gives back a reservation that will not be signed with: the next reservation gets it.
    pub async fn nonce_release(
        &self,
        chain: Chain,
        address: &str,
        nonce: u64,
        holder: &str,
    ) -> Result<(), StoreError> {
        validate(address, holder)?;
        let released = on_dialect!(self, store => store.nonce_release(chain, address, to_i64(nonce)?, holder).await)?;
        if released {
            Ok(())
        } else {
            Err(StoreError::Stale(format!(
                "nonce {nonce} of {address} is not held by {holder} (bound, or taken over)"
            )))
        }
    }

    /// Moves bound nonce `nonce` from `old_txid` to its replacement (same nonce, higher fees),
    /// keeping the replacement's bytes. `Stale` when the nonce is not bound to `old_txid`.
    pub async fn nonce_replace(
        &self,
        chain: Chain,
        address: &str,
        nonce: u64,
        old_txid: &str,
        txid: &str,
        raw: &[u8],
    ) -> Result<(), StoreError> {
        validate(address, "replacement")?;
        validate_tx(txid, raw)?;
        let replaced = on_dialect!(self, store => store.nonce_replace(chain, address, to_i64(nonce)?, old_txid, txid, raw).await)?;
        if replaced {
            Ok(())
        } else {
            Err(StoreError::Stale(format!(
                "nonce {nonce} of {address} is not bound to {old_txid}"
            )))
        }
    }

    /// The bound nonces of `address` at or above the node's latest (mined) count, oldest
    /// first, with their signed bytes: the transactions to look for, and to send again if
    /// the node no longer knows them (a restarted node, an evicted transaction). Rows below
    /// that count are used for good and are deleted.
    pub async fn nonce_unmined(
        &self,
        chain: Chain,
        address: &str,
        node_latest: u64,
    ) -> Result<Vec<UnminedNonce>, StoreError> {
        validate(address, "reconcile")?;
        let rows = on_dialect!(self, store => store.nonce_unmined(chain, address, to_i64(node_latest)?).await)?;
        rows.into_iter()
            .map(|(nonce, txid, raw)| {
                Ok(UnminedNonce {
                    nonce: u64::try_from(nonce)
                        .map_err(|_| crate::corrupt("nonce_use.nonce", nonce))?,
                    txid,
                    raw,
                })
            })
            .collect()
    }

    /// Frees bound nonce `nonce` of a transaction the node refused for good (it can never be
    /// mined): the next reservation gets the nonce, so no gap stays behind. Only for a
    /// definite refusal; a transaction that may be out somewhere keeps its nonce.
    pub async fn nonce_unbind(
        &self,
        chain: Chain,
        address: &str,
        nonce: u64,
        txid: &str,
    ) -> Result<(), StoreError> {
        validate(address, "unbind")?;
        let freed = on_dialect!(self, store => store.nonce_unbind(chain, address, to_i64(nonce)?, txid).await)?;
        if freed {
            Ok(())
        } else {
            Err(StoreError::Stale(format!(
                "nonce {nonce} of {address} is not bound to {txid}"
            )))
        }
    }
}
