//! Builds a worker's job source from its (kind, chain), refusing pairs we do not run.
//!
//! Bitcoin has no consolidation worker: its withdrawal worker spends credited deposits where
//! they lie, so there is nothing to sweep (docs/deposits.md, "Bitcoin: payouts spend deposits
//! where they lie").

use std::sync::Arc;

use domain::{Chain, WorkerKind};

use std::time::Duration;

use crate::job::{JobSource, WorkerFault};
use crate::queue_source::QueueSource;

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

/// What the factory needs to build a worker's job source.
#[derive(Clone)]
pub struct SourceSettings {
    pub backend: Arc<dyn queue::Backend>,
    pub owner: String,
    pub lease: Duration,
    /// The handlers the worker runs: the built-in kinds, and the chain's own (the binary
    /// builds those: `withdrawal.pay` and `withdrawal.reconcile` for a withdrawal worker).
    pub registry: queue::Registry,
}

/// Builds the job source for a worker: the queue named after its chain and kind
/// (`tron.withdrawal`), with the handlers it runs.
pub async fn build_job_source(
    spec: WorkerSpec,
    settings: SourceSettings,
) -> Result<Arc<dyn JobSource>, WorkerFault> {
    validate(spec).map_err(|error| WorkerFault(error.to_string()))?;
    let config = queue::RunnerConfig {
        queue: queue::queue_for(spec.kind, spec.chain),
        owner: settings.owner,
        lease: settings.lease,
    };
    let source = QueueSource::open(settings.backend, settings.registry, config).await?;
    Ok(Arc::new(source))
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
