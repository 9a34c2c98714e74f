//! Issue 18's figures: one `coinsensei up` (SQLite, no workers) against idle and half-sent
//! sockets on loopback. For each number of hostile sockets open at once (half silent, half
//! stopped inside a request head), `/healthz` and `/readyz` (a database round trip) are timed
//! on fresh connections, and the sockets `up` holds are counted from `/proc/PID/fd`. Then the
//! hostile sockets are left alone and the time until `up` has closed them all is measured
//! (the header timeout, 10 s).
//!
//! Run with `cargo xtask bench hostile` (or `cargo bench -p coinsensei --bench hostile`).
//! Set `COINSENSEI_BENCH_SOCKETS` to a comma-separated list of socket counts (default
//! `1000,2000,4000`).

#![allow(
    clippy::float_arithmetic,
    reason = "reports milliseconds; no money here"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use testkit::TestDb;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Probes per figure.
const PROBES: usize = 50;
/// A probe slower than this counts as failed (the bar).
const PROBE_BAR: Duration = Duration::from_millis(100);

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Sockets the process `pid` has open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    std::fs::read_link(entry.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Times `PROBES` requests for `path`, each on a fresh connection, given up after 5 s.
async fn probe(address: std::net::SocketAddr, path: &str) -> String {
    let mut samples = Vec::new();
    let mut failed = 0;
    for _ in 0..PROBES {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), http_get(address, path)).await {
            Ok(Ok((200, _))) => samples.push(started.elapsed()),
            _ => failed += 1,
        }
    }
    samples.sort();
    let over = samples.iter().filter(|sample| **sample > PROBE_BAR).count();
    let pick = |p: usize| {
        samples
            .get((samples.len() * p / 100).min(samples.len().saturating_sub(1)))
            .map_or(f64::NAN, |sample| ms(*sample))
    };
    format!(
        "{path}: {} of {PROBES} answered, p50 {:.1} ms, p99 {:.1} ms, {over} over {} ms, {failed} failed",
        samples.len(),
        pick(50),
        pick(99),
        PROBE_BAR.as_millis()
    )
}

#[tokio::main]
async fn main() {
    let counts: Vec<usize> = std::env::var("COINSENSEI_BENCH_SOCKETS")
        .unwrap_or_else(|_| "1000,2000,4000".into())
        .split(',')
        .map(|count| {
            count
                .trim()
                .parse()
                .expect("COINSENSEI_BENCH_SOCKETS: numbers")
        })
        .collect();
    let db = TestDb::sqlite();
    let config = write_config(&db.dir(), 1.0, &[]);
    let data_dir = db.dir().join("data");
    let up = Up::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[("COINSENSEI_LOG", "error")],
    )
    .await;
    let pid = up.child.id().expect("running");
    let at_rest = sockets_of(pid);
    println!(
        "hostile: coinsensei up (SQLite) at {}, {at_rest} sockets open at rest",
        up.address
    );
    println!("  at rest: {}", probe(up.address, "/healthz").await);
    let mut hostile: Vec<TcpStream> = Vec::new();
    for count in counts {
        while hostile.len() < count {
            // Past the connection cap and the listen backlog, a connect waits: stop there.
            let connect = TcpStream::connect(up.address);
            let Ok(Ok(mut stream)) =
                tokio::time::timeout(Duration::from_millis(500), connect).await
            else {
                println!("  a connect did not complete within 500 ms: the backlog is full");
                break;
            };
            if hostile.len() % 2 == 1 {
                let _ = stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
                    .await;
            }
            hostile.push(stream);
        }
        // Let the accept loop catch up with the backlog before counting.
        let settle = Instant::now();
        let mut held = sockets_of(pid);
        while settle.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sockets_of(pid);
            if now == held {
                break;
            }
            held = now;
        }
        println!(
            "  {} hostile sockets open (half idle, half half-sent); up holds {held} sockets",
            hostile.len()
        );
        println!("    {}", probe(up.address, "/healthz").await);
        println!("    {}", probe(up.address, "/readyz").await);
    }
    let started = Instant::now();
    while sockets_of(pid) > at_rest + 2 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  left alone, the hostile sockets were closed by up within {:.1} s ({} sockets open now)",
        started.elapsed().as_secs_f64(),
        sockets_of(pid)
    );
    println!("    {}", probe(up.address, "/healthz").await);
    drop(hostile);
    let status = up.stop().await;
    assert!(status.success(), "up exited with {status}");
}
