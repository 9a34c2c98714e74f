//! Dev-only helpers shared by the test suites: throwaway databases on the real Postgres and
//! in SQLite files, and waiting for a condition with a deadline instead of sleeping.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::Connection;
use store::{Store, StoreOptions};

/// The server the Postgres tests use; `COINSENSEI_TEST_POSTGRES_URL` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("COINSENSEI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..12)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// Which kind of database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database that exists for one test and is dropped (Postgres) or deleted (SQLite) after it.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    postgres_name: Option<String>,
    sqlite_dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => TestDb::postgres().await,
            Backend::Sqlite => TestDb::sqlite(),
        }
    }

    /// A fresh, empty Postgres database on the local server.
    pub async fn postgres() -> TestDb {
        let admin_url = postgres_admin_url();
        let name = format!("cs_test_{}", random_suffix());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|error| panic!("tests need Postgres at {admin_url}: {error}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let mut url = url_for_database(&admin_url, &name);
        url.push_str(if url.contains('?') { "&" } else { "?" });
        url.push_str("application_name=coinsensei-test");
        TestDb {
            url,
            backend: Backend::Postgres,
            postgres_name: Some(name),
            sqlite_dir: None,
        }
    }

    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("coinsensei-test-{}", random_suffix()));
        std::fs::create_dir_all(&dir).expect("create sqlite test dir");
        let url = format!("sqlite://{}", dir.join("coinsensei.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            postgres_name: None,
            sqlite_dir: Some(dir),
        }
    }

    /// A directory that lives as long as the database, for data dirs and logs.
    pub fn dir(&self) -> PathBuf {
        match &self.sqlite_dir {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir(),
        }
    }

    /// Connects and migrates.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, &StoreOptions::default())
            .await
            .expect("connect test store");
        store.migrate().await.expect("migrate test store");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = self.sqlite_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = self.postgres_name.take() {
            // Drop runs outside any async context we can rely on, so use a small runtime of
            // its own on a plain thread.
            let admin_url = postgres_admin_url();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async move {
                    let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .execute(&mut admin)
                    .await
                    .ok()
                })
            })
            .join();
        }
    }
}

fn url_for_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let base = match base.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &base[..slash],
        _ => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Polls `condition` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The path of a binary of this workspace, built by cargo for integration tests.
pub fn workspace_target_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../../target"))
}
