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

/// Largest concurrency limit a queue can be given (`queues limit`).
pub const QUEUE_CONCURRENCY_MAX: u32 = 100_000;

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

/// Longest queue or job kind name.
pub const NAME_LEN_MAX: usize = 100;
/// Attempts a job gets unless its queue or itself says otherwise (the seed's BullMQ setting).
pub const JOB_ATTEMPTS_DEFAULT: u32 = 3;
/// Most attempts a job may be given.
pub const JOB_ATTEMPTS_MAX: u32 = 100;
/// First retry waits about this long (the seed's BullMQ setting), doubling after each failure.
pub const JOB_BACKOFF_BASE_DEFAULT: Duration = Duration::from_secs(2);
/// Longest wait between two attempts of a job.
pub const JOB_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(3600);
/// Largest JSON arguments of one job.
pub const JOB_ARGS_BYTES_MAX: usize = 64 * 1024;
/// Longest unique key of a job.
pub const JOB_UNIQUE_KEY_LEN_MAX: usize = 200;
/// Most jobs one bulk enqueue takes.
pub const JOB_ENQUEUE_BATCH_MAX: usize = 10_000;
/// Most jobs one claim returns.
pub const JOB_CLAIM_BATCH_MAX: u32 = 1_000;
/// Completed jobs kept per queue (the seed's BullMQ `removeOnComplete: 100`).
pub const JOB_KEEP_COMPLETED_DEFAULT: u32 = 100;
/// Failed jobs kept per queue (the seed's BullMQ `removeOnFail: 50`).
pub const JOB_KEEP_FAILED_DEFAULT: u32 = 50;
/// How long a claimed job stays leased unless its worker extends the lease (it does so every
/// third of this). A dead worker's jobs run again within about this long (sooner when the
/// reaper marks the worker lost first).
pub const JOB_LEASE_DEFAULT: Duration = Duration::from_secs(6);
pub const JOB_LEASE_MIN: Duration = Duration::from_millis(300);
pub const JOB_LEASE_MAX: Duration = Duration::from_secs(3600);
/// Most expired leases one rescue pass takes back.
pub const JOB_RESCUE_BATCH_MAX: u32 = 1_000;

/// Minutes the dashboard's charts keep per worker and per queue: each minute's samples (taken
/// at the heartbeat interval) are folded into one, so a day is 1,440 of them.
pub const HISTORY_MINUTES_MAX: usize = 1_440;
/// The shortest interval between two chart samples, whatever the heartbeat interval.
pub const HISTORY_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// Workers and queues the chart history follows at most, together (queues first); more are
/// not charted. With [`HISTORY_MINUTES_MAX`] minutes of at most 72 bytes each, the history
/// holds about 26 MB at most however large the fleet.
pub const HISTORY_SERIES_MAX: usize = 250;
/// Queues one page's charts draw at most: the deepest ones.
pub const HISTORY_QUEUES_CHARTED_MAX: usize = 10;
/// The chart sampler stops (and forgets its history) when no page with charts has been
/// looked at for this long; the next one starts it again.
pub const HISTORY_IDLE_STOP: Duration = Duration::from_secs(10 * 60);

/// Live dashboard pages (event streams) open at once per process, apart from the admin API's
/// own event streams, so dashboard tabs never take the API consumers' slots.
pub const DASHBOARD_STREAMS_MAX: usize = 32;
/// Live dashboard pages one session may have open at once; one more is refused (429).
pub const DASHBOARD_STREAMS_PER_SESSION_MAX: usize = 4;
/// The largest form the dashboard reads (its forms hold a token or nothing).
pub const DASHBOARD_FORM_BYTES_MAX: usize = 16 * 1024;
/// New audit entries one look of a live audit page sends at most (a burst beyond it shows
/// on reload).
pub const DASHBOARD_AUDIT_PER_LOOK_MAX: u32 = 100;

/// Longest a client may take to send a request's head (request line and headers), and
/// longest a kept-alive connection may sit idle before its next one; then it is closed.
/// Both are one timer in hyper, started whenever a head is awaited.
pub const HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's body once its head is in; then 408 and the
/// connection is closed, before anything of the request is applied.
pub const HTTP_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP connections open at once; more wait in the listen backlog until one closes.
pub const HTTP_CONNECTIONS_MAX: usize = 4_096;
/// File descriptors kept out of the HTTP connections' reach whatever the process's limit,
/// for the database pool, the change feed, logs and the workers' own work.
pub const HTTP_DESCRIPTORS_RESERVED: usize = 256;
/// Event streams (API and live dashboard pages together) one token may hold open at once;
/// one more is refused (429), so one client cannot take every stream slot of the process.
pub const EVENT_STREAMS_PER_TOKEN_MAX: usize = 8;

/// A worker's resident memory limit for its health check (`health_memory_limit_mb`).
pub const HEALTH_MEMORY_LIMIT_DEFAULT: u64 = 512 * 1024 * 1024;
/// The window the job-progress and error-rate checks look over (`health_window`).
pub const HEALTH_WINDOW_DEFAULT: Duration = Duration::from_secs(60);
/// Readings of one worker the health monitor keeps at most (older ones fall out of the
/// window anyway; this bounds a monitor called far more often than the interval).
pub const HEALTH_SAMPLES_MAX: usize = 120;
/// Workers the health monitor reads per round at most; beyond it the rest go unjudged
/// (and the report says so).
pub const HEALTH_WORKERS_MAX: u32 = 10_000;
/// A hot wallet balance read longer ago than this is unhealthy: its worker reads every 15 s.
pub const HEALTH_BALANCE_MAX_AGE_DEFAULT: Duration = Duration::from_secs(120);
/// A withdrawal this long in one unfinished state is stuck (`health_withdrawal_stuck_after`).
pub const HEALTH_WITHDRAWAL_STUCK_AFTER_DEFAULT: Duration = Duration::from_secs(30 * 60);
/// A chain's node whose newest block is older than this is behind (warning; twice,
/// unhealthy), by chain: about 10 TRON blocks, 5 Ethereum blocks, 6 Bitcoin blocks.
pub const HEALTH_SYNC_LAG_TRON_DEFAULT: Duration = Duration::from_secs(30);
pub const HEALTH_SYNC_LAG_ETHEREUM_DEFAULT: Duration = Duration::from_secs(60);
pub const HEALTH_SYNC_LAG_BITCOIN_DEFAULT: Duration = Duration::from_secs(60 * 60);
/// A bitcoind more blocks than this behind the headers it knows is still syncing.
pub const HEALTH_HEADERS_BEHIND_MAX: u64 = 6;
/// The longest a probe of a chain's node may take; then the node counts as unreachable.
pub const HEALTH_NODE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// A chain's node unhealthy this long has its chain's withdrawal queue paused.
pub const HEALTH_PAUSE_AFTER_DEFAULT: Duration = Duration::from_secs(30);
/// How long a worker stays unhealthy before the control plane restarts it
/// (`health_restart_after`).
pub const HEALTH_RESTART_AFTER_DEFAULT: Duration = Duration::from_secs(5 * 60);

/// The roadmap's autoscaling policy, the defaults of an `[[autoscale]]` entry.
pub const AUTOSCALE_MIN_WORKERS_DEFAULT: u32 = 1;
pub const AUTOSCALE_MAX_WORKERS_DEFAULT: u32 = 10;
pub const AUTOSCALE_UP_DEPTH_DEFAULT: u64 = 50;
pub const AUTOSCALE_DOWN_DEPTH_DEFAULT: u64 = 5;
pub const AUTOSCALE_UP_STEP_DEFAULT: u32 = 2;
pub const AUTOSCALE_DOWN_STEP_DEFAULT: u32 = 1;
pub const AUTOSCALE_COOLDOWN_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// Most worker processes one autoscaled queue may have (`max_workers` is refused above it).
pub const AUTOSCALE_WORKERS_MAX: u32 = 100;
/// How often the autoscaler reads queue depths.
pub const AUTOSCALE_INTERVAL: Duration = Duration::from_secs(1);
