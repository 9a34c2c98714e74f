//! The macros that let one body of SQL and Rust serve both dialects (after Vaultwarden's
//! `db_run!`). Postgres and SQLite read the same `$N` placeholders through sqlx, so a statement
//! that needs no locking, upsert or notification of its own is written once; each macro expands
//! the body once per dialect, with `$d` naming that dialect's `dialect` module
//! (`crate::postgres::dialect`, `crate::sqlite::dialect`): how a time or a JSON value is
//! written and read, and the few operations whose SQL really differs (advisory locks,
//! notifications), each a no-op where the other dialect needs nothing.
//!
//! Which macro a write uses is the one place SQLite's locking shows: every SQLite write runs
//! under `begin immediate` (`SqliteStore::begin_write`) so a read-then-write never fails on a
//! lock upgrade, while a single Postgres statement runs on its own (autocommit).
//!
//! - [`on_pool!`]: reads on the pool.
//! - [`on_write!`]: one write. Postgres runs it on a pooled connection, SQLite inside
//!   `begin immediate`, committed when the body has run.
//! - [`in_write_tx!`]: several statements that commit together, in each dialect's write
//!   transaction.
//! - [`on_tx!`]: the body on the connection of a caller's open [`crate::StoreTx`].
//! - [`per_dialect!`]: functions written once that other modules call on a connection of
//!   either dialect (an audit entry or a job written inside someone else's transaction).
//!
//! In every body, errors leave through `?` (which rolls back an open transaction by dropping
//! it); the body's value is what the macro returns.

/// Runs `$body` on the pool of either dialect, with `$d` naming that dialect's helpers.
macro_rules! on_pool {
    ($store:expr, |$pool:ident, $d:ident| $body:expr) => {
        match $store {
            $crate::Store::Postgres(store) => {
                let $pool = &store.pool;
                #[allow(unused_imports)]
                use $crate::postgres::dialect as $d;
                $body
            }
            $crate::Store::Sqlite(store) => {
                let $pool = &store.pool;
                #[allow(unused_imports)]
                use $crate::sqlite::dialect as $d;
                $body
            }
        }
    };
}

/// Runs `$body`, one write, on `$conn`: on Postgres a pooled connection (the statement commits
/// by itself), on SQLite a `begin immediate` transaction committed after `$body`.
macro_rules! on_write {
    ($store:expr, |$conn:ident, $d:ident| $body:expr) => {
        match $store {
            $crate::Store::Postgres(store) => {
                let mut connection = store.pool.acquire().await?;
                let $conn: &mut sqlx::PgConnection = &mut connection;
                #[allow(unused_imports)]
                use $crate::postgres::dialect as $d;
                $body
            }
            $crate::Store::Sqlite(store) => {
                $crate::dialect::write_tx_arm!(
                    store,
                    sqlite,
                    sqlx::SqliteConnection,
                    |$conn, $d| $body
                )
            }
        }
    };
}

/// Runs `$body` on `$conn`, inside the dialect's write transaction (`begin` on Postgres,
/// `begin immediate` on SQLite), and commits it after `$body`; `$store` is the dialect's store.
macro_rules! in_write_tx {
    ($store:expr, |$dialect_store:ident, $conn:ident, $d:ident| $body:expr) => {
        match $store {
            $crate::Store::Postgres($dialect_store) => {
                $crate::dialect::write_tx_arm!(
                    $dialect_store,
                    postgres,
                    sqlx::PgConnection,
                    |$conn, $d| $body
                )
            }
            $crate::Store::Sqlite($dialect_store) => {
                $crate::dialect::write_tx_arm!(
                    $dialect_store,
                    sqlite,
                    sqlx::SqliteConnection,
                    |$conn, $d| $body
                )
            }
        }
    };
}

/// One dialect's arm of [`on_write!`] and [`in_write_tx!`]: `$body` on `$conn` inside
/// `$store.begin_write()`, committed after `$body`.
macro_rules! write_tx_arm {
    ($store:ident, $dialect:ident, $connection:ty, |$conn:ident, $d:ident| $body:expr) => {{
        let mut transaction = $store.begin_write().await?;
        let $conn: &mut $connection = &mut transaction;
        #[allow(unused_imports)]
        use $crate::$dialect::dialect as $d;
        let value = $body;
        transaction.commit().await?;
        value
    }};
}

/// Runs `$body` on the connection of either dialect's open transaction.
macro_rules! on_tx {
    ($tx:expr, |$conn:ident, $d:ident| $body:expr) => {
        match $tx {
            $crate::StoreTx::Postgres(transaction) => {
                let $conn: &mut sqlx::PgConnection = &mut *transaction;
                #[allow(unused_imports)]
                use $crate::postgres::dialect as $d;
                $body
            }
            $crate::StoreTx::Sqlite(transaction, _) => {
                let $conn: &mut sqlx::SqliteConnection = &mut *transaction;
                #[allow(unused_imports)]
                use $crate::sqlite::dialect as $d;
                $body
            }
        }
    };
}

/// Writes the items once and expands them once per dialect, into modules `postgres` and
/// `sqlite` of the calling module; inside them `d` names that dialect's helpers
/// (`d::Connection`, `d::time`, ...).
macro_rules! per_dialect {
    ($($item:item)*) => {
        pub(crate) mod postgres {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::postgres::dialect as d;
            $($item)*
        }
        pub(crate) mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::sqlite::dialect as d;
            $($item)*
        }
    };
}

pub(crate) use {in_write_tx, on_pool, on_tx, on_write, per_dialect, write_tx_arm};
