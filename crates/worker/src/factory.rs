//! Builds a worker's job source from its (kind, chain), refusing pairs we do not run.
//!
//! Bitcoin has no consolidation worker: payouts spend deposit outputs directly, so there is
//! nothing to sweep (see issue on Bitcoin payouts).

use std::sync::Arc;

use domain::{Chain, WorkerKind};

use crate::job::{JobSource, NoJobSource};

/// Every (kind, chain) a worker can be built for, in the order `coinsensei up` starts them.
pub const SUPPORTED: &[(WorkerKind, Chain)] = &[
    (WorkerKind::Withdrawal, Chain::Tron),
    (WorkerKind::Deposit, Chain::Tron),
    (WorkerKind::Consolidation, Chain::Tron),
    (WorkerKind::Withdrawal, Chain::Ethereum),
    (WorkerKind::Deposit, Chain::Ethereum),
    (WorkerKind::Consolidation, Chain::Ethereum),
    (WorkerKind::Withdrawal, Chain::Bitcoin),
    (WorkerKind::Deposit, Chain::Bitcoin),
];

/// A worker to build: what it does, on which chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSpec {
    pub kind: WorkerKind,
    pub chain: Chain,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no {kind} worker for {chain}; supported: {supported}")]
pub struct FactoryError {
    pub kind: WorkerKind,
    pub chain: Chain,
    pub supported: String,
}

pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|(kind, chain)| format!("{kind}/{chain}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that the pair is supported.
pub fn validate(spec: WorkerSpec) -> Result<(), FactoryError> {
    if SUPPORTED.contains(&(spec.kind, spec.chain)) {
        Ok(())
    } else {
        Err(FactoryError {
            kind: spec.kind,
            chain: spec.chain,
            supported: supported_list(),
        })
    }
}

/// Builds the job source for a worker. Until the job queue lands, every supported worker runs
/// the idle source; the queue issue replaces this body, not its callers.
pub async fn build_job_source(spec: WorkerSpec) -> Result<Arc<dyn JobSource>, FactoryError> {
    validate(spec)?;
    Ok(Arc::new(NoJobSource))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unsupported_pairs_naming_the_supported_ones() {
        let error = validate(WorkerSpec {
            kind: WorkerKind::Consolidation,
            chain: Chain::Bitcoin,
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("no consolidation worker for bitcoin; supported: withdrawal/tron"),
            "{message}"
        );
        assert!(message.contains("deposit/bitcoin"));
        for (kind, chain) in SUPPORTED {
            assert!(
                validate(WorkerSpec {
                    kind: *kind,
                    chain: *chain
                })
                .is_ok()
            );
        }
        assert_eq!(SUPPORTED.len(), 8);
    }
}
