//! The attempt log of the chain adapters ([`chain::attempts::AttemptLog`]) over the store's
//! payout attempts and UTXO reservations (`store::attempts`, migration 0009): the chain
//! crates describe what they need without depending on the store, and this is where the two
//! meet. Each call is one store transaction, stamped with the current time.

use chain::attempts::{Attempt, AttemptError, AttemptLog, AttemptNew, AttemptState, Outpoint};
use chrono::Utc;
use domain::Chain;
use store::{Store, StoreError};

/// See the module's documentation.
#[derive(Clone)]
pub struct StoreAttempts {
    store: Store,
}

impl std::fmt::Debug for StoreAttempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreAttempts").finish_non_exhaustive()
    }
}

impl StoreAttempts {
    pub fn new(store: Store) -> Self {
        StoreAttempts { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn log_error(error: StoreError) -> AttemptError {
    match error {
        StoreError::Conflict(reason) => AttemptError::Conflict(reason),
        StoreError::Stale(reason) => AttemptError::Stale(reason),
        StoreError::Claimed { member, payout } => AttemptError::Claimed { member, payout },
        other => AttemptError::Failed {
            retriable: other.is_transient(),
            message: other.to_string(),
        },
    }
}

fn from_store(outpoint: store::Outpoint) -> Outpoint {
    Outpoint {
        txid: outpoint.txid,
        vout: outpoint.vout,
    }
}

fn attempt(row: store::Attempt) -> Attempt {
    Attempt {
        payout: row.payout,
        sender: row.sender,
        txid: row.txid,
        raw: row.raw,
        inputs: row.inputs.into_iter().map(from_store).collect(),
        replaces: row.replaces,
        state: match row.state {
            store::AttemptState::Live => AttemptState::Live,
            store::AttemptState::Landed => AttemptState::Landed,
            store::AttemptState::Dead => AttemptState::Dead,
            store::AttemptState::Replaced => AttemptState::Replaced,
        },
    }
}

impl AttemptLog for StoreAttempts {
    async fn reserved(&self, chain: Chain) -> Result<Vec<(Outpoint, String)>, AttemptError> {
        Ok(self
            .store
            .utxo_reserved(chain)
            .await
            .map_err(log_error)?
            .into_iter()
            .map(|(outpoint, payout)| (from_store(outpoint), payout))
            .collect())
    }

    async fn record(&self, new: &AttemptNew<'_>) -> Result<(), AttemptError> {
        let inputs: Vec<store::Outpoint> = new
            .inputs
            .iter()
            .map(|outpoint| store::Outpoint {
                txid: outpoint.txid.clone(),
                vout: outpoint.vout,
            })
            .collect();
        self.store
            .attempt_store(&store::AttemptNew {
                chain: new.chain,
                payout: new.payout,
                sender: new.sender,
                txid: new.txid,
                raw: new.raw,
                expires_at: None,
                inputs: &inputs,
                members: new.members,
                replaces: new.replaces,
                now: Utc::now(),
            })
            .await
            .map_err(log_error)
    }

    async fn live(&self, chain: Chain, sender: Option<&str>) -> Result<Vec<Attempt>, AttemptError> {
        Ok(self
            .store
            .attempts_live(chain, sender)
            .await
            .map_err(log_error)?
            .into_iter()
            .map(attempt)
            .collect())
    }

    async fn attempts_of(&self, chain: Chain, payout: &str) -> Result<Vec<Attempt>, AttemptError> {
        Ok(self
            .store
            .attempts_of(chain, payout)
            .await
            .map_err(log_error)?
            .into_iter()
            .map(attempt)
            .collect())
    }

    async fn landed(&self, chain: Chain, txid: &str) -> Result<(), AttemptError> {
        self.store
            .attempt_landed(chain, txid, Utc::now())
            .await
            .map_err(log_error)
    }

    async fn dead(&self, chain: Chain, txid: &str) -> Result<(), AttemptError> {
        self.store
            .attempt_dead(chain, txid, Utc::now())
            .await
            .map_err(log_error)
    }

    async fn checked(&self, chain: Chain, payout: &str) -> Result<(), AttemptError> {
        self.store
            .attempt_checked(chain, payout, Utc::now())
            .await
            .map_err(log_error)
    }
}
