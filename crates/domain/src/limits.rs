//! Every named bound of the system in one place (DESIGN.md §2.8: everything is bounded).
//!
//! Keeping the limits together makes them easy to review and keeps magic numbers out of
//! the code that enforces them.

use std::time::Duration;

/// Longest worker id, as the seed's `worker_registry.id varchar(50)`.
pub const WORKER_ID_LEN_MAX: usize = 50;
/// Longest worker display name, as the seed's `worker_registry.name varchar(100)`.
pub const WORKER_NAME_LEN_MAX: usize = 100;
/// A worker's `last_error` is cut to this many bytes (at a character boundary) before it is stored.
pub const LAST_ERROR_LEN_MAX: usize = 2_000;
/// Longest audit actor, action or target.
pub const AUDIT_FIELD_LEN_MAX: usize = 200;

/// Default interval between two heartbeats of a worker.
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// Heartbeats more often than this would only load the store.
pub const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Heartbeats rarer than this would make dead-worker detection useless.
pub const HEARTBEAT_INTERVAL_MAX: Duration = Duration::from_secs(300);
/// A worker whose last heartbeat is older than this many heartbeat intervals is `lost`.
pub const LOST_AFTER_INTERVALS_DEFAULT: u32 = 3;

/// How long a stopping worker waits for its in-flight work before it gives up on it.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// First wait after a worker's error, doubled (with jitter) up to the maximum.
pub const ERROR_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two recovery tries of a worker in `error`.
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Jobs one worker runs at once unless configured otherwise (the seed's BullMQ concurrency).
pub const WORKER_CONCURRENCY_DEFAULT: u32 = 5;
/// Upper bound on a worker's configured concurrency.
pub const WORKER_CONCURRENCY_MAX: u32 = 256;

/// Longest a worker waits for one store call before treating the database as unavailable.
pub const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Page size of lists unless the caller asks for another.
pub const LIST_LIMIT_DEFAULT: u32 = 100;
/// Largest page a list returns.
pub const LIST_LIMIT_MAX: u32 = 1_000;
/// Most workers one reaper pass marks lost; the next pass takes the rest.
pub const REAP_BATCH_MAX: u32 = 1_000;

/// First wait before the supervisor restarts a dead child process.
pub const RESPAWN_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait before the supervisor restarts a child that keeps dying.
pub const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long is considered healthy again and its backoff is reset.
pub const RESPAWN_STABLE_AFTER: Duration = Duration::from_secs(60);
