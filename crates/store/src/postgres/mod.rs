//! The Postgres dialect: connection, migrations, and the LISTEN/NOTIFY change feed.

pub(crate) mod job;
mod worker;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};

use crate::changes::{ChangeFeed, ChangeSender};
use crate::{Change, StoreError, StoreOptions, redact_url};

/// The channel every worker row change is announced on, with the worker id as payload.
pub(crate) const WORKER_CHANNEL: &str = "coinsensei_worker";
/// The channel that announces available jobs, with the queue name as payload.
pub(crate) const JOB_CHANNEL: &str = "coinsensei_job";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "worker registry",
        include_str!("../../migrations/postgres/0001_worker_registry.sql"),
    ),
    (
        2,
        "job queue",
        include_str!("../../migrations/postgres/0002_job_queue.sql"),
    ),
    (
        3,
        "leader",
        include_str!("../../migrations/postgres/0003_leader.sql"),
    ),
    (
        4,
        "queue retry",
        include_str!("../../migrations/postgres/0004_queue_retry.sql"),
    ),
    (
        5,
        "api token",
        include_str!("../../migrations/postgres/0005_api_token.sql"),
    ),
    (
        6,
        "nonce",
        include_str!("../../migrations/postgres/0006_nonce.sql"),
    ),
    (
        7,
        "chain scan",
        include_str!("../../migrations/postgres/0007_chain_scan.sql"),
    ),
    (
        8,
        "sessions",
        include_str!("../../migrations/postgres/0008_sessions.sql"),
    ),
    (
        9,
        "payout attempts",
        include_str!("../../migrations/postgres/0009_payout_attempt.sql"),
    ),
    (
        10,
        "withdrawal",
        include_str!("../../migrations/postgres/0010_withdrawal.sql"),
    ),
    (
        11,
        "nonce payout",
        include_str!("../../migrations/postgres/0011_nonce_payout.sql"),
    ),
    (
        12,
        "attempt checked",
        include_str!("../../migrations/postgres/0012_attempt_checked.sql"),
    ),
    (
        13,
        "hot wallet balance",
        include_str!("../../migrations/postgres/0013_hot_wallet_balance.sql"),
    ),
    (
        14,
        "withdrawal approval",
        include_str!("../../migrations/postgres/0014_withdrawal_approval.sql"),
    ),
    (
        15,
        "withdrawal usage",
        include_str!("../../migrations/postgres/0015_withdrawal_usage.sql"),
    ),
    (
        16,
        "event outbox",
        include_str!("../../migrations/postgres/0016_event_outbox.sql"),
    ),
    (
        17,
        "deposits",
        include_str!("../../migrations/postgres/0017_deposits.sql"),
    ),
    (
        19,
        "withdrawal destination",
        include_str!("../../migrations/postgres/0019_withdrawal_destination.sql"),
    ),
    (
        20,
        "withdrawal review",
        include_str!("../../migrations/postgres/0020_withdrawal_review.sql"),
    ),
    (
        21,
        "ledger",
        include_str!("../../migrations/postgres/0021_ledger.sql"),
    ),
    (
        22,
        "sweep",
        include_str!("../../migrations/postgres/0022_sweep.sql"),
    ),
    (
        23,
        "sweep energy",
        include_str!("../../migrations/postgres/0023_sweep_energy.sql"),
    ),
];

#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    pub(crate) async fn connect(
        database_url: &str,
        options: &StoreOptions,
    ) -> Result<PgStore, StoreError> {
        let connect_error = |error| StoreError::Connect {
            url: redact_url(database_url),
            error,
        };
        let connect_options: PgConnectOptions = database_url.parse().map_err(connect_error)?;
        // One connection first: the pool retries a refused connection until its acquire
        // timeout and then says only "pool timed out"; this says what is wrong, at once.
        let first = tokio::time::timeout(
            options.acquire_timeout,
            PgConnection::connect_with(&connect_options),
        )
        .await;
        match first {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
            }
            Ok(Err(sqlx::Error::Io(error))) => {
                return Err(StoreError::Unreachable {
                    address: format!(
                        "{}:{}",
                        connect_options.get_host(),
                        connect_options.get_port()
                    ),
                    reason: crate::error::unreachable_reason(&error),
                });
            }
            Ok(Err(error)) => return Err(connect_error(error)),
            // Slow rather than refused: the pool below waits out its own timeout.
            Err(_) => {}
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect_options)
            .await
            .map_err(connect_error)?;
        Ok(PgStore { pool })
    }

    /// A write transaction (rows are locked by the statements themselves).
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations(MIGRATIONS).run(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn migrations_pending(&self) -> Result<usize, StoreError> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("select version from _sqlx_migrations where success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(applied) => applied,
                // No migration table yet: nothing is applied.
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => {
                    Vec::new()
                }
                Err(error) => return Err(error.into()),
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

    pub(crate) async fn change_feed(&self) -> Result<ChangeFeed, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([WORKER_CHANNEL, JOB_CHANNEL]).await?;
        Ok(ChangeFeed::spawn(move |sender| listen(listener, sender)))
    }
}

/// Forwards notifications until the feed's reader goes away. `PgListener` reconnects by
/// itself; notifications sent while it was away are lost, so a reconnect is reported as
/// `Change::Unknown` and readers re-read.
async fn listen(mut listener: PgListener, sender: ChangeSender) {
    let mut failures: u32 = 0;
    loop {
        let change = match listener.try_recv().await {
            Ok(Some(notification)) => {
                failures = 0;
                let payload = notification.payload();
                let change = if notification.channel() == JOB_CHANNEL {
                    domain::Name::new(payload).ok().map(Change::Job)
                } else {
                    domain::WorkerId::new(payload).ok().map(Change::Worker)
                };
                change.unwrap_or(Change::Unknown)
            }
            Ok(None) => Change::Unknown,
            // The store was closed: nothing left to listen with.
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%error, failures, "change feed lost its connection; reconnecting");
                let backoff_ms = 100u64.saturating_mul(1 << failures.min(6));
                tokio::time::sleep(std::time::Duration::from_millis(backoff_ms)).await;
                Change::Unknown
            }
        };
        if !sender.send(change) {
            return;
        }
    }
}

/// What the shared SQL (`crate::dialect`'s macros) needs to know of Postgres: its connection,
/// how a time (`timestamptz`) and a JSON value (`jsonb`) are written and read, and the
/// operations whose SQL is Postgres' own.
pub(crate) mod dialect {
    use chrono::{DateTime, Utc};
    use sqlx::Row;
    use sqlx::postgres::PgRow;

    use crate::StoreError;

    // The functions written once in each table's module, as expanded for Postgres
    // (`per_dialect!`), and the ones that are Postgres's own.
    pub(crate) use super::job::insert_on as job_insert_on;
    pub(crate) use super::worker::{notify as notify_worker, reap_stale as worker_reap_stale};
    pub(crate) use crate::{
        attempts::postgres as attempts, audit::postgres as audit, jobs::postgres as jobs,
        outbox::postgres as outbox,
    };

    pub(crate) type Db = sqlx::Postgres;
    pub(crate) type Connection = sqlx::PgConnection;

    pub(crate) fn time(at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    pub(crate) fn read_time(row: &PgRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
        Ok(row.try_get(column)?)
    }

    pub(crate) fn read_time_opt(
        row: &PgRow,
        column: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(row.try_get(column)?)
    }

    pub(crate) fn json(value: &serde_json::Value) -> &serde_json::Value {
        value
    }

    /// SQL that appends the JSON object built of `object_args` (key, value, ...) to the
    /// `jsonb` array in `array`.
    pub(crate) fn json_array_push(array: &str, object_args: &str) -> String {
        format!("{array} || jsonb_build_array(jsonb_build_object({object_args}))")
    }

    pub(crate) fn read_json(row: &PgRow, column: &str) -> Result<serde_json::Value, StoreError> {
        Ok(row.try_get(column)?)
    }

    /// Serialises the committers of one chain's scan until the transaction ends, so reading
    /// the newest block and appending after it is a compare-and-set. Other chains go on.
    pub(crate) async fn lock_chain_scan(
        connection: &mut Connection,
        chain: domain::Chain,
    ) -> Result<(), StoreError> {
        sqlx::query("select pg_advisory_xact_lock(hashtext('chain_block:' || $1))")
            .bind(chain.as_str())
            .execute(connection)
            .await?;
        Ok(())
    }

    /// Serialises the users of one withdrawal limit (chain, asset, scope) until the
    /// transaction ends, so checking what was used and adding to it is one step.
    pub(crate) async fn lock_usage(
        connection: &mut Connection,
        chain: domain::Chain,
        asset: &str,
        scope: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "select pg_advisory_xact_lock(hashtextextended('withdrawal_usage:' || $1 || ':' || $2 || ':' || $3, 0))",
        )
        .bind(chain.as_str())
        .bind(asset)
        .bind(scope)
        .execute(connection)
        .await?;
        Ok(())
    }

    /// What locks a row read to decide a write against its removal.
    pub(crate) const FOR_SHARE: &str = " for share";

    /// Serialises the deciders of one withdrawal until the transaction ends (its row
    /// locked), so two approvals counted at once see each other.
    pub(crate) async fn lock_withdrawal(
        connection: &mut Connection,
        id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("select id from withdrawal where id = $1 for update")
            .bind(id)
            .execute(connection)
            .await?;
        Ok(())
    }

    /// Serialises the writers of one payout's attempts until the transaction ends (the
    /// same key as ever, so processes of an older build take the same lock).
    pub(crate) async fn lock_payout(
        connection: &mut Connection,
        chain: domain::Chain,
        payout: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "select pg_advisory_xact_lock(hashtextextended('payout_attempt:' || $1 || ':' || $2, 0))",
        )
        .bind(chain.as_str())
        .bind(payout)
        .execute(connection)
        .await?;
        Ok(())
    }
}
