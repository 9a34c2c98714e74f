//! The store's error: each variant says what the caller can do about it.

use domain::ControlRefusal;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or timed out: retry later.
    // The cause is in the message and not also a `source`: `{:#}` would print it twice.
    #[error("database unavailable: {}", describe(.0))]
    Unavailable(sqlx::Error),
    /// Anything else the database said; not worth retrying blindly.
    #[error("database error: {}", describe(.0))]
    Database(sqlx::Error),
    /// The database did not answer within the caller's limit: retry later.
    #[error("database did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("cannot connect to the database at {url}: {}", describe(error))]
    Connect { url: String, error: sqlx::Error },
    /// Nothing answers at the database's address (or the name does not resolve): said at
    /// once, rather than after the pool's acquire timeout as "pool timed out".
    #[error(
        "cannot connect to the database: {reason} at {address} (is the database running there? check database_url)"
    )]
    Unreachable { address: String, reason: String },
    #[error("migrating the database failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// A configured limit would be exceeded: refused, nothing written.
    #[error("{0}")]
    LimitReached(String),
    /// A configured policy refuses the write (allowlist mode): refused, nothing written.
    #[error("{0}")]
    PolicyRefused(String),
    /// A compare-and-set lost: the row is no longer in the state the caller expected.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A withdrawal (`member`) is paid by another payout that may still land: the new
    /// attempt was refused, and that payout is the one to follow.
    #[error("{member} is paid by payout {payout} already")]
    Claimed { member: String, payout: String },
    /// The caller's claim on a job is no longer current (its lease expired and someone else
    /// holds it, or it was finished): the change was refused.
    #[error("stale claim: {0}")]
    Stale(String),
    /// Another process registered under this worker id since; this one must stop.
    #[error("worker {0} was taken over by another process")]
    Superseded(String),
    /// An operator's action that would mean nothing now.
    #[error("{0}")]
    Refused(#[from] ControlRefusal),
    /// An idempotency key used before with another request: nothing was changed.
    #[error("idempotency key {0:?} was used before with another request")]
    KeyReused(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A row holds a value the code does not know: a newer schema, or a manual edit.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether trying the same call again later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Connect { .. }
                | StoreError::Unreachable { .. }
                | StoreError::TimedOut(_)
        )
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(error)
    }
}

/// What the database said, as a sentence of ours: its message alone, without sqlx's "error
/// returned from database:" and Postgres's "at line N" (a line of the server's own C source,
/// which means nothing to an operator).
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(database_error) => match database_error.code() {
            Some(code) => format!("{} (code {code})", database_error.message()),
            None => database_error.message().to_string(),
        },
        other => other.to_string(),
    }
}

/// How an I/O error of a first connection reads in [`StoreError::Unreachable`].
pub(crate) fn unreachable_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "connection timed out".into(),
        _ => {
            // The OS's text without its "(os error N)" tail, lowercase like ours.
            let text = error.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut chars = text.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_lowercase().chain(chars).collect()
            })
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            sqlx::Error::Database(ref database_error)
                // SQLite busy/locked, Postgres serialization failures and admin shutdowns are
                // transient by nature.
                if matches!(database_error.code().as_deref(), Some("5" | "6" | "517" | "40001" | "40P01" | "57P01" | "57P02" | "57P03")) =>
            {
                StoreError::Unavailable(error)
            }
            // Postgres refusing a character (a NUL byte in text, `\u0000` in jsonb): the input
            // was bad, not the database. The checks before each write catch these first; this
            // keeps any that slip past a 4xx.
            sqlx::Error::Database(ref database_error)
                if matches!(database_error.code().as_deref(), Some("22021" | "22P05")) =>
            {
                StoreError::Invalid(format!(
                    "a text value holds a character the database cannot store: {}",
                    database_error.message()
                ))
            }
            other => StoreError::Database(other),
        }
    }
}
