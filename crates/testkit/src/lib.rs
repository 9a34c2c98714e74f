//! Dev-only helpers shared by the test suites: throwaway databases on the real Postgres and
//! in SQLite files, and waiting for a condition with a deadline instead of sleeping.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::Connection;
use store::{Store, StoreOptions};

/// The server the Postgres tests use; `COINSENSEI_TEST_POSTGRES_URL` overrides it.
pub mod anvil;
pub use anvil::Anvil;
pub mod bitcoind;
pub use bitcoind::Bitcoind;

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
    /// A fresh directory per test (the SQLite file lives in it); deleted on drop.
    dir: PathBuf,
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
            dir: fresh_dir(),
        }
    }

    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = fresh_dir();
        let url = format!("sqlite://{}", dir.join("coinsensei.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            postgres_name: None,
            dir,
        }
    }

    /// A directory that lives as long as the database, for data dirs and logs.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
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
        let _ = std::fs::remove_dir_all(&self.dir);
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

fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coinsensei-test-{}", random_suffix()));
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
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

/// Turns each `async fn case(backend: Backend)` into two tests, `postgres::case` and
/// `sqlite::case`. With `db:` first, each case takes a fresh `&TestDb` instead.
#[macro_export]
macro_rules! on_both_stores {
    (db: $($case:ident),+ $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let db = $crate::TestDb::new($crate::Backend::Postgres).await;
                super::$case(&db).await;
            })+
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let db = $crate::TestDb::new($crate::Backend::Sqlite).await;
                super::$case(&db).await;
            })+
        }
    };
    ($($case:ident),+ $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::Backend::Postgres).await; })+
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::Backend::Sqlite).await; })+
        }
    };
}

/// Enqueues a one-attempt `noop` job on `queue` now; its id.
pub async fn enqueue_one_shot(store: &store::Store, queue: &str) -> i64 {
    let now = chrono::Utc::now();
    store
        .job_insert(&store::JobInsert {
            queue: domain::Name::new(queue).expect("a valid queue name"),
            kind: domain::Name::new("noop").expect("a valid kind"),
            args: serde_json::json!({"n": 1}),
            priority: 0,
            run_at: now,
            retry: Some(domain::RetryPolicy {
                max_attempts: 1,
                ..domain::RetryPolicy::default()
            }),
            unique_key: None,
            now,
        })
        .await
        .expect("enqueue")
        .id
}

/// Claims the next job of `queue` (which must be `id`) and fails it for good with `error`.
pub async fn fail_next_job(store: &store::Store, queue: &str, id: i64, error: &str) {
    let now = chrono::Utc::now();
    let claimed = store
        .job_claim(&store::JobClaim {
            queue: domain::Name::new(queue).expect("a valid queue name"),
            owner: "testkit".into(),
            limit: 1,
            lease_until: now + std::time::Duration::from_secs(30),
            now,
        })
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(claimed.id, id, "the job claimed is the one to fail");
    store
        .job_fail(&store::JobFail {
            id,
            token: claimed.token,
            error: error.into(),
            retry_at: None,
            now,
        })
        .await
        .expect("fail");
}
