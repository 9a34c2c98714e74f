//! `GET /metrics` in the Prometheus text format, by `metrics-exporter-prometheus`.
//!
//! Two kinds of series:
//! - counted in this process as requests pass: `coinsensei_http_requests_total` and
//!   `coinsensei_http_request_duration_seconds` (by route, method and status),
//!   `coinsensei_auth_failures_total` (by reason);
//! - read from the database at each scrape, so every control-plane replica reports the whole
//!   fleet: `coinsensei_workers` (by chain, type and status, zeros included), per worker
//!   `coinsensei_worker_heartbeat_age_seconds`, `coinsensei_worker_rss_bytes`,
//!   `coinsensei_worker_in_flight`, `coinsensei_worker_jobs_processed_total` and
//!   `coinsensei_worker_jobs_failed_total` (counters of the jobs it finished, of which failed, from
//!   the counts its heartbeats carry; see `job_count_increments`), and per queue `coinsensei_queue_jobs` (by state),
//!   `coinsensei_queue_oldest_available_age_seconds` and `coinsensei_queue_paused`: what
//!   autoscaling on queue depth reads; `coinsensei_withdrawals` (by chain and state, zeros
//!   included) and `coinsensei_withdrawal_oldest_unfinished_age_seconds` (the oldest
//!   withdrawal not yet `completed`, `failed` or `canceled`, `manual_review` included; 0
//!   when there is none): what an alert on stuck withdrawals reads;
//!   `coinsensei_withdrawal_state_oldest_seconds` (by chain and unfinished state: how long
//!   the oldest withdrawal in that state has been there), `coinsensei_withdrawal_completion_seconds`
//!   (a summary by chain: request to `completed` over the last hour's completed
//!   withdrawals, quantiles 0.5, 0.9 and 0.99, with `_count`),
//!   `coinsensei_payout_transactions_total` and `coinsensei_payout_replacements_total` (by
//!   chain: transactions signed for payouts, and those beyond each payout's first: Ethereum
//!   fee replacements, Bitcoin RBF bumps, TRON payments made again after a proven death),
//!   `coinsensei_payout_rebroadcasts_total` (by chain: stored transactions sent again),
//!   and `coinsensei_hot_wallet_balance` with `coinsensei_hot_wallet_balance_age_seconds`
//!   (by chain and asset, in the asset's base units, as the withdrawal worker last read it
//!   from its node); `coinsensei_webhook_deliveries` (by endpoint and state) and
//!   `coinsensei_webhook_oldest_pending_seconds` (by endpoint: the age of the oldest event
//!   not yet delivered there), and, counted by the deliverer in the control plane,
//!   `coinsensei_webhook_posts_total` (by endpoint and outcome: delivered, retry, failed);

//!   `coinsensei_deposits` (by chain and state, zeros included: a
//!   `reversed` one needs a person, the alert) and `coinsensei_deposit_scan_height` (by
//!   chain: the newest block the deposit scanner stored);
//!   `coinsensei_sweeps` (by chain and state, zeros included, TRON and Ethereum),
//!   `coinsensei_sweep_oldest_open_seconds` and `coinsensei_sweeps_open_erring` (by chain:
//!   the oldest open sweep's age, 0 when none; open sweeps whose last step failed);
//!   `coinsensei_ledger_difference`, `coinsensei_ledger_wallets` and
//!   `coinsensei_ledger_checked_age_seconds` (by chain and asset: the last
//!   `coinsensei ledger reconcile`, table `ledger_check`);
//! - the health checker's verdicts (`crate::health`): `coinsensei_worker_health_status` and
//!   `coinsensei_chain_health_status` (0 healthy, 1 warning, 2 unhealthy), and per check
//!   `coinsensei_health_check_status` / `coinsensei_health_check_value` (by worker and
//!   check) and `coinsensei_chain_health_check_status` / `..._value` (by chain and check).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::{Chain, Role, WithdrawalState, WorkerKind, WorkerStatus};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use crate::api::ApiError;

/// Request latency buckets, in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The process's recorder: installed once, on first use. If another recorder is already
/// installed (an embedding program's), ours still renders what we set on it directly.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("coinsensei_http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only ours");
        }
        handle
    })
}

/// Counts every request and its latency, labelled by its route template (never the raw path,
/// which would make a series per worker id).
pub(crate) async fn track(request: Request, next: Next) -> Response {
    // Make sure the recorder exists before the first request is counted.
    let _ = handle();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    // A fixed set: clients can invent methods, and each would be a series forever.
    let method: &'static str = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("coinsensei_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("coinsensei_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed());
    response
}

/// The scrape: refreshes the fleet's series from the database, then renders everything.
pub(crate) async fn render(State(state): State<AppState>, request: Request) -> Response {
    if !state.options.metrics_public {
        let client = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        let caller = match crate::api::authenticate(&state, request.headers(), client).await {
            Ok(caller) => caller,
            Err(error) => return error.into_response(),
        };
        // Every operator role reads; the exchange's backend (`service`) is not an operator.
        if !caller.token.role.allows(Role::Viewer) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a service token may use only the withdrawal operations; scrape /metrics with a viewer token",
            )
            .into_response();
        }
    }
    if let Err(error) = refresh(&state).await {
        return error.into_response();
    }
    let handle = handle();
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

#[allow(
    clippy::cast_precision_loss,
    clippy::float_arithmetic,
    reason = "gauges are f64 by the Prometheus format; counts far below 2^53"
)]
async fn refresh(state: &AppState) -> Result<(), ApiError> {
    let now = Utc::now();
    let workers = crate::health::all_workers(&state.store).await?;
    let report = state.options.health.evaluate(&state.store, now).await?;
    crate::health::export(&report);
    for chain in Chain::ALL {
        for &kind in WorkerKind::ALL {
            for &status in WorkerStatus::ALL {
                let count = workers
                    .iter()
                    .filter(|row| row.chain == chain && row.kind == kind && row.status == status)
                    .count();
                metrics::gauge!("coinsensei_workers", "chain" => chain.as_str(), "type" => kind.as_str(), "status" => status.as_str())
                    .set(count as f64);
            }
        }
    }
    for row in &workers {
        let id = row.id.as_str().to_string();
        if let Some(at) = row.last_heartbeat {
            let age = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("coinsensei_worker_heartbeat_age_seconds", "worker" => id.clone())
                .set(age);
        }
        if let Some(rss) = row.rss_bytes {
            metrics::gauge!("coinsensei_worker_rss_bytes", "worker" => id.clone()).set(rss as f64);
        }
        metrics::gauge!("coinsensei_worker_in_flight", "worker" => id.clone())
            .set(row.in_flight as f64);
        // Throughput and the failed-job ratio (the roadmap's success metrics) are read from
        // the counts the worker's heartbeats carry.
        let (processed, failed) = job_count_increments(row);
        metrics::counter!("coinsensei_worker_jobs_processed_total", "worker" => id.clone())
            .increment(processed);
        metrics::counter!("coinsensei_worker_jobs_failed_total", "worker" => id).increment(failed);
    }
    for queue in state.queue.stats(now).await? {
        let name = queue.name.as_str().to_string();
        for (job_state, count) in [
            ("available", queue.available),
            ("scheduled", queue.scheduled),
            ("running", queue.running),
            ("completed", queue.completed),
            ("failed", queue.failed),
            ("cancelled", queue.cancelled),
        ] {
            metrics::gauge!("coinsensei_queue_jobs", "queue" => name.clone(), "state" => job_state)
                .set(count as f64);
        }
        let oldest = queue.oldest_available_at.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        metrics::gauge!("coinsensei_queue_oldest_available_age_seconds", "queue" => name.clone())
            .set(oldest);
        metrics::gauge!("coinsensei_queue_paused", "queue" => name).set(if queue.paused {
            1.0
        } else {
            0.0
        });
    }
    let (counts, oldest_unfinished) = state.store.withdrawal_counts().await?;
    for chain in Chain::ALL {
        for &withdrawal_state in WithdrawalState::ALL {
            let count = counts
                .iter()
                .find(|(each_chain, each_state, _)| {
                    *each_chain == chain && *each_state == withdrawal_state
                })
                .map_or(0, |(_, _, count)| *count);
            metrics::gauge!("coinsensei_withdrawals", "chain" => chain.as_str(), "state" => withdrawal_state.as_str())
                .set(count as f64);
        }
    }
    let oldest = oldest_unfinished.map_or(0.0, |at| {
        (now - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    metrics::gauge!("coinsensei_withdrawal_oldest_unfinished_age_seconds").set(oldest);
    // The alert for a hot wallet that cannot pay: withdrawals waiting for funds, per chain.
    let waiting = state.store.withdrawal_waiting_for_funds().await?;
    for chain in Chain::ALL {
        let count = waiting
            .iter()
            .find(|(each, _)| *each == chain)
            .map_or(0, |(_, count)| *count);
        metrics::gauge!("coinsensei_withdrawals_waiting_for_funds", "chain" => chain.as_str())
            .set(count as f64);
    }
    let (deposits, heads) = state.store.deposit_counts().await?;
    for chain in Chain::ALL {
        for deposit_state in store::DepositState::ALL {
            let count = deposits
                .iter()
                .find(|(each_chain, each_state, _)| {
                    *each_chain == chain && *each_state == deposit_state
                })
                .map_or(0, |(_, _, count)| *count);
            metrics::gauge!("coinsensei_deposits", "chain" => chain.as_str(), "state" => deposit_state.as_str())
                .set(count as f64);
        }
        if let Some((_, head)) = heads.iter().find(|(each, _)| *each == chain) {
            metrics::gauge!("coinsensei_deposit_scan_height", "chain" => chain.as_str())
                .set(*head as f64);
        }
    }
    // Consolidation: sweeps per chain and state (zeros included, for the chains that sweep),
    // and per chain the oldest open sweep's age and how many open ones had a step fail: the
    // alerts on a stuck sweep (its address waits for it).
    let sweeps = state.store.sweep_stats().await?;
    for chain in [Chain::Tron, Chain::Ethereum] {
        for sweep_state in store::SweepState::ALL {
            let count = sweeps
                .counts
                .iter()
                .find(|(each_chain, each_state, _)| {
                    *each_chain == chain && *each_state == sweep_state
                })
                .map_or(0, |(_, _, count)| *count);
            metrics::gauge!("coinsensei_sweeps", "chain" => chain.as_str(), "state" => sweep_state.as_str())
                .set(count as f64);
        }
        let (oldest, erring) = sweeps
            .open
            .iter()
            .find(|(each, _, _)| *each == chain)
            .map_or((0.0, 0), |(_, at, erring)| {
                (
                    (now - *at).num_milliseconds().max(0) as f64 / 1000.0,
                    *erring,
                )
            });
        metrics::gauge!("coinsensei_sweep_oldest_open_seconds", "chain" => chain.as_str())
            .set(oldest);
        metrics::gauge!("coinsensei_sweeps_open_erring", "chain" => chain.as_str())
            .set(erring as f64);
    }
    // The last reconciliation of each chain (`coinsensei ledger reconcile`): the alert is a
    // difference above 0; an unknown wallet is counted apart, never as agreeing.
    for check in state.store.ledger_check_list().await? {
        let units = check
            .difference
            .base_units()
            .to_string()
            .parse::<f64>()
            .unwrap_or(f64::NAN);
        metrics::gauge!("coinsensei_ledger_difference", "chain" => check.chain.as_str(), "asset" => check.asset.clone())
            .set(units);
        for (verdict, n) in [
            ("agrees", check.agreeing),
            ("differs", check.differing),
            ("unknown", check.unknown),
        ] {
            metrics::gauge!("coinsensei_ledger_wallets", "chain" => check.chain.as_str(), "asset" => check.asset.clone(), "verdict" => verdict)
                .set(n as f64);
        }
        metrics::gauge!("coinsensei_ledger_checked_age_seconds", "chain" => check.chain.as_str(), "asset" => check.asset)
            .set((now - check.checked_at).num_milliseconds().max(0) as f64 / 1000.0);
    }
    withdrawal_pipeline(state, now).await
}

/// What a worker finished (jobs, of which failed) since this process last looked at its row.
///
/// A worker's heartbeat carries its process's counts, which restart at 0 with each process
/// (a new `incarnation`), so they cannot be exported as they are: a counter never goes down.
/// Counted here instead, per worker, from the last row seen: the growth within one process,
/// and a new process's whole count. Jobs a process finished after this control plane's last
/// scrape and before it died are not counted (at most one scrape interval's worth).
fn job_count_increments(row: &store::WorkerRow) -> (u64, u64) {
    type Seen = std::collections::HashMap<String, (Option<String>, i64, i64)>;
    static SEEN: OnceLock<std::sync::Mutex<Seen>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = (
        row.incarnation.clone(),
        row.processed_total,
        row.failed_total,
    );
    let before = seen.insert(row.id.as_str().to_string(), now.clone());
    let (processed, failed) = match before {
        Some((incarnation, processed, failed))
            if incarnation == now.0 && processed <= now.1 && failed <= now.2 =>
        {
            (now.1 - processed, now.2 - failed)
        }
        _ => (now.1, now.2),
    };
    (
        u64::try_from(processed).unwrap_or(0),
        u64::try_from(failed).unwrap_or(0),
    )
}

/// Where the withdrawals' time goes, what their transactions cost in replacements, and what
/// the hot wallets hold.
#[allow(
    clippy::cast_precision_loss,
    clippy::float_arithmetic,
    reason = "gauges are f64 by the Prometheus format; a balance far above 2^53 base units is shown approximately"
)]
async fn withdrawal_pipeline(state: &AppState, now: chrono::DateTime<Utc>) -> Result<(), ApiError> {
    let seconds = |at: chrono::DateTime<Utc>| (now - at).num_milliseconds().max(0) as f64 / 1000.0;
    let oldest = state.store.withdrawal_state_oldest().await?;
    for chain in Chain::ALL {
        for &withdrawal_state in WithdrawalState::ALL {
            if withdrawal_state.is_final() {
                continue;
            }
            let age = oldest
                .iter()
                .find(|(each_chain, each_state, _)| {
                    *each_chain == chain && *each_state == withdrawal_state
                })
                .map_or(0.0, |(_, _, at)| seconds(*at));
            metrics::gauge!("coinsensei_withdrawal_state_oldest_seconds", "chain" => chain.as_str(), "state" => withdrawal_state.as_str())
                .set(age);
        }
    }
    let since = now - chrono::Duration::hours(1);
    let durations = state.store.withdrawal_completion_times(since).await?;
    for chain in Chain::ALL {
        let mut times: Vec<f64> = durations
            .iter()
            .filter(|(each, _)| *each == chain)
            .map(|(_, milliseconds)| *milliseconds as f64 / 1000.0)
            .collect();
        times.sort_by(f64::total_cmp);
        for (label, quantile) in [("0.5", 0.5), ("0.9", 0.9), ("0.99", 0.99)] {
            metrics::gauge!("coinsensei_withdrawal_completion_seconds", "chain" => chain.as_str(), "quantile" => label)
                .set(nearest_rank(&times, quantile));
        }
        metrics::gauge!("coinsensei_withdrawal_completion_seconds_count", "chain" => chain.as_str())
            .set(times.len() as f64);
    }
    for counts in state.store.payout_transaction_counts().await? {
        let chain = counts.chain.as_str();
        for (name, value) in [
            ("coinsensei_payout_transactions_total", counts.transactions),
            ("coinsensei_payout_replacements_total", counts.replacements),
            ("coinsensei_payout_rebroadcasts_total", counts.rebroadcasts),
        ] {
            metrics::counter!(name, "chain" => chain).absolute(u64::try_from(value).unwrap_or(0));
        }
    }
    for balance in state.store.hot_wallet_list().await? {
        let units = balance.units.parse::<f64>().unwrap_or(f64::NAN);
        metrics::gauge!("coinsensei_hot_wallet_balance", "chain" => balance.chain.as_str(), "asset" => balance.asset.clone())
            .set(units);
        metrics::gauge!("coinsensei_hot_wallet_balance_age_seconds", "chain" => balance.chain.as_str(), "asset" => balance.asset)
            .set(seconds(balance.checked_at));
    }
    // Every state of every endpoint that has deliveries, zeros included: a drained
    // endpoint's pending series falls to 0 instead of keeping its last value.
    let counts = state.store.webhook_counts().await?;
    let mut endpoints: Vec<&str> = counts.iter().map(|count| count.endpoint.as_str()).collect();
    endpoints.dedup();
    for endpoint in endpoints {
        for delivery_state in [
            store::DeliveryState::Pending,
            store::DeliveryState::Delivered,
            store::DeliveryState::Failed,
        ] {
            let count = counts
                .iter()
                .find(|count| count.endpoint == endpoint && count.state == delivery_state);
            metrics::gauge!("coinsensei_webhook_deliveries", "endpoint" => endpoint.to_string(), "state" => delivery_state.as_str())
                .set(count.map_or(0.0, |count| count.count as f64));
            if delivery_state == store::DeliveryState::Pending {
                metrics::gauge!("coinsensei_webhook_oldest_pending_seconds", "endpoint" => endpoint.to_string())
                    .set(count.and_then(|count| count.oldest).map_or(0.0, seconds));
            }
        }
    }
    Ok(())
}

/// The nearest-rank quantile of sorted `values`; 0 when there are none.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::float_arithmetic,
    reason = "a rank among at most a few thousand values"
)]
fn nearest_rank(values: &[f64], quantile: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = (quantile * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::job_count_increments;
    use chrono::Utc;
    use domain::{Chain, DesiredState, WorkerId, WorkerKind, WorkerStatus};

    fn row(id: &str, incarnation: &str, processed: i64, failed: i64) -> store::WorkerRow {
        let now = Utc::now();
        store::WorkerRow {
            id: WorkerId::new(id).unwrap(),
            name: id.into(),
            kind: WorkerKind::Deposit,
            chain: Chain::Tron,
            status: WorkerStatus::Running,
            desired_state: DesiredState::Running,
            pid: None,
            host: None,
            port: None,
            version: None,
            config: serde_json::Value::Null,
            incarnation: Some(incarnation.into()),
            generation: 0,
            applied_generation: 0,
            last_heartbeat: Some(now),
            last_error: None,
            started_at: Some(now),
            rss_bytes: None,
            in_flight: 0,
            processed_total: processed,
            failed_total: failed,
            created_at: now,
            updated_at: now,
        }
    }

    /// A worker's counts restart with each process; the exported counter only grows, by
    /// what each process finished.
    #[test]
    fn job_counts_grow_across_worker_restarts() {
        let id = "metrics-test-restarts";
        assert_eq!(
            job_count_increments(&row(id, "a", 10, 1)),
            (10, 1),
            "first sight: the whole count"
        );
        assert_eq!(
            job_count_increments(&row(id, "a", 10, 1)),
            (0, 0),
            "nothing new"
        );
        assert_eq!(job_count_increments(&row(id, "a", 25, 3)), (15, 2));
        // A new process starts again from 0: its own count is added, nothing taken away.
        assert_eq!(job_count_increments(&row(id, "b", 4, 0)), (4, 0));
        assert_eq!(job_count_increments(&row(id, "b", 9, 1)), (5, 1));
        // Another worker is counted apart.
        assert_eq!(
            job_count_increments(&row("metrics-test-other", "a", 2, 2)),
            (2, 2)
        );
    }
}
