//! What the store reads and writes: row types and the parameter structs of each operation.
//!
//! Parameter structs (`WorkerRegister`, `WorkerHeartbeat`, ...) keep call sites readable and
//! let an operation gain a field without touching every caller. Time is always a parameter,
//! so tests decide what "now" is.

use chrono::{DateTime, Utc};
use domain::{Chain, ControlAction, DesiredState, WorkerId, WorkerKind, WorkerStatus};

/// One row of the worker registry.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: WorkerId,
    pub name: String,
    pub kind: WorkerKind,
    pub chain: Chain,
    pub status: WorkerStatus,
    pub desired_state: DesiredState,
    pub pid: Option<i32>,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub version: Option<String>,
    pub config: serde_json::Value,
    /// Random per process; heartbeats and status changes of any other process are refused.
    pub incarnation: Option<String>,
    /// Bumped by every restart an operator asks for.
    pub generation: i64,
    /// The generation the running process has applied; behind `generation` while a restart is pending.
    pub applied_generation: i64,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub rss_bytes: Option<i64>,
    pub in_flight: i64,
    pub processed_total: i64,
    pub failed_total: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A process announcing itself as a worker. Creates the row, or takes it over under a new
/// incarnation; the desired state and generation an operator set are kept.
#[derive(Debug, Clone)]
pub struct WorkerRegister {
    pub id: WorkerId,
    pub name: String,
    pub kind: WorkerKind,
    pub chain: Chain,
    pub pid: Option<i32>,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub version: Option<String>,
    pub config: serde_json::Value,
    pub incarnation: String,
    pub now: DateTime<Utc>,
}

/// A heartbeat: proof of life plus the process's resource use and counters.
#[derive(Debug, Clone)]
pub struct WorkerHeartbeat {
    pub id: WorkerId,
    pub incarnation: String,
    pub rss_bytes: Option<i64>,
    pub in_flight: i64,
    pub processed_total: i64,
    pub failed_total: i64,
    pub now: DateTime<Utc>,
}

/// A status change reported by the worker itself, applied only if the status is still `from`.
#[derive(Debug, Clone)]
pub struct WorkerStatusSet {
    pub id: WorkerId,
    pub incarnation: String,
    pub from: WorkerStatus,
    pub to: WorkerStatus,
    /// Written to `last_error` when moving to `error`; other moves clear it unless `keep_error`.
    pub error: Option<String>,
    /// Record that the process has applied this generation (after a restart).
    pub applied_generation: Option<i64>,
    pub now: DateTime<Utc>,
}

/// An operator's start / stop / restart. Written together with its audit entry.
#[derive(Debug, Clone)]
pub struct WorkerControl {
    pub id: WorkerId,
    pub action: ControlAction,
    pub actor: String,
    pub now: DateTime<Utc>,
}

/// Marks live workers whose last heartbeat is older than `heartbeat_before` as `lost`.
#[derive(Debug, Clone)]
pub struct WorkerReap {
    pub heartbeat_before: DateTime<Utc>,
    pub limit: u32,
    pub actor: String,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct WorkerList {
    pub chain: Option<Chain>,
    pub kind: Option<WorkerKind>,
    pub status: Option<WorkerStatus>,
    pub limit: u32,
    pub offset: u32,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct AuditInsert {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditList {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    /// Only entries with an id below this one (for paging backwards from the newest).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// What the change feed saw. `Unknown` means "something may have changed": re-read what you
/// care about. It is sent after a reconnect, when notifications may have been lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Worker(WorkerId),
    Unknown,
}
