//! What the store reads and writes: row types and the parameter structs of each operation.
//!
//! Parameter structs (`WorkerRegister`, `WorkerHeartbeat`, ...) keep call sites readable and
//! let an operation gain a field without touching every caller. Time is always a parameter,
//! so tests decide what "now" is.

use chrono::{DateTime, Utc};
use domain::{
    Chain, ControlAction, DesiredState, JobState, Name, RetryPolicy, WorkerId, WorkerKind,
    WorkerStatus,
};

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
    /// Jobs became available in this queue (enqueued, retried or the queue resumed).
    Job(Name),
    Unknown,
}

/// One job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub queue: Name,
    pub kind: Name,
    pub args: serde_json::Value,
    pub state: JobState,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts started so far (the running one included).
    pub attempt: i32,
    pub max_attempts: i32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub unique_key: Option<String>,
    /// Not before this time.
    pub run_at: DateTime<Utc>,
    /// The fencing token of the current (or last) claim; every later change must present it.
    pub token: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Every failed attempt: `[{"attempt": n, "at": rfc3339, "error": text}]`.
    pub errors: serde_json::Value,
    /// Times its lease expired and it was taken back.
    pub rescues: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The lease owner of its latest claim (`WORKER_ID:INCARNATION`), kept when it ends: which
    /// worker ran it last. `None` before its first claim.
    pub last_worker: Option<String>,
}

impl JobRow {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(1),
            backoff_base: std::time::Duration::from_millis(
                u64::try_from(self.backoff_base_ms).unwrap_or(0),
            ),
            backoff_max: std::time::Duration::from_millis(
                u64::try_from(self.backoff_max_ms).unwrap_or(0),
            ),
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct JobInsert {
    pub queue: Name,
    pub kind: Name,
    pub args: serde_json::Value,
    pub priority: i16,
    pub run_at: DateTime<Utc>,
    /// `None`: the queue's own policy (`queues retry`), else the defaults (3 attempts,
    /// backoff from 2 s).
    pub retry: Option<RetryPolicy>,
    /// While a job with this key is unfinished in the queue, enqueueing returns it instead.
    pub unique_key: Option<String>,
    pub now: DateTime<Utc>,
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobInserted {
    pub id: i64,
    /// False when an unfinished job with the same unique key already existed (its id is `id`).
    pub inserted: bool,
}

/// Claims up to `limit` available jobs of `queue` for `owner` until `lease_until`.
#[derive(Debug, Clone)]
pub struct JobClaim {
    pub queue: Name,
    pub owner: String,
    pub limit: u32,
    pub lease_until: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Extends the leases of the jobs `owner` is running (by id and claim token) to
/// `lease_until`. Only the jobs named: a job its holder lost track of (a panicked handler, an
/// aborted task) is left to expire and be rescued.
#[derive(Debug, Clone)]
pub struct JobLeaseExtend {
    pub owner: String,
    /// (job id, claim token) of each job to keep.
    pub jobs: Vec<(i64, i64)>,
    pub lease_until: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Completes or cancels a running job, with the token of its claim.
#[derive(Debug, Clone)]
pub struct JobFinish {
    pub id: i64,
    pub token: i64,
    pub now: DateTime<Utc>,
}

/// Records a failed attempt: back to `available` at `retry_at`, or `failed` when `None`.
#[derive(Debug, Clone)]
pub struct JobFail {
    pub id: i64,
    pub token: i64,
    pub error: String,
    pub retry_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// Puts a running job back until `run_at` without using up an attempt.
#[derive(Debug, Clone)]
pub struct JobSnooze {
    pub id: i64,
    pub token: i64,
    pub run_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Takes back running jobs whose lease expired before `now`, or all of `owner`'s.
#[derive(Debug, Clone)]
pub struct JobRescue {
    /// Only this owner's leases, expired or not (its worker is known to be gone).
    pub owner: Option<String>,
    pub limit: u32,
    pub now: DateTime<Utc>,
}

/// Deletes finished jobs beyond the newest `keep_*` per queue, and any finished before
/// `finished_before`.
#[derive(Debug, Clone)]
pub struct JobPrune {
    pub keep_completed: u32,
    pub keep_failed: u32,
    pub finished_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct JobList {
    pub queue: Option<Name>,
    pub state: Option<JobState>,
    /// Only jobs with an id below this one (paging backwards from the newest).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Takes or renews the leadership `name` for `holder` until `until`, if nobody else holds it
/// unexpired.
#[derive(Debug, Clone)]
pub struct LeaderAcquire {
    pub name: String,
    pub holder: String,
    pub until: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// A queue's settings and how many jobs it holds in each state.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub name: Name,
    pub paused: bool,
    pub concurrency_limit: Option<i32>,
    /// Available now.
    pub available: i64,
    /// Available later (delayed, or waiting out a retry backoff).
    pub scheduled: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// When the longest-waiting job became available (its `run_at`).
    pub oldest_available_at: Option<DateTime<Utc>>,
}

/// An API token as listed: never the token itself, nor its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiTokenRow {
    pub id: i64,
    pub name: String,
    pub role: domain::Role,
    /// The token's first characters, enough to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ApiTokenInsert {
    pub name: String,
    pub role: domain::Role,
    /// Lowercase hex SHA-256 of the token.
    pub token_hash: String,
    pub prefix: String,
    pub now: DateTime<Utc>,
}
