//! The Redis backend survives a restart of its server while workers run: the connection
//! manager reconnects, scripts are re-sent, wake-ups resubscribe, and with `appendfsync
//! always` no acknowledged job is lost even to SIGKILL. Runs its own `redis-server` on a free
//! port so that the shared server of the other tests is left alone.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use domain::{Name, RetryPolicy};
use queue::{Backend, Ran, RedisBackend, Registry, Runner, RunnerConfig, Wake};
use store::JobInsert;

struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16, dir: &std::path::Path) -> Server {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .args(["--appendfsync", "always", "--dir", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        let server = Server { child };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn noop(queue: &Name) -> JobInsert {
    let now = Utc::now();
    JobInsert {
        queue: queue.clone(),
        kind: Name::new("noop").unwrap(),
        args: serde_json::json!({}),
        priority: 0,
        run_at: now,
        retry: Some(RetryPolicy::default()),
        unique_key: None,
        now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_carry_on_after_a_redis_restart() {
    let dir = std::env::temp_dir().join(format!("coinsensei-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut server = Server::start(port, &dir);
    let url = format!("redis://127.0.0.1:{port}/");
    let backend: Arc<dyn Backend> = Arc::new(RedisBackend::connect(&url, "cs:").await.unwrap());
    let queue = Name::new("tron.withdrawal").unwrap();

    // Two workers that keep taking jobs and ride out errors while the server is away.
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for n in 0..2 {
        let config = RunnerConfig {
            queue: queue.clone(),
            owner: format!("w{n}"),
            lease: Duration::from_secs(30),
        };
        let runner = Runner::new(Arc::clone(&backend), Registry::default(), config);
        let (done, errors) = (Arc::clone(&done), Arc::clone(&errors));
        workers.push(tokio::spawn(async move {
            loop {
                match runner.run_one().await {
                    Ok(Ran::Done) => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Ran::Idle) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(error) => {
                        assert!(error.is_transient(), "{error}");
                        errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let mut wakeups = backend.wakeups().await.unwrap();

    let first: Vec<JobInsert> = (0..200).map(|_| noop(&queue)).collect();
    backend.enqueue_many(&first).await.unwrap();
    testkit::wait_for("the first jobs", Duration::from_secs(10), || async {
        (done.load(Ordering::SeqCst) == 200).then_some(())
    })
    .await;

    // SIGKILL the server with a backlog in it, and bring it back on the same data.
    let backlog: Vec<JobInsert> = (0..300)
        .map(|_| noop(&Name::new("tron.deposit").unwrap()))
        .collect();
    backend.enqueue_many(&backlog).await.unwrap();
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server = Server::start(port, &dir);

    // New jobs after the restart run without anyone restarting the workers.
    let second: Vec<JobInsert> = (0..200).map(|_| noop(&queue)).collect();
    let inserted = testkit::wait_for(
        "enqueue after the restart",
        Duration::from_secs(10),
        || async { backend.enqueue_many(&second).await.ok() },
    )
    .await;
    assert_eq!(inserted.len(), 200);
    testkit::wait_for(
        "the jobs after the restart",
        Duration::from_secs(20),
        || async { (done.load(Ordering::SeqCst) == 400).then_some(()) },
    )
    .await;
    assert!(
        errors.load(Ordering::SeqCst) > 0,
        "the workers did see the server go away"
    );

    // Nothing acknowledged before the kill was lost.
    let stats = backend.stats(Utc::now()).await.unwrap();
    let deposit = stats
        .iter()
        .find(|queue| queue.name.as_str() == "tron.deposit")
        .unwrap();
    assert_eq!(deposit.available, 300);
    let withdrawal = stats
        .iter()
        .find(|queue| queue.name.as_str() == "tron.withdrawal")
        .unwrap();
    assert_eq!(
        (
            withdrawal.completed,
            withdrawal.available,
            withdrawal.running
        ),
        (400, 0, 0)
    );

    // Wake-ups resubscribed by themselves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no wake-up after the restart"
        );
        backend
            .enqueue(&noop(&Name::new("wake").unwrap()))
            .await
            .unwrap();
        if let Ok(Some(Wake::Queue(queue))) =
            tokio::time::timeout(Duration::from_millis(200), wakeups.next()).await
            && queue.as_str() == "wake"
        {
            break;
        }
    }
    for worker in workers {
        worker.abort();
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
