//! The only crate that speaks SQL. One contract, two dialects: Postgres for production and
//! SQLite as the embedded default, pinned together by the conformance suite in
//! `tests/conformance.rs`, which runs every operation against both.
//!
//! Every state change is a compare-and-set on the previous state (DESIGN.md §2.4), and every
//! operator action is written together with its audit entry in one transaction.

mod approvals;
mod attempts;
mod audit;
mod changes;
mod deposits;
mod destinations;
mod dialect;
mod error;
mod jobs;
mod ledger;
mod model;
mod nonces;
mod outbox;
mod payout_stats;
mod policies;
mod postgres;
mod reviews;
mod scans;
mod sessions;
mod sqlite;
mod sweeps;
mod tokens;
mod usage;
mod withdrawals;
mod workers;

use std::time::Duration;

use domain::DesiredState;

pub use approvals::{Approval, DECISION_REASON_LEN_MAX, WithdrawalDecided, WithdrawalDecision};
pub use attempts::{
    ATTEMPT_INPUTS_MAX, ATTEMPT_MEMBERS_MAX, ATTEMPTS_LIVE_MAX, Attempt, AttemptNew, AttemptState,
    Outpoint,
};
pub use changes::ChangeFeed;
pub use deposits::{
    DepositAddressInsert, DepositAddressInserted, DepositAddressList, DepositAddressRow,
    DepositList, DepositView,
};
pub use destinations::{
    DESTINATION_LABEL_LEN_MAX, DESTINATION_REFERENCE_LEN_MAX, DestinationInsert, DestinationList,
    DestinationRow,
};
pub use error::StoreError;
pub use jobs::{StoreTx, validate_job_batch, validate_retry};
pub use ledger::{
    LEDGER_REASON_LEN_MAX, LedgerAdjustmentInsert, LedgerAdjustmentRow, LedgerCheck, LedgerDeposit,
    LedgerDepositSpend, LedgerDirection, LedgerPage, LedgerWithdrawal,
};
pub use model::*;
pub use nonces::{
    NONCE_TXS_MAX, NONCES_UNSETTLED_MAX, NonceBind, NonceFees, NonceHeld, NonceReplace,
    NonceReserve, NonceSettle, NonceSettlement, NonceTx, NonceTxNew, NonceUnsettled,
    RAW_TX_BYTES_MAX,
};
pub use outbox::{
    CLAIM_MAX, DeliveryCount, DeliveryList, DeliveryOutcome, DeliveryRow, DeliveryState,
    ENDPOINT_NAME_LEN_MAX, EventInsert, EventList, EventRow, REPLAY_MAX, ReplaySelect,
    WebhookSubscription,
};
pub use payout_stats::{COMPLETION_TIMES_MAX, HotWalletBalance, PayoutCounts};
pub use policies::PolicyOverride;
pub use reviews::{
    REVIEW_JOB_KIND, REVIEW_REASON_LEN_MAX, ReviewAction, ReviewApply, ReviewPaid, ReviewRequest,
    ReviewRow, ReviewState, review_job, validate_review_reason,
};
pub use scans::{
    DEPOSIT_REASON_LEN_MAX, DepositInsert, DepositRow, DepositState, Rollback,
    SCAN_BLOCK_DEPOSITS_MAX, SCAN_BLOCKS_KEPT, SCAN_COMMIT_BLOCKS_MAX, SCAN_COMMIT_DEPOSITS_MAX,
    ScannedBlock,
};
pub use sessions::{SessionInsert, SessionRow};
pub use sweeps::{
    EnergySource, ReclaimState, SWEEP_ERROR_LEN_MAX, SWEEPS_LIST_MAX, SweepAdvance, SweepEnergy,
    SweepInsert, SweepInserted, SweepKind, SweepList, SweepRow, SweepState, SweepStats,
};
pub use usage::{USAGE_SCOPE_LEN_MAX, UsageLimit};
pub use withdrawals::{
    DestinationRule, WithdrawalCreate, WithdrawalCreated, WithdrawalList, WithdrawalRow,
    WithdrawalScan, WithdrawalTransition, parse_round_key, payout_key, round_key,
};

/// Connection settings with safe defaults; see `coinsensei.example.toml`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// How often a SQLite change feed checks the database for other processes' writes.
    pub sqlite_change_poll_interval: Duration,
    /// Create a missing SQLite file (and its directory). Off for commands that only read or
    /// act on an existing system, so a mistyped path is an error instead of a new database.
    pub create_if_missing: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            sqlite_change_poll_interval: Duration::from_millis(25),
            create_if_missing: true,
        }
    }
}

/// A connected store. Cloning is cheap and shares the pool.
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "a handful of stores per process; boxing buys nothing"
)]
pub enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call,
            Store::Sqlite($store) => $call,
        }
    };
}

/// Returns the URL with any password replaced by `***`, fit for messages and logs: the one
/// in `user:password@` and any query parameter whose name contains "password" (libpq's
/// `password`, `sslpassword`).
pub fn redact_url(database_url: &str) -> String {
    let is_secret = |key: &str| key.to_ascii_lowercase().contains("password");
    match url::Url::parse(database_url) {
        Ok(mut parsed) => {
            let secret_query = parsed.query_pairs().any(|(key, _)| is_secret(&key));
            if parsed.password().is_none() && !secret_query {
                return database_url.to_string();
            }
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if secret_query {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if is_secret(&key) {
                            "***".into()
                        } else {
                            value.into_owned()
                        };
                        (key.into_owned(), value)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL we can parse: do not risk echoing a secret. Keep the host part only.
        Err(_) => {
            let tail = database_url.rsplit('@').next().unwrap_or_default();
            let tail = tail.split('?').next().unwrap_or_default();
            format!("…@{tail}")
        }
    }
}

impl Store {
    /// Connects to `sqlite://PATH` (created if missing) or `postgres://…`. Does not migrate.
    pub async fn connect(database_url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            Ok(Store::Postgres(
                postgres::PgStore::connect(database_url, options).await?,
            ))
        } else if database_url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                sqlite::SqliteStore::connect(database_url, options).await?,
            ))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(database_url)))
        }
    }

    pub fn dialect(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the migrations this build knows and the database lacks.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self, store => store.migrate().await)
    }

    /// How many of this build's migrations the database lacks (0 when current).
    pub async fn migrations_pending(&self) -> Result<usize, StoreError> {
        dispatch!(self, store => store.migrations_pending().await)
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, store => store.ping().await)
    }

    pub async fn close(&self) {
        dispatch!(self, store => store.close().await)
    }

    /// A feed of worker changes: Postgres LISTEN/NOTIFY, or SQLite's data version polled on
    /// a dedicated connection. Notifications only make things fast; readers re-read the rows.
    pub async fn change_feed(&self) -> Result<ChangeFeed, StoreError> {
        dispatch!(self, store => store.change_feed().await)
    }
}

pub(crate) fn validate_audit(insert: &AuditInsert) -> Result<(), StoreError> {
    use domain::limits::AUDIT_FIELD_LEN_MAX;
    for (name, value) in [
        ("actor", &insert.actor),
        ("action", &insert.action),
        ("target", &insert.target),
    ] {
        if value.is_empty() || value.len() > AUDIT_FIELD_LEN_MAX {
            return Err(StoreError::Invalid(format!(
                "audit {name} must be 1 to {AUDIT_FIELD_LEN_MAX} bytes"
            )));
        }
        domain::check_text(name, value, domain::Controls::None)
            .map_err(|error| StoreError::Invalid(format!("audit {error}")))?;
    }
    if json_has_nul(&insert.details) {
        return Err(StoreError::Invalid(
            "audit details hold a NUL character (\\u0000), which no store takes".into(),
        ));
    }
    Ok(())
}

/// Whether a JSON value holds a NUL character in a string or a key: Postgres refuses it in
/// `jsonb` (SQLite would keep it), so every store refuses it first and the two agree.
pub(crate) fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || json_has_nul(value)),
        _ => false,
    }
}

/// Cuts an error message to the stored limit at a character boundary.
/// An error message cut to the stored maximum at a character boundary.
pub fn truncate_error_text(message: &str) -> String {
    truncate_error(message)
}

pub(crate) fn truncate_error(message: &str) -> String {
    let max = domain::limits::LAST_ERROR_LEN_MAX;
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

/// The audit details of a control action.
pub(crate) fn control_details(
    before: &WorkerRow,
    desired: DesiredState,
    generation: i64,
) -> serde_json::Value {
    serde_json::json!({
        "desired_state": {"from": before.desired_state.as_str(), "to": desired.as_str()},
        "generation": generation,
        "status": before.status.as_str(),
    })
}

pub(crate) fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

pub(crate) fn migrations(
    dialect_sql: &'static [(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let migrations = dialect_sql
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                (*description).into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// The audit entry the reaper writes for each worker it marks lost.
pub(crate) fn lost_audit(
    reap: &WorkerReap,
    worker: &WorkerRow,
    status_before: &str,
) -> AuditInsert {
    AuditInsert {
        actor: reap.actor.clone(),
        action: "worker.lost".into(),
        target: format!("worker:{}", worker.id),
        details: serde_json::json!({
            "status_before": status_before,
            "last_heartbeat": worker.last_heartbeat.map(|at| at.to_rfc3339()),
            "pid": worker.pid,
            "host": worker.host,
        }),
        now: reap.now,
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_every_password_and_nothing_else() {
        for (url, expected) in [
            (
                "postgres://u:s3cret@db:5432/x",
                "postgres://u:***@db:5432/x",
            ),
            (
                "postgres://u@db/x?password=s3cret&sslmode=require",
                "postgres://u@db/x?password=***&sslmode=require",
            ),
            (
                "postgres://u:a@db/x?sslpassword=s3cret",
                "postgres://u:***@db/x?sslpassword=***",
            ),
            (
                "postgres://u@db/x?sslmode=require",
                "postgres://u@db/x?sslmode=require",
            ),
            (
                "sqlite://.coinsensei/coinsensei.db",
                "sqlite://.coinsensei/coinsensei.db",
            ),
            ("not a url:s3cret@db?password=s3cret", "…@db"),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
            assert!(!redact_url(url).contains("s3cret"));
        }
    }
}
