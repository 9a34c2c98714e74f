//! The worker side of CoinSensei: the runtime every worker runs on (registration, heartbeats,
//! desired state, drain and recovery), the factory that builds a worker from (kind, chain),
//! the reaper that notices dead workers, and the local supervisor behind `coinsensei up`.

pub mod backoff;
pub mod factory;
pub mod job;
pub mod queue_source;
pub mod reaper;
pub mod runtime;
pub mod supervisor;

pub use factory::{FactoryError, SUPPORTED, SourceSettings, WorkerSpec, build_job_source};
pub use job::{JobSource, NoJobSource, Work, WorkerFault};
pub use reaper::{Reaper, ReaperConfig};
pub use runtime::{RuntimeConfig, RuntimeExit, SourceContext, WorkerRuntime};
pub use supervisor::{ChildSpec, Supervisor, SupervisorConfig};
