//! The SQLite dialect: the embedded default. WAL journal, full fsync on commit, a busy
//! timeout for the several processes of `coinsensei up`, and `begin immediate` for every
//! write transaction so a read-then-write never fails on a lock upgrade.

pub(crate) mod job;
mod worker;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};

use crate::changes::{ChangeFeed, ChangeSender};
use crate::{Change, StoreError, StoreOptions, corrupt, redact_url};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "worker registry",
        include_str!("../../migrations/sqlite/0001_worker_registry.sql"),
    ),
    (
        2,
        "job queue",
        include_str!("../../migrations/sqlite/0002_job_queue.sql"),
    ),
    (
        3,
        "leader",
        include_str!("../../migrations/sqlite/0003_leader.sql"),
    ),
    (
        4,
        "queue retry",
        include_str!("../../migrations/sqlite/0004_queue_retry.sql"),
    ),
    (
        5,
        "api token",
        include_str!("../../migrations/sqlite/0005_api_token.sql"),
    ),
    (
        6,
        "nonce",
        include_str!("../../migrations/sqlite/0006_nonce.sql"),
    ),
    (
        7,
        "chain scan",
        include_str!("../../migrations/sqlite/0007_chain_scan.sql"),
    ),
    (
        8,
        "sessions",
        include_str!("../../migrations/sqlite/0008_sessions.sql"),
    ),
    (
        9,
        "payout attempts",
        include_str!("../../migrations/sqlite/0009_payout_attempt.sql"),
    ),
    (
        10,
        "withdrawal",
        include_str!("../../migrations/sqlite/0010_withdrawal.sql"),
    ),
    (
        11,
        "nonce payout",
        include_str!("../../migrations/sqlite/0011_nonce_payout.sql"),
    ),
    (
        12,
        "attempt checked",
        include_str!("../../migrations/sqlite/0012_attempt_checked.sql"),
    ),
    (
        13,
        "hot wallet balance",
        include_str!("../../migrations/sqlite/0013_hot_wallet_balance.sql"),
    ),
    (
        14,
        "withdrawal approval",
        include_str!("../../migrations/sqlite/0014_withdrawal_approval.sql"),
    ),
    (
        15,
        "withdrawal usage",
        include_str!("../../migrations/sqlite/0015_withdrawal_usage.sql"),
    ),
    (
        16,
        "event outbox",
        include_str!("../../migrations/sqlite/0016_event_outbox.sql"),
    ),
    (
        17,
        "deposits",
        include_str!("../../migrations/sqlite/0017_deposits.sql"),
    ),
    (
        19,
        "withdrawal destination",
        include_str!("../../migrations/sqlite/0019_withdrawal_destination.sql"),
    ),
    (
        20,
        "withdrawal review",
        include_str!("../../migrations/sqlite/0020_withdrawal_review.sql"),
    ),
    (
        21,
        "ledger",
        include_str!("../../migrations/sqlite/0021_ledger.sql"),
    ),
    (
        22,
        "sweep",
        include_str!("../../migrations/sqlite/0022_sweep.sql"),
    ),
    (
        23,
        "sweep energy",
        include_str!("../../migrations/sqlite/0023_sweep_energy.sql"),
    ),
];

#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    connect_options: SqliteConnectOptions,
    change_poll_interval: Duration,
    /// Rung after a commit that made jobs available, so this process's feeds look at once
    /// instead of at their next poll (the in-process signal; other processes poll).
    pub(crate) job_signal: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

pub(crate) fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(millis: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| corrupt("timestamp", millis))
}

impl SqliteStore {
    pub(crate) async fn connect(
        database_url: &str,
        options: &StoreOptions,
    ) -> Result<SqliteStore, StoreError> {
        let connect_error = |error| StoreError::Connect {
            url: redact_url(database_url),
            error,
        };
        let connect_options = SqliteConnectOptions::from_str(database_url)
            .map_err(connect_error)?
            .create_if_missing(options.create_if_missing)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if options.create_if_missing
            && let Some(parent) = connect_options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|error| connect_error(sqlx::Error::Io(error)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect_options.clone())
            .await
            .map_err(connect_error)?;
        Ok(SqliteStore {
            pool,
            connect_options,
            change_poll_interval: options.sqlite_change_poll_interval,
            job_signal: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// A write transaction that holds the write lock from its first statement.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("begin immediate").await?)
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations(MIGRATIONS).run(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn migrations_pending(&self) -> Result<usize, StoreError> {
        let table_exists: bool = sqlx::query_scalar(
            "select count(*) > 0 from sqlite_master where type = 'table' and name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await?;
        let applied: Vec<i64> = if table_exists {
            sqlx::query_scalar("select version from _sqlx_migrations where success")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(MIGRATIONS
            .iter()
            .filter(|(version, ..)| !applied.contains(version))
            .count())
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// SQLite has no notifications across processes. `pragma data_version` changes whenever
    /// another connection commits, and reading it touches only shared memory, so polling it
    /// on a dedicated connection every few milliseconds is a cheap, exact wake-up signal.
    pub(crate) async fn change_feed(&self) -> Result<ChangeFeed, StoreError> {
        let mut connection = SqliteConnection::connect_with(&self.connect_options).await?;
        let mut version = data_version(&mut connection).await?;
        let options = self.connect_options.clone();
        let interval = self.change_poll_interval;
        // Each feed has its own receiver, so no ring is missed while it is busy.
        let mut job_signal = self.job_signal.subscribe();
        Ok(ChangeFeed::spawn(move |sender: ChangeSender| async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = job_signal.changed() => {}
                }
                if sender.is_closed() {
                    return;
                }
                match data_version(&mut connection).await {
                    Ok(now) if now == version => continue,
                    Ok(now) => version = now,
                    Err(error) => {
                        tracing::warn!(%error, "sqlite change feed failed; reopening its connection");
                        match SqliteConnection::connect_with(&options).await {
                            Ok(fresh) => connection = fresh,
                            Err(error) => {
                                tracing::warn!(%error, "sqlite change feed cannot reopen")
                            }
                        }
                    }
                }
                if !sender.send(Change::Unknown) {
                    return;
                }
            }
        }))
    }
}

async fn data_version(connection: &mut SqliteConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("pragma data_version")
        .fetch_one(connection)
        .await?)
}

/// What the shared SQL (`crate::dialect`'s macros) needs to know of SQLite: its connection,
/// how a time (integer milliseconds) and a JSON value (text) are written and read, and the
/// operations that SQLite does differently or not at all.
pub(crate) mod dialect {
    use chrono::{DateTime, Utc};
    use sqlx::Row;
    use sqlx::sqlite::SqliteRow;

    use crate::{StoreError, corrupt};

    // The functions written once in each table's module, as expanded for SQLite
    // (`per_dialect!`), and the ones that are SQLite's own.
    pub(crate) use super::job::insert_on as job_insert_on;
    pub(crate) use super::worker::{notify as notify_worker, reap_stale as worker_reap_stale};
    pub(crate) use crate::{
        attempts::sqlite as attempts, audit::sqlite as audit, jobs::sqlite as jobs,
        outbox::sqlite as outbox,
    };

    pub(crate) type Db = sqlx::Sqlite;
    pub(crate) type Connection = sqlx::SqliteConnection;

    pub(crate) fn time(at: DateTime<Utc>) -> i64 {
        super::to_millis(at)
    }

    pub(crate) fn read_time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
        super::from_millis(row.try_get(column)?)
    }

    pub(crate) fn read_time_opt(
        row: &SqliteRow,
        column: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?
            .map(super::from_millis)
            .transpose()
    }

    /// JSON is stored as its text (the migrations check `json_valid`).
    pub(crate) fn json(value: &serde_json::Value) -> String {
        value.to_string()
    }

    /// SQL that appends the JSON object built of `object_args` (key, value, ...) to the
    /// JSON array (text) in `array`.
    pub(crate) fn json_array_push(array: &str, object_args: &str) -> String {
        format!("json_insert({array}, '$[#]', json_object({object_args}))")
    }

    pub(crate) fn read_json(
        row: &SqliteRow,
        column: &str,
    ) -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(&row.try_get::<String, _>(column)?)
            .map_err(|error| corrupt(&format!("json in {column}"), error))
    }

    /// Nothing to take: every SQLite write transaction begins `immediate`, holding the
    /// database's write lock, so one chain's committers are serialised already.
    pub(crate) async fn lock_chain_scan(
        _connection: &mut Connection,
        _chain: domain::Chain,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nothing to take: `begin immediate` serialises every SQLite writer already.
    /// Nothing to lock: a write transaction (`begin immediate`) already runs alone.
    pub(crate) async fn lock_usage(
        _connection: &mut Connection,
        _chain: domain::Chain,
        _asset: &str,
        _scope: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// What locks a row read to decide a write against its removal (none: the write
    /// transaction runs alone).
    pub(crate) const FOR_SHARE: &str = "";

    /// Nothing to lock: a write transaction (`begin immediate`) already runs alone.
    pub(crate) async fn lock_withdrawal(
        _connection: &mut Connection,
        _id: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    pub(crate) async fn lock_payout(
        _connection: &mut Connection,
        _chain: domain::Chain,
        _payout: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}
