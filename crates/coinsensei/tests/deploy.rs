//! The deployment and monitoring files of `deploy/` checked by the tools that run them, here:
//!
//! - the metric catalogue (`docs/metrics.md`) against the code's metric names and a real
//!   scrape of `coinsensei up`, and every metric the alert rules and the Grafana dashboard read
//!   against it;
//! - the Prometheus configuration and rules with `promtool check` and `promtool test rules`,
//!   and a real Prometheus scraping a running `up` with them, read back through its HTTP API;
//! - the Grafana dashboard through Grafana's schema (`grafana-foundation-sdk`: decoded and
//!   encoded again, nothing may be lost) and every panel's PromQL through promtool's parser
//!   (no Grafana server can run here);
//! - the Dockerfile with hadolint, the Kubernetes manifests with `kubernetes-validate
//!   --strict`, and the KEDA objects, made by `coinsensei autoscaler keda` from the same
//!   policy as `up`, against KEDA's schema;
//! - the compose file: `docker-compose config`, then the stack brought up for real on a private
//!   Docker daemon (host networking, loopback only) and checked through `/healthz`, `/readyz`,
//!   `/metrics` and a Prometheus query.
//!
//! The tools are installed by `cargo xtask test` (see xtask/src/main.rs) and named by
//! `COINSENSEI_PROMETHEUS_BIN`, `COINSENSEI_DEPLOY_TOOLS`, `COINSENSEI_KEDA_NODE_MODULES` and
//! `COINSENSEI_DOCKER_BASE`. Each checker is also shown to refuse a broken file, so that a
//! check that cannot fail would be noticed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{BIN, Up, http_get};
use testkit::{TestDb, wait_for};

/// How long a process of the stack may take to answer.
const WAIT: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool_dir(variable: &str) -> PathBuf {
    std::env::var_os(variable)
        .unwrap_or_else(|| {
            panic!("{variable} is not set: run the tests with `cargo xtask test`, which installs the deployment tools")
        })
        .into()
}

fn promtool() -> PathBuf {
    tool_dir("COINSENSEI_PROMETHEUS_BIN").join("promtool")
}

fn python_tool(name: &str) -> PathBuf {
    tool_dir("COINSENSEI_DEPLOY_TOOLS").join(name)
}

/// Runs a command to its end; its output, whatever the exit status.
fn output(command: &mut std::process::Command) -> Output {
    command
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run {command:?}: {error}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command that must succeed; its stdout.
fn succeed(command: &mut std::process::Command) -> String {
    let out = output(command);
    assert!(out.status.success(), "{command:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; everything it printed.
fn refuse(command: &mut std::process::Command) -> String {
    let out = output(command);
    assert!(
        !out.status.success(),
        "{command:?} accepted what it must refuse:\n{}",
        text(&out)
    );
    text(&out)
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coinsensei-deploy-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    format!("{:08x}", hasher.finish() as u32)
}

// ---------------------------------------------------------------------------------------
// The metric catalogue.

/// One row of docs/metrics.md.
#[derive(Debug, Clone)]
struct Documented {
    kind: String,
    labels: BTreeSet<String>,
}

/// docs/metrics.md's two tables: (exported by the control plane, recorded but not exported).
fn catalogue() -> (BTreeMap<String, Documented>, BTreeMap<String, Documented>) {
    let page = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let mut exported = BTreeMap::new();
    let mut recorded = BTreeMap::new();
    let mut section = "";
    for line in page.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title;
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`coinsensei_") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        let row = Documented {
            kind: cells[2].to_string(),
            labels: cells[3]
                .split(',')
                .map(|label| label.trim().trim_matches('`').to_string())
                .filter(|label| !label.is_empty())
                .collect(),
        };
        let table = match section {
            "Exported by the control plane" => &mut exported,
            "Recorded but not exported" => &mut recorded,
            other => panic!("docs/metrics.md: a metric row under an unexpected heading {other:?}"),
        };
        assert!(
            table.insert(name.clone(), row).is_none(),
            "docs/metrics.md lists {name} twice"
        );
    }
    (exported, recorded)
}

/// Every `coinsensei_…` name in `text` (recording rules, `coinsensei:…`, do not match).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_name = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_';
    let mut from = 0;
    while let Some(at) = text[from..].find("coinsensei_") {
        let start = from + at;
        let mut end = start + "coinsensei_".len();
        while end < bytes.len() && is_name(bytes[end]) {
            end += 1;
        }
        let preceded = start > 0 && (is_name(bytes[start - 1]) || bytes[start - 1] == b':');
        if !preceded && end > start + "coinsensei_".len() {
            names.insert(text[start..end].to_string());
        }
        from = end;
    }
    names
}

/// The metric names the code records: the `coinsensei_*` string literals of every source
/// file that uses the `metrics` macros (the Postgres channel names live elsewhere).
fn code_metric_names() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                if source.contains("metrics::") {
                    for name in metric_names(&source) {
                        if source.contains(&format!("\"{name}\"")) {
                            names.insert(name);
                        }
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut names);
        }
    }
    names
}

/// The documented metric a series or PromQL name belongs to (a histogram's `_bucket`,
/// `_sum` and `_count` belong to it).
fn documented_base<'a>(
    name: &str,
    exported: &'a BTreeMap<String, Documented>,
) -> Option<(String, &'a Documented)> {
    if let Some(row) = exported.get(name) {
        return Some((name.to_string(), row));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(row) = exported.get(base)
            && row.kind == "histogram"
        {
            return Some((base.to_string(), row));
        }
    }
    None
}

/// The metric names the alert rules and the dashboard read.
fn names_read_by_rules_and_dashboard() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(root().join("deploy/grafana/dashboards/coinsensei.json")).unwrap();
    let mut names = metric_names(&rules);
    names.extend(metric_names(&dashboard));
    names
}

/// A scrape, as (series name, labels) with each name's `# TYPE`.
struct Scrape {
    types: BTreeMap<String, String>,
    series: Vec<(String, BTreeMap<String, String>)>,
}

fn parse_scrape(body: &str) -> Scrape {
    let mut types = BTreeMap::new();
    let mut series = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            types.insert(
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            );
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}').unwrap();
                let mut labels = BTreeMap::new();
                // Label values here never hold a comma or a quote (bounded label sets).
                for pair in line[open + 1..close].split(',').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap();
                    labels.insert(key.to_string(), value.trim_matches('"').to_string());
                }
                (line[..open].to_string(), labels)
            }
            None => (
                line.split_whitespace().next().unwrap().to_string(),
                BTreeMap::new(),
            ),
        };
        series.push((name, labels));
    }
    Scrape { types, series }
}

/// What only a paid or API-created withdrawal makes appear: documented, read by the
/// dashboard, but not in the scrape of a fresh system.
const APPEAR_WITH_PAYOUTS: &[&str] = &[
    // And those that need a webhook endpoint's deliveries or a deposit address or scan.
    "coinsensei_webhook_deliveries",
    "coinsensei_webhook_oldest_pending_seconds",
    "coinsensei_webhook_posts_total",
    "coinsensei_deposit_addresses_issued_total",
    "coinsensei_deposit_scan_height",
    "coinsensei_withdrawals_created_total",
    "coinsensei_payout_transactions_total",
    "coinsensei_payout_replacements_total",
    "coinsensei_payout_rebroadcasts_total",
];

#[test]
fn the_catalogue_names_exactly_the_metrics_the_code_records() {
    let (exported, recorded) = catalogue();
    assert!(exported.len() >= 25, "docs/metrics.md: {exported:?}");
    let documented: BTreeSet<String> = exported.keys().chain(recorded.keys()).cloned().collect();
    let code = code_metric_names();
    let undocumented: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/metrics.md and the code disagree: recorded but not documented {undocumented:?}; documented but recorded nowhere {stale:?}"
    );
    for (name, row) in exported.iter().chain(recorded.iter()) {
        assert!(
            ["counter", "gauge", "histogram"].contains(&row.kind.as_str()),
            "docs/metrics.md: {name} has type {:?}",
            row.kind
        );
        if row.kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "a counter is named _total: {name}"
            );
        }
    }
    // The rules and the dashboard read only what the control plane exports.
    for name in names_read_by_rules_and_dashboard() {
        assert!(
            documented_base(&name, &exported).is_some(),
            "{name} is read by deploy/prometheus/alerts.yml or the Grafana dashboard but is not exported (docs/metrics.md)"
        );
    }
}

#[test]
fn the_name_scanner_finds_metric_names_and_skips_recording_rules() {
    let names = metric_names(
        "sum(coinsensei_queue_jobs{x=\"y\"}) / coinsensei:jobs:ratio1h + rate(coinsensei_http_request_duration_seconds_bucket[5m]) # coinsensei_*",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "coinsensei_http_request_duration_seconds_bucket",
            "coinsensei_queue_jobs"
        ]
    );
}

/// A running `up` on Postgres with something in every table the scrape reads: a worker,
/// a job waiting in a queue no worker takes, a hot wallet balance, and an authentication
/// failure. Returns it with its database, and a viewer token.
async fn busy_up(metrics_public: bool) -> (Up, TestDb, String) {
    let db = TestDb::postgres().await;
    let config = db.dir().join("coinsensei.toml");
    std::fs::write(
        &config,
        format!(
            "heartbeat_interval = 1\ndrain_timeout = 2\nmetrics_public = {metrics_public}\n\n[[workers]]\nkind = \"deposit\"\nchain = \"tron\"\n"
        ),
    )
    .unwrap();
    let up = Up::start(
        &["--config", config.to_str().unwrap()],
        &[("COINSENSEI_DATABASE_URL", &db.url)],
    )
    .await;
    let store = db.store().await;
    testkit::enqueue_one_shot(&store, "tron.withdrawal").await;
    store
        .hot_wallet_set(&store::HotWalletBalance {
            chain: domain::Chain::Tron,
            asset: "TRX".into(),
            address: "TJRabPrwbZy45sbavfcjinPJC18kjpRTv8".into(),
            units: "123000000".into(),
            checked_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    // A reconciliation on record, as `coinsensei ledger reconcile` leaves one.
    store
        .ledger_check_replace(
            domain::Chain::Tron,
            &[store::LedgerCheck {
                chain: domain::Chain::Tron,
                asset: "TRX".into(),
                agreeing: 2,
                differing: 0,
                unknown: 1,
                difference: domain::Amount::ZERO,
                checked_at: chrono::Utc::now(),
            }],
        )
        .await
        .unwrap();
    let (_, token) = web::auth::issue(
        &store,
        "prometheus",
        domain::Role::Viewer,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let (status, _) = http_get(up.address, "/api/admin/workers").await.unwrap();
    assert_eq!(status, 401, "no token: an authentication failure to count");
    wait_for("the worker running", WAIT, || async {
        let workers = common::workers_json(&db.url).await;
        // Running, with its memory reported: every worker series is there to scrape.
        common::find(&workers, "tron-deposit-1")
            .filter(|worker| worker["status"] == "running" && worker["rss_bytes"].is_i64())
            .map(|_| ())
    })
    .await;
    (up, db, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_a_running_up_exports_is_documented_and_every_documented_one_appears() {
    let (exported, _) = catalogue();
    let (up, _db, _token) = busy_up(true).await;
    // The second scrape holds the first one's request in the HTTP counters.
    http_get(up.address, "/metrics").await.unwrap();
    let (status, body) = http_get(up.address, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let scrape = parse_scrape(&body);

    let mut seen = BTreeSet::new();
    for (name, labels) in &scrape.series {
        let (base, row) = documented_base(name, &exported).unwrap_or_else(|| {
            panic!("/metrics exports {name}, which docs/metrics.md does not document")
        });
        let mut names: BTreeSet<String> = labels.keys().cloned().collect();
        if row.kind == "histogram" {
            names.remove("le");
        }
        assert_eq!(
            names, row.labels,
            "{name}'s labels, as docs/metrics.md gives them"
        );
        seen.insert(base);
    }
    for (name, kind) in &scrape.types {
        let row = &exported[name];
        assert_eq!(
            kind, &row.kind,
            "{name}'s type, as docs/metrics.md gives it"
        );
    }
    let missing: Vec<_> = exported
        .keys()
        .filter(|name| !seen.contains(*name) && !APPEAR_WITH_PAYOUTS.contains(&name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "documented as exported, but not in the scrape of a running up: {missing:?}"
    );
    // So every metric the rules and the dashboard read is one this scrape shows, but for
    // those that need a payout.
    for name in names_read_by_rules_and_dashboard() {
        let (base, _) = documented_base(&name, &exported).unwrap();
        assert!(
            seen.contains(&base) || APPEAR_WITH_PAYOUTS.contains(&base.as_str()),
            "{name} is read by the rules or the dashboard but absent from the scrape"
        );
    }
    up.stop().await;
}

// ---------------------------------------------------------------------------------------
// Prometheus.

/// deploy/prometheus's config and rules copied into `dir` with a secret file beside them,
/// the scrape target and interval changed to `target` and 1 s; the config's path.
fn prometheus_config(dir: &Path, target: &str, listen: &str, token: &str) -> PathBuf {
    let source = root().join("deploy/prometheus");
    let config = std::fs::read_to_string(source.join("prometheus.yml"))
        .unwrap()
        .replace("control-plane:8080", target)
        .replace("localhost:9090", listen)
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/metrics-token"), token).unwrap();
    // The rules as they are, but evaluated every second instead of every minute.
    let rules = std::fs::read_to_string(source.join("alerts.yml"))
        .unwrap()
        .replace("interval: 1m", "interval: 1s");
    std::fs::write(dir.join("alerts.yml"), rules).unwrap();
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn prometheus_config_and_rules_pass_promtool_and_their_unit_tests() {
    let dir = scratch();
    let config = prometheus_config(&dir, "control-plane:8080", "localhost:9090", "x");
    succeed(
        std::process::Command::new(promtool())
            .args(["check", "config"])
            .arg(&config),
    );
    let rules = root().join("deploy/prometheus/alerts.yml");
    let checked = succeed(
        std::process::Command::new(promtool())
            .args(["check", "rules"])
            .arg(&rules),
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    succeed(
        std::process::Command::new(promtool())
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(root().join("deploy/prometheus")),
    );

    // The unit tests can fail: one expectation changed is caught.
    let tests = std::fs::read_to_string(root().join("deploy/prometheus/alerts.test.yml")).unwrap();
    let broken = tests.replace("value: 9000", "value: 9001");
    assert_ne!(broken, tests);
    std::fs::write(dir.join("alerts.test.yml"), broken).unwrap();
    let refused = refuse(
        std::process::Command::new(promtool())
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(&dir),
    );
    assert!(refused.contains("9.001E+03"), "{refused}");
    // And a rule with a broken expression is refused.
    std::fs::write(
        dir.join("bad.yml"),
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(coinsensei_workers\n",
    )
    .unwrap();
    refuse(
        std::process::Command::new(promtool())
            .args(["check", "rules"])
            .arg(dir.join("bad.yml")),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// GET on Prometheus's HTTP API; the JSON answer.
async fn prometheus_api(address: std::net::SocketAddr, path_and_query: &str) -> serde_json::Value {
    let (status, body) = http_get(address, path_and_query)
        .await
        .unwrap_or_else(|error| panic!("GET {path_and_query}: {error}"));
    assert_eq!(status, 200, "GET {path_and_query}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The value of a PromQL query that returns one sample, once it does.
async fn query_value(address: std::net::SocketAddr, query: &str) -> Option<f64> {
    let answer = prometheus_api(
        address,
        &format!("/api/v1/query?query={}", url_encode(query)),
    )
    .await;
    let result = answer["data"]["result"].as_array()?;
    let sample = result.first()?;
    sample["value"][1].as_str()?.parse().ok()
}

/// A Prometheus process from target/tools, killed on drop.
struct Prometheus {
    child: std::process::Child,
    address: std::net::SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_up_with_a_viewer_token_and_loads_the_rules() {
    let (up, db, token) = busy_up(false).await;
    let dir = db.dir().join("prometheus");
    let port = common::browser::free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = prometheus_config(&dir, &up.address.to_string(), &listen, &token);
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child =
        std::process::Command::new(tool_dir("COINSENSEI_PROMETHEUS_BIN").join("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
    let prometheus = Prometheus {
        child,
        address: listen.parse().unwrap(),
    };
    let address = prometheus.address;
    let depth = wait_for("Prometheus to scrape the queue depth", WAIT, || async {
        if http_get(address, "/-/ready").await.ok()?.0 != 200 {
            return None;
        }
        query_value(
            address,
            "coinsensei_queue_jobs{job=\"coinsensei\",queue=\"tron.withdrawal\",state=\"available\"}",
        )
        .await
    })
    .await;
    assert_eq!(depth, 1.0);
    assert_eq!(
        query_value(address, "up{job=\"coinsensei\"}").await,
        Some(1.0)
    );
    let running = wait_for(
        "the worker running, as Prometheus sees it",
        WAIT,
        || async {
            query_value(
                address,
                "sum(coinsensei_workers{chain=\"tron\",type=\"deposit\",status=\"running\"})",
            )
            .await
            .filter(|value| *value == 1.0)
        },
    )
    .await;
    assert_eq!(running, 1.0);
    // The rules file loaded with every group, and a recording rule evaluated.
    let rules = prometheus_api(address, "/api/v1/rules").await;
    let groups: BTreeSet<&str> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        BTreeSet::from(["coinsensei-success", "coinsensei-alerts"])
    );
    let alert_names = rules.to_string();
    for alert in [
        "CoinsenseiWorkerLost",
        "CoinsenseiWithdrawalStuck",
        "CoinsenseiFailedJobRatio",
    ] {
        assert!(alert_names.contains(alert), "{alert} loaded: {rules}");
    }
    // An evaluation before the first scrape's sample counts records 0; then 1.
    let up_recorded = wait_for("the recording rules evaluated", WAIT, || async {
        query_value(address, "coinsensei:control_plane:up")
            .await
            .filter(|value| *value == 1.0)
    })
    .await;
    assert_eq!(up_recorded, 1.0);
    drop(prometheus);
    up.stop().await;
}

// ---------------------------------------------------------------------------------------
// Grafana.

#[test]
fn the_grafana_dashboard_keeps_to_grafanas_schema_and_its_promql_parses() {
    let dashboard = root().join("deploy/grafana/dashboards/coinsensei.json");
    let script = root().join("deploy/grafana/check/roundtrip.py");
    let queries = succeed(
        std::process::Command::new(python_tool("python"))
            .arg(&script)
            .arg(&dashboard),
    );
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    assert_eq!(parsed["uid"], "coinsensei-overview");
    let titles = parsed.to_string();
    for row in [
        "Success metrics",
        "Fleet",
        "Queues",
        "Withdrawals and payouts",
        "Hot wallets",
        "Control plane",
    ] {
        assert!(titles.contains(row), "a row {row:?}");
    }

    // Every panel's PromQL as a recording rule, so promtool's parser reads each one.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut count = 0;
    for line in queries.lines() {
        let (id, expr) = line.split_once('\t').unwrap();
        assert!(
            !expr.contains('$'),
            "panel {id}: a Grafana variable in PromQL: {expr}"
        );
        rules.push_str(&format!(
            "      - record: grafana_panel_{id}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
        count += 1;
    }
    assert!(count >= 25, "{count} queries: {queries}");
    let dir = scratch();
    std::fs::write(dir.join("dashboard-rules.yml"), &rules).unwrap();
    let checked = succeed(
        std::process::Command::new(promtool())
            .args(["check", "rules"])
            .arg(dir.join("dashboard-rules.yml")),
    );
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );

    // A field Grafana's schema does not know is caught by the round trip.
    let mut broken = parsed.clone();
    broken["panels"][1]["titel"] = "typo".into();
    std::fs::write(dir.join("broken.json"), broken.to_string()).unwrap();
    let refused = refuse(
        std::process::Command::new(python_tool("python"))
            .arg(&script)
            .arg(dir.join("broken.json")),
    );
    assert!(refused.contains("$.panels[1].titel"), "{refused}");

    // The provisioning files point Grafana at the dashboards' folder and at Prometheus.
    let provider = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/dashboards/coinsensei.yml"),
    )
    .unwrap();
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    let compose =
        std::fs::read_to_string(root().join("deploy/compose/docker-compose.production.yml"))
            .unwrap();
    assert!(compose.contains("../grafana/dashboards:/var/lib/grafana/dashboards:ro"));
    let datasource = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    assert!(datasource.contains("url: http://prometheus:9090"));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Dockerfile, Kubernetes, KEDA.

#[test]
fn the_dockerfile_passes_hadolint() {
    let dockerfile = root().join("Dockerfile");
    succeed(std::process::Command::new(python_tool("hadolint")).arg(&dockerfile));
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(text.contains("USER 10001:10001"), "the runtime is not root");
    // hadolint refuses what it should.
    let dir = scratch();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM debian:bookworm\nRUN apt-get update && apt-get install -y curl\n",
    )
    .unwrap();
    let refused =
        refuse(std::process::Command::new(python_tool("hadolint")).arg(dir.join("Dockerfile")));
    assert!(
        refused.contains("DL3008") || refused.contains("DL3015"),
        "{refused}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_kubernetes_manifests_validate_strictly() {
    let k8s = root().join("deploy/k8s");
    let manifests = [
        "namespace.yaml",
        "control-plane.yaml",
        "workers.yaml",
        "networkpolicy.yaml",
        "secret.example.yaml",
    ];
    let mut command = std::process::Command::new(python_tool("kubernetes-validate"));
    command.args(["--strict", "--quiet"]);
    for manifest in manifests {
        command.arg(k8s.join(manifest));
    }
    succeed(&mut command);
    // Every file the kustomization names exists; every worker Deployment KEDA scales exists.
    let kustomization = std::fs::read_to_string(k8s.join("kustomization.yaml")).unwrap();
    let resources = kustomization
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .filter(|item| item.ends_with(".yaml") || item.ends_with(".toml"));
    for resource in resources {
        assert!(
            k8s.join(resource).exists(),
            "kustomization.yaml names {resource}"
        );
    }
    let workers = std::fs::read_to_string(k8s.join("workers.yaml")).unwrap();
    let keda = std::fs::read_to_string(k8s.join("keda-scaledobjects.yaml")).unwrap();
    for line in keda.lines() {
        if let Some(name) = line.trim().strip_prefix("name: \"coinsensei-") {
            let name = name.trim_end_matches('"');
            assert!(
                workers.contains(&format!("name: coinsensei-{name}\n")),
                "Deployment coinsensei-{name}"
            );
        }
    }
    let control_plane = std::fs::read_to_string(k8s.join("control-plane.yaml")).unwrap();
    for probe in [
        "path: \"/healthz\"",
        "path: \"/readyz\"",
        "kind: PodDisruptionBudget",
    ] {
        assert!(control_plane.contains(probe), "{probe}");
    }

    // --strict refuses a field Kubernetes does not have.
    let dir = scratch();
    let broken =
        control_plane.replacen("terminationGracePeriodSeconds", "terminationGracePeriod", 1);
    assert_ne!(broken, control_plane);
    std::fs::write(dir.join("broken.yaml"), broken).unwrap();
    refuse(
        std::process::Command::new(python_tool("kubernetes-validate"))
            .args(["--strict", "--quiet"])
            .arg(dir.join("broken.yaml")),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn validate_keda(files: &[&Path]) -> Output {
    // The script runs beside its node_modules.
    let modules = tool_dir("COINSENSEI_KEDA_NODE_MODULES");
    let script = modules.parent().unwrap().join("validate-keda.mjs");
    std::fs::copy(root().join("deploy/k8s/check/validate-keda.mjs"), &script).unwrap();
    output(std::process::Command::new("node").arg(&script).args(files))
}

#[test]
fn keda_objects_are_made_from_the_autoscale_policy_and_match_kedas_schema() {
    let config = root().join("deploy/k8s/coinsensei.toml");
    let made = succeed(
        std::process::Command::new(BIN)
            .args(["autoscaler", "keda", "--config"])
            .arg(&config)
            .env_remove("COINSENSEI_CONFIG"),
    );
    let checked_in =
        std::fs::read_to_string(root().join("deploy/k8s/keda-scaledobjects.yaml")).unwrap();
    assert_eq!(
        made, checked_in,
        "deploy/k8s/keda-scaledobjects.yaml is not what `coinsensei autoscaler keda --config deploy/k8s/coinsensei.toml` prints: regenerate it"
    );
    let out = validate_keda(&[&root().join("deploy/k8s/keda-scaledobjects.yaml")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches(" valid").count(), 4, "{}", text(&out));

    // The policy, as the roadmap gives it, in the first object (tron.withdrawal, defaults).
    let first = made.split("---\n").nth(1).unwrap();
    for line in [
        "name: \"coinsensei-tron-withdrawal\"",
        "minReplicaCount: 1",
        "maxReplicaCount: 10",
        "threshold: \"50\"",
        "stabilizationWindowSeconds: 300",
        "coinsensei.io/scale-down-depth: \"5\"",
        "query: \"max(coinsensei_queue_jobs{queue=\\\"tron.withdrawal\\\",state=\\\"available\\\"}) or vector(0)\"",
    ] {
        assert!(first.contains(line), "{line} in\n{first}");
    }
    assert!(
        first.contains("value: 2\n") && first.contains("value: 1\n"),
        "steps: {first}"
    );

    // Another policy gives other objects.
    let dir = scratch();
    std::fs::write(
        dir.join("c.toml"),
        "[[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\n\n[[autoscale]]\nqueue = \"ethereum.deposit\"\nmin_workers = 2\nmax_workers = 7\nscale_up_depth = 80\ncooldown = 60\n",
    )
    .unwrap();
    let other = succeed(
        std::process::Command::new(BIN)
            .args(["autoscaler", "keda", "--namespace", "payments", "--config"])
            .arg(dir.join("c.toml")),
    );
    for line in [
        "minReplicaCount: 2",
        "maxReplicaCount: 7",
        "threshold: \"80\"",
        "namespace: \"payments\"",
        "periodSeconds: 60",
    ] {
        assert!(other.contains(line), "{line} in\n{other}");
    }

    // Bad input: a clear error, nothing printed.
    for (args, config, message) in [
        (
            vec!["--namespace", "Not_A_Namespace"],
            "c.toml",
            "invalid --namespace",
        ),
        (
            vec!["--prometheus-url", "prometheus:9090"],
            "c.toml",
            "invalid --prometheus-url",
        ),
        (vec![], "long.toml", "autoscale[0].cooldown"),
        (vec![], "none.toml", "no [[autoscale]] entry"),
    ] {
        std::fs::write(
            dir.join("long.toml"),
            "[[workers]]\nkind = \"deposit\"\nchain = \"ethereum\"\n\n[[autoscale]]\nqueue = \"ethereum.deposit\"\ncooldown = 3600\n",
        )
        .unwrap();
        std::fs::write(dir.join("none.toml"), "concurrency = 5\n").unwrap();
        let out = output(
            std::process::Command::new(BIN)
                .args(["autoscaler", "keda", "--config"])
                .arg(dir.join(config))
                .args(&args),
        );
        assert!(!out.status.success(), "{args:?} {config}: {}", text(&out));
        assert!(out.stdout.is_empty(), "nothing printed on error");
        assert!(text(&out).contains(message), "{message}: {}", text(&out));
    }

    // KEDA's schema refuses a wrong type, and the field check a misspelt field.
    let wrong_type = checked_in.replacen("minReplicaCount: 1", "minReplicaCount: \"one\"", 1);
    let misspelt = checked_in.replacen("cooldownPeriod", "cooldownPeriods", 1);
    std::fs::write(dir.join("wrong-type.yaml"), wrong_type).unwrap();
    std::fs::write(dir.join("misspelt.yaml"), misspelt).unwrap();
    let out = validate_keda(&[&dir.join("wrong-type.yaml")]);
    assert!(
        !out.status.success() && text(&out).contains("minReplicaCount must be integer"),
        "{}",
        text(&out)
    );
    let out = validate_keda(&[&dir.join("misspelt.yaml")]);
    assert!(
        !out.status.success()
            && text(&out).contains("spec.cooldownPeriods is not a field of ScaledObjectSpec"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Docker and compose.

/// The Docker CLI of Debian's docker.io, which speaks BuildKit without the buildx plugin
/// (another `docker` earlier on PATH may not).
const DOCKER: &str = "/usr/bin/docker";

/// A private Docker daemon for this test: its own socket, state under `target/docker/data`
/// (kept between runs, so the base image and the build cache are reused), no bridge and no
/// iptables (every container of the test uses the host's network). Stopped on drop, after
/// the compose project is taken down.
struct Daemon {
    child: std::process::Child,
    socket: PathBuf,
    exec_root: PathBuf,
    /// The compose project to take down first, with its files.
    compose: Option<Vec<std::ffi::OsString>>,
    /// Files the test wrote into the repository, removed at the end whatever happens.
    remove_on_drop: Vec<PathBuf>,
}

impl Daemon {
    fn start() -> Daemon {
        let data = root().join("target/docker/data");
        std::fs::create_dir_all(&data).unwrap();
        // Socket paths are short-lived and must be short (108 bytes): under /tmp.
        let exec_root = std::env::temp_dir().join(format!("cs-docker-{}", std::process::id()));
        std::fs::create_dir_all(&exec_root).unwrap();
        let socket = exec_root.join("docker.sock");
        let log = std::fs::File::create(exec_root.join("dockerd.log")).unwrap();
        let child = std::process::Command::new("/usr/sbin/dockerd")
            .arg(format!("--host=unix://{}", socket.display()))
            .arg(format!("--data-root={}", data.display()))
            .arg(format!("--exec-root={}", exec_root.join("exec").display()))
            .arg(format!(
                "--pidfile={}",
                exec_root.join("docker.pid").display()
            ))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd (Debian's docker.io)");
        let daemon = Daemon {
            child,
            socket,
            exec_root,
            compose: None,
            remove_on_drop: Vec::new(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !output(daemon.docker().arg("info")).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd did not answer within 60 s: {}",
                std::fs::read_to_string(daemon.exec_root.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn docker(&self) -> std::process::Command {
        let mut command = std::process::Command::new(DOCKER);
        command
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_BUILDKIT", "1");
        command
    }

    /// `docker-compose` with the project's files and `env` (the compose file's variables).
    fn compose(
        &self,
        files: &[std::ffi::OsString],
        env: &[(&str, String)],
    ) -> std::process::Command {
        let mut command = std::process::Command::new("/usr/bin/docker-compose");
        command.env("DOCKER_HOST", self.host()).args(files);
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(files) = self.compose.take() {
            let _ = output(
                std::process::Command::new("/usr/bin/docker-compose")
                    .env("DOCKER_HOST", self.host())
                    .args(&files)
                    .args(["down", "--volumes", "--remove-orphans", "--timeout", "10"]),
            );
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        // dockerd leaves its default network namespace mounted under its exec root.
        let _ = output(
            std::process::Command::new("umount").arg(self.exec_root.join("exec/netns/default")),
        );
        let _ = std::fs::remove_dir_all(&self.exec_root);
        for file in &self.remove_on_drop {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A GET with a bearer token over HTTP/1.0; status and body.
async fn get_with_token(
    address: std::net::SocketAddr,
    path: &str,
    token: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.0\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The worker services of the compose file, with their replicas.
const COMPOSE_WORKERS: &[(&str, u32)] = &[
    ("tron-withdrawal", 2),
    ("tron-deposit", 1),
    ("tron-consolidation", 1),
    ("ethereum-withdrawal", 2),
    ("ethereum-deposit", 1),
    ("ethereum-consolidation", 1),
    ("bitcoin-withdrawal", 1),
    ("bitcoin-deposit", 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_runs_on_docker_and_prometheus_reads_it() {
    let Some(base_tarball) = std::env::var_os("COINSENSEI_DOCKER_BASE").map(PathBuf::from) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: COINSENSEI_DOCKER_BASE is not set; run the tests with `cargo xtask test`, which installs docker and makes the base image"
        );
        eprintln!(
            "SKIPPED the compose test: docker could not be installed here (see `cargo xtask test`'s warning); it runs, and must pass, in CI"
        );
        return;
    };
    let started = std::time::Instant::now();
    let compose_dir = root().join("deploy/compose");
    let production = compose_dir.join("docker-compose.production.yml");
    let mut daemon = Daemon::start();

    // The production file alone is valid with only its required variable set.
    succeed(
        daemon
            .compose(
                &["-f".into(), production.clone().into()],
                &[("POSTGRES_PASSWORD", "x".into())],
            )
            .args(["config", "--quiet"]),
    );
    let refused = refuse(
        daemon
            .compose(&["-f".into(), production.clone().into()], &[])
            .env_remove("POSTGRES_PASSWORD")
            .args(["config", "--quiet"]),
    );
    assert!(refused.contains("set POSTGRES_PASSWORD"), "{refused}");

    // The base image, from Debian's packages (no registry is reachable).
    if !output(
        daemon
            .docker()
            .args(["image", "inspect", "coinsensei-base:bookworm"]),
    )
    .status
    .success()
    {
        succeed(
            daemon
                .docker()
                .arg("import")
                .arg(&base_tarball)
                .arg("coinsensei-base:bookworm"),
        );
    }
    // CoinSensei's image: the Dockerfile's runtime with the binary this suite built (the
    // full build compiles in the image and is too slow here: `cargo xtask docker`).
    let context = scratch();
    let stripped = output(
        std::process::Command::new("strip")
            .args(["--strip-debug", "-o"])
            .arg(context.join("coinsensei"))
            .arg(BIN),
    );
    if !stripped.status.success() {
        std::fs::copy(BIN, context.join("coinsensei")).unwrap();
    }
    let tag = format!("coinsensei:test-{}", std::process::id());
    succeed(
        daemon
            .docker()
            .args([
                "build",
                "--quiet",
                "--network",
                "host",
                "--target",
                "prebuilt",
            ])
            .args(["--build-arg", "BASE_IMAGE=coinsensei-base:bookworm"])
            .arg("--file")
            .arg(root().join("Dockerfile"))
            .args(["--tag", &tag])
            .arg(&context),
    );
    let user = succeed(daemon.docker().args([
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "id",
        &tag,
    ]));
    assert!(
        user.starts_with("uid=10001(coinsensei)"),
        "the image runs as {user}"
    );
    // Prometheus: Debian's binary on the same base (its image is not reachable either).
    let prometheus_context = scratch();
    std::fs::copy(
        tool_dir("COINSENSEI_PROMETHEUS_BIN").join("prometheus"),
        prometheus_context.join("prometheus"),
    )
    .unwrap();
    std::fs::write(
        prometheus_context.join("Dockerfile"),
        "FROM coinsensei-base:bookworm\nCOPY prometheus /bin/prometheus\nENTRYPOINT [\"/bin/prometheus\"]\n",
    )
    .unwrap();
    let prometheus_tag = format!("coinsensei-test-prometheus:{}", std::process::id());
    succeed(
        daemon
            .docker()
            .args([
                "build",
                "--quiet",
                "--network",
                "host",
                "--tag",
                &prometheus_tag,
            ])
            .arg(&prometheus_context),
    );

    // The stack on the host's network, against the host's Postgres and Redis (a fresh
    // database and key prefix), through an override file: only loopback traffic.
    let db = TestDb::postgres().await;
    let dir = db.dir();
    let port = common::browser::free_port();
    let prometheus_port = common::browser::free_port();
    let control = format!("127.0.0.1:{port}");
    let prometheus_listen = format!("127.0.0.1:{prometheus_port}");
    common::backend::keystore_lines(
        &dir,
        "test test test test test test test test test test test junk",
    );
    std::fs::write(dir.join("grafana-admin-password"), "unused").unwrap();
    // The containers run as uid 10001: the test's secret files must be readable to it.
    for file in ["keystore.json", "password", "grafana-admin-password"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let redis_prefix = format!("cs-compose-{}:", std::process::id());
    let mut override_file = format!(
        "# Written by crates/coinsensei/tests/deploy.rs: the production file on the host's network.\n\
         x-test: &test\n  network_mode: host\n  environment:\n    COINSENSEI_DATABASE_URL: \"{}\"\n    COINSENSEI_REDIS_URL: \"redis://127.0.0.1:6379/\"\n    COINSENSEI_REDIS_PREFIX: \"{redis_prefix}\"\n    COINSENSEI_HEARTBEAT_INTERVAL: \"1\"\n\n\
         services:\n  control-plane:\n    <<: *test\n    command: [\"serve\", \"--listen\", \"{control}\"]\n",
        db.url
    );
    let production_text = std::fs::read_to_string(&production).unwrap();
    for (service, _) in COMPOSE_WORKERS {
        // Replicas on one host network share its hostname: each takes a random id instead.
        let (chain, kind) = service.split_once('-').unwrap();
        assert!(
            production_text.contains(&format!("  {service}:\n")),
            "{service} in the compose file"
        );
        override_file.push_str(&format!(
            "  {service}:\n    <<: *test\n    entrypoint: [\"bash\", \"-c\", \"exec /usr/local/bin/coinsensei worker --kind {kind} --chain {chain} --id {service}-$$(cut -c1-8 /proc/sys/kernel/random/uuid)\"]\n"
        ));
    }
    override_file.push_str(&format!(
        "  prometheus:\n    network_mode: host\n    image: {prometheus_tag}\n    command: [\"--config.file=/etc/prometheus/prometheus.yml\", \"--storage.tsdb.path=/prometheus\", \"--web.listen-address={prometheus_listen}\"]\n    user: root\n    volumes:\n      - {prometheus_dir}/secrets/metrics-token:/etc/prometheus/secrets/metrics-token:ro\n\n\
         secrets:\n  keystore.json:\n    file: {keystore}\n  keystore-password:\n    file: {password}\n  grafana-admin-password:\n    file: {grafana}\n",
        prometheus_dir = dir.join("prometheus").display(),
        keystore = dir.join("keystore.json").display(),
        password = dir.join("password").display(),
        grafana = dir.join("grafana-admin-password").display(),
    ));
    let override_path = dir.join("docker-compose.test.yml");
    std::fs::write(&override_path, &override_file).unwrap();
    // Host networking has no port publishing, and compose 1.x cannot remove a list in an
    // override: the test runs a copy of the production file without its `ports:` entries,
    // beside it (relative paths unchanged), and uses it otherwise as it is.
    let mut host_network_copy = String::new();
    let mut in_ports = false;
    for line in production_text.lines() {
        if line == "    ports:" {
            in_ports = true;
            continue;
        }
        if in_ports && line.starts_with("      - ") {
            continue;
        }
        in_ports = false;
        host_network_copy.push_str(line);
        host_network_copy.push('\n');
    }
    assert_eq!(
        production_text.matches("    ports:").count(),
        3,
        "control plane, Prometheus and Grafana publish ports"
    );
    let production = compose_dir.join(format!(".docker-compose.test-{}.yml", std::process::id()));
    std::fs::write(&production, &host_network_copy).unwrap();
    daemon.remove_on_drop.push(production.clone());
    let project = format!("cstest{}", std::process::id());
    let files: Vec<std::ffi::OsString> = vec![
        "--project-name".into(),
        project.into(),
        "--project-directory".into(),
        compose_dir.clone().into(),
        "-f".into(),
        production.clone().into(),
        "-f".into(),
        override_path.into(),
    ];
    // Prometheus reads the repository's config with the target on loopback (PROMETHEUS_CONFIG).
    let config = prometheus_config(
        &dir.join("prometheus"),
        &control,
        &prometheus_listen,
        "pending",
    );
    let env = vec![
        ("POSTGRES_PASSWORD", "unused".to_string()),
        ("COINSENSEI_IMAGE", tag.clone()),
        ("PROMETHEUS_CONFIG", config.display().to_string()),
        ("COINSENSEI_PORT", port.to_string()),
    ];
    succeed(daemon.compose(&files, &env).args(["config", "--quiet"]));
    daemon.compose = Some(files.clone());

    // The control plane first (it migrates); the databases are the host's, so not started.
    succeed(daemon.compose(&files, &env).args([
        "up",
        "--detach",
        "--no-deps",
        "--no-build",
        "control-plane",
    ]));
    let address: std::net::SocketAddr = control.parse().unwrap();
    wait_for("the control plane's /readyz", WAIT, || async {
        (http_get(address, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(http_get(address, "/healthz").await.unwrap().0, 200);
    let (status, _) = http_get(address, "/metrics").await.unwrap();
    assert_eq!(status, 401, "/metrics needs a token");
    let store = db.store().await;
    let (_, token) = web::auth::issue(
        &store,
        "prometheus",
        domain::Role::Viewer,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    std::fs::write(dir.join("prometheus/secrets/metrics-token"), &token).unwrap();

    let mut services = vec!["prometheus".to_string()];
    services.extend(
        COMPOSE_WORKERS
            .iter()
            .map(|(service, _)| service.to_string()),
    );
    succeed(
        daemon
            .compose(&files, &env)
            .args(["up", "--detach", "--no-deps", "--no-build"])
            .args(&services),
    );
    let expected: u32 = COMPOSE_WORKERS.iter().map(|(_, replicas)| replicas).sum();
    // Every replica registered and running, as the control plane's /metrics says.
    wait_for("every worker replica running", WAIT, || async {
        let (status, body) = get_with_token(address, "/metrics", &token).await.ok()?;
        if status != 200 {
            return None;
        }
        let running: f64 = body
            .lines()
            .filter(|line| {
                line.starts_with("coinsensei_workers{") && line.contains("status=\"running\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (running == f64::from(expected)).then_some(())
    })
    .await;
    // And as Prometheus, scraping it with the token, reads it back.
    let prometheus: std::net::SocketAddr = prometheus_listen.parse().unwrap();
    let running = wait_for("Prometheus to read the fleet", WAIT, || async {
        if http_get(prometheus, "/-/ready").await.ok()?.0 != 200 {
            return None;
        }
        query_value(
            prometheus,
            "sum(coinsensei_workers{job=\"coinsensei\",status=\"running\"})",
        )
        .await
        .filter(|value| *value == f64::from(expected))
    })
    .await;
    assert_eq!(running, f64::from(expected));
    let ps = succeed(daemon.compose(&files, &env).args(["ps"]));
    eprintln!("{ps}");

    // Down: every worker drains and reports offline.
    succeed(
        daemon
            .compose(&files, &env)
            .args(["down", "--volumes", "--remove-orphans"]),
    );
    daemon.compose = None;
    let workers = common::workers_json(&db.url).await;
    assert_eq!(workers.len(), expected as usize, "{workers:?}");
    assert!(
        workers.iter().all(|worker| worker["status"] == "offline"),
        "every worker offline after down: {workers:?}"
    );
    let image = succeed(
        daemon
            .docker()
            .args(["image", "inspect", "--format", "{{.Size}}", &tag]),
    );
    eprintln!(
        "compose test: image {} MB (with the debug binary, stripped of debug info), {:.0} s",
        image.trim().parse::<u64>().unwrap_or(0) / 1_000_000,
        started.elapsed().as_secs_f64()
    );
    let _ = succeed(daemon.docker().args(["image", "rm", &tag, &prometheus_tag]));
    let _ = std::fs::remove_dir_all(&context);
    let _ = std::fs::remove_dir_all(&prometheus_context);
}
