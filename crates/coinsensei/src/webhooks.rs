//! Webhooks: the `[[webhooks]]` endpoints of the configuration, and the deliverer that posts
//! the outbox's events to them (`docs/webhooks.md`).
//!
//! The deliverer runs in the control plane, one task per endpoint. Each round it claims the
//! endpoint's due deliveries from the store (at most one per subject, the oldest pending, so
//! one withdrawal's events arrive in order), posts each as JSON signed with HMAC-SHA256 over
//! `timestamp.body` (`CoinSensei-Signature: t=...,v1=...`), and settles it: delivered on a
//! 2xx, else retried with exponential backoff until `retry_for` after its first attempt, then
//! `failed` (listed and replayable). A delivery is claimed for its timeout and a margin, so a
//! deliverer killed mid-post leaves it to be posted again: at least once, with the same event
//! id. Posting is bounded in time and runs apart from the workers, which only write the
//! outbox inside their own transactions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use store::{DeliveryOutcome, DeliveryRow, Store, WebhookSubscription};
use tokio_util::sync::CancellationToken;

use crate::config::Secret;

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "coinsensei-signature";
/// The event's stable id, also in the body: what a receiver deduplicates on.
pub const EVENT_ID_HEADER: &str = "coinsensei-event-id";
/// Which attempt this is for the event at this endpoint, from 1.
pub const ATTEMPT_HEADER: &str = "coinsensei-delivery-attempt";

/// The shortest secret taken: 16 bytes (128 bits) of printable ASCII.
pub const SECRET_LEN_MIN: usize = 16;
const SECRET_LEN_MAX: usize = 256;
/// How many endpoints a configuration may name.
pub const ENDPOINTS_MAX: usize = 16;

/// One `[[webhooks]]` entry as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Names the endpoint in the deliveries list, the metrics and `events replay`.
    pub name: String,
    /// Where events are posted: http:// or https://.
    pub url: String,
    /// The signing secret, or `secret_file` naming a file that holds it.
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// Which events: kinds (`withdrawal.completed`), prefixes (`withdrawal.*`) or `*`
    /// (default).
    pub events: Option<Vec<String>>,
    /// Seconds a post may take, connection and answer (default 10).
    pub timeout: Option<f64>,
    /// Seconds before the first retry, doubled each time (default 5).
    pub retry_base: Option<f64>,
    /// The longest wait between retries (default 3600).
    pub retry_max_delay: Option<f64>,
    /// Seconds after the first attempt to keep retrying before giving up (default 86400).
    pub retry_for: Option<f64>,
    /// Posts in flight at once, each for another subject (default 8).
    pub concurrency: Option<u32>,
}

/// A validated endpoint. Its `Debug` shows the URL's origin only and never the secret.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    secret: Secret,
    pub events: Vec<String>,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_max_delay: Duration,
    pub retry_for: Duration,
    pub concurrency: u32,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.url == other.url && self.events == other.events
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url.origin().ascii_serialization())
            .field("secret", &self.secret)
            .field("events", &self.events)
            .field("timeout", &self.timeout)
            .field("retry_for", &self.retry_for)
            .finish()
    }
}

fn seconds(key: &str, value: Option<f64>, default: f64, max: f64) -> anyhow::Result<Duration> {
    let value = value.unwrap_or(default);
    if !value.is_finite() || value < 0.001 || value > max {
        bail!(
            "invalid configuration key `{key}`: {value} is out of range; expected seconds between 0.001 and {max}"
        );
    }
    Ok(Duration::from_secs_f64(value))
}

/// Checks the `[[webhooks]]` entries: unique names, http(s) URLs, a secret of at least
/// [`SECRET_LEN_MIN`] printable characters, known event patterns, bounded timings.
pub fn endpoints(entries: Vec<RawWebhook>) -> anyhow::Result<Vec<Endpoint>> {
    if entries.len() > ENDPOINTS_MAX {
        bail!("invalid configuration key `webhooks`: at most {ENDPOINTS_MAX} endpoints");
    }
    let mut out: Vec<Endpoint> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let key = |field: &str| format!("webhooks[{index}].{field}");
        let name_ok = !entry.name.is_empty()
            && entry.name.len() <= store::ENDPOINT_NAME_LEN_MAX
            && entry
                .name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !name_ok {
            bail!(
                "invalid configuration key `{}`: {:?} is not 1 to {} letters, digits, '-' or '_'",
                key("name"),
                entry.name,
                store::ENDPOINT_NAME_LEN_MAX
            );
        }
        if out.iter().any(|endpoint| endpoint.name == entry.name) {
            bail!(
                "invalid configuration key `{}`: {:?} is named twice",
                key("name"),
                entry.name
            );
        }
        let url = url::Url::parse(&entry.url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .with_context(|| {
                format!(
                    "invalid configuration key `{}`: not an http:// or https:// URL",
                    key("url")
                )
            })?;
        if !url.username().is_empty() || url.password().is_some() {
            bail!(
                "invalid configuration key `{}`: credentials in the URL would be sent with every event; the signature is what authenticates it",
                key("url")
            );
        }
        let secret = match (entry.secret, entry.secret_file) {
            (Some(secret), None) => secret.0,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "invalid configuration key `{}`: cannot read {}",
                        key("secret_file"),
                        path.display()
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            _ => bail!(
                "invalid configuration key `{}`: give exactly one of `secret` and `secret_file`",
                key("secret")
            ),
        };
        if secret.len() < SECRET_LEN_MIN
            || secret.len() > SECRET_LEN_MAX
            || !secret.bytes().all(|byte| byte.is_ascii_graphic())
        {
            bail!(
                "invalid configuration key `{}`: {SECRET_LEN_MIN} to {SECRET_LEN_MAX} printable ASCII characters without spaces (the secret is not shown)",
                key("secret")
            );
        }
        let events = entry.events.unwrap_or_else(|| vec!["*".into()]);
        if events.is_empty() {
            bail!(
                "invalid configuration key `{}`: name at least one event, or leave it out for all",
                key("events")
            );
        }
        for event in &events {
            if !event_pattern_known(event) {
                bail!(
                    "invalid configuration key `{}`: {event:?} is not an event kind ({}), a prefix such as `withdrawal.*`, or `*`",
                    key("events"),
                    EVENT_KINDS.join(", ")
                );
            }
        }
        let concurrency = entry.concurrency.unwrap_or(8);
        if !(1..=64).contains(&concurrency) {
            bail!(
                "invalid configuration key `{}`: {concurrency} is out of range; expected 1 to 64",
                key("concurrency")
            );
        }
        let endpoint = Endpoint {
            name: entry.name,
            url,
            secret: Secret(secret),
            events,
            timeout: seconds(&key("timeout"), entry.timeout, 10.0, 120.0)?,
            retry_base: seconds(&key("retry_base"), entry.retry_base, 5.0, 3600.0)?,
            retry_max_delay: seconds(
                &key("retry_max_delay"),
                entry.retry_max_delay,
                3600.0,
                86_400.0,
            )?,
            retry_for: seconds(&key("retry_for"), entry.retry_for, 86_400.0, 604_800.0)?,
            concurrency,
        };
        if endpoint.retry_base > endpoint.retry_max_delay {
            bail!(
                "invalid configuration key `{}`: above `retry_max_delay`",
                key("retry_base")
            );
        }
        out.push(endpoint);
    }
    Ok(out)
}

/// Every kind of event there is. Deposits add theirs here.
pub const EVENT_KINDS: &[&str] = &[
    "withdrawal.created",
    "withdrawal.approval",
    "withdrawal.pending",
    "withdrawal.processing",
    "withdrawal.broadcast",
    "withdrawal.confirming",
    "withdrawal.completed",
    "withdrawal.failed",
    "withdrawal.canceled",
    "withdrawal.manual_review",
    "deposit.detected",
    "deposit.confirmed",
    "deposit.orphaned",
    "deposit.reversed",
];

fn event_pattern_known(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => {
            prefix.ends_with('.') && EVENT_KINDS.iter().any(|kind| kind.starts_with(prefix))
        }
        None => EVENT_KINDS.contains(&pattern),
    }
}

/// The subscriptions the store keeps for `endpoints`.
pub fn subscriptions(endpoints: &[Endpoint]) -> Vec<WebhookSubscription> {
    endpoints
        .iter()
        .map(|endpoint| WebhookSubscription {
            endpoint: endpoint.name.clone(),
            events: endpoint.events.clone(),
        })
        .collect()
}

/// The body posted for a delivery: the event, with its stable id.
pub fn body(delivery: &DeliveryRow) -> Vec<u8> {
    let event = &delivery.event;
    let envelope = serde_json::json!({
        "id": event.event_id,
        "type": event.kind,
        "subject": event.subject,
        "sequence": event.sequence,
        "created_at": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": event.payload,
    });
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The wait before attempt `attempts + 1`: `base` doubled per attempt made, at most `max`,
/// less up to a fifth at random so that endpoints coming back are not hit all at once.
pub fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let delay = doubled.min(max);
    let jitter = delay.mul_f64(rand::random::<f64>()) / 5;
    delay.saturating_sub(jitter)
}

/// Keeps the store's subscriptions in step with `endpoints` and delivers to each until
/// `cancel` fires.
pub async fn run(
    store: Store,
    endpoints: Vec<Endpoint>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // Subscribed first, so events appended from here on get their deliveries; an endpoint
    // taken out of the configuration gets no new ones. Retried: the control plane starts
    // whatever the database is doing.
    let subscriptions = subscriptions(&endpoints);
    loop {
        match store.webhook_subscribe(&subscriptions).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%error, "cannot record the webhook subscriptions; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
    // reqwest is built without a default TLS provider; https endpoints use ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        // An endpoint that redirects could send the event anywhere: a redirect is a failure.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("coinsensei/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the webhook HTTP client")?;
    let mut tasks = tokio::task::JoinSet::new();
    for endpoint in endpoints {
        tasks.spawn(deliver_loop(
            store.clone(),
            client.clone(),
            Arc::new(endpoint),
            cancel.clone(),
        ));
    }
    while let Some(ended) = tasks.join_next().await {
        if let Err(error) = ended
            && error.is_panic()
        {
            // Never silent: an endpoint whose deliverer died gets nothing until a restart.
            tracing::error!(%error, "a webhook deliverer stopped; restart the control plane");
        }
    }
    Ok(())
}

/// How often an idle endpoint's deliverer looks for due deliveries.
const IDLE_POLL: Duration = Duration::from_millis(500);

async fn deliver_loop(
    store: Store,
    client: reqwest::Client,
    endpoint: Arc<Endpoint>,
    cancel: CancellationToken,
) {
    // A claim outlives the post it covers: the timeout and a margin for settling. A
    // deliverer killed mid-post leaves its claims to run out this long after.
    let lease = endpoint.timeout + Duration::from_secs(5);
    while !cancel.is_cancelled() {
        let claimed = match store
            .webhook_claim(&endpoint.name, endpoint.concurrency, lease, Utc::now())
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(endpoint = %endpoint.name, %error, "cannot claim webhook deliveries");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(IDLE_POLL) => continue,
            }
        }
        // Posting is not cut short by a shutdown: each post is bounded by its timeout, and
        // a post abandoned half way would be posted again anyway.
        let mut posts = tokio::task::JoinSet::new();
        for delivery in claimed {
            let store = store.clone();
            let client = client.clone();
            let endpoint = Arc::clone(&endpoint);
            posts.spawn(async move {
                let outcome = post(&client, &endpoint, &delivery).await;
                record(&endpoint, &delivery, &outcome);
                if let Err(error) = store.webhook_settle(&delivery, &outcome, Utc::now()).await {
                    // Unsettled, its claim runs out and it is posted again: at least once.
                    tracing::warn!(endpoint = %endpoint.name, delivery = delivery.id, %error, "cannot record a webhook delivery");
                }
            });
        }
        while posts.join_next().await.is_some() {}
    }
}

fn record(endpoint: &Endpoint, delivery: &DeliveryRow, outcome: &DeliveryOutcome) {
    let label = match outcome {
        DeliveryOutcome::Delivered { .. } => "delivered",
        DeliveryOutcome::Failed {
            retry_at: Some(_), ..
        } => "retry",
        DeliveryOutcome::Failed { retry_at: None, .. } => "failed",
    };
    metrics::counter!("coinsensei_webhook_posts_total", "endpoint" => endpoint.name.clone(), "outcome" => label)
        .increment(1);
    match outcome {
        DeliveryOutcome::Delivered { status } => tracing::debug!(
            endpoint = %endpoint.name, event = %delivery.event.event_id, status, "webhook delivered"
        ),
        DeliveryOutcome::Failed {
            status,
            error,
            retry_at,
        } => tracing::info!(
            endpoint = %endpoint.name, event = %delivery.event.event_id, ?status, %error,
            retry_at = ?retry_at, "webhook not delivered"
        ),
    }
}

/// Posts one delivery and says what came of it, with when to retry.
pub async fn post(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    delivery: &DeliveryRow,
) -> DeliveryOutcome {
    let body = body(delivery);
    let now = Utc::now();
    let attempt = delivery.attempts.saturating_add(1);
    let sent = client
        .post(endpoint.url.clone())
        .timeout(endpoint.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            signature(&endpoint.secret.0, now.timestamp(), &body),
        )
        .header(EVENT_ID_HEADER, &delivery.event.event_id)
        .header(ATTEMPT_HEADER, attempt.to_string())
        .body(body)
        .send()
        .await;
    let (status, error) = match sent {
        Ok(response) if response.status().is_success() => {
            return DeliveryOutcome::Delivered {
                status: i32::from(response.status().as_u16()),
            };
        }
        Ok(response) => (
            Some(i32::from(response.status().as_u16())),
            format!("the endpoint answered {}", response.status()),
        ),
        Err(error) if error.is_timeout() => {
            (None, format!("no answer within {:?}", endpoint.timeout))
        }
        Err(error) if error.is_connect() => (None, "cannot connect to the endpoint".to_string()),
        Err(error) => (None, format!("posting failed: {}", error.without_url())),
    };
    let first = delivery.first_attempt_at.unwrap_or(now);
    let delay = backoff(
        endpoint.retry_base,
        endpoint.retry_max_delay,
        u32::try_from(attempt).unwrap_or(u32::MAX),
    );
    let retry_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
    let give_up = retry_at - first
        > chrono::Duration::from_std(endpoint.retry_for).unwrap_or(chrono::Duration::zero());
    DeliveryOutcome::Failed {
        status,
        error,
        retry_at: (!give_up).then_some(retry_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, url: &str, secret: &str) -> RawWebhook {
        RawWebhook {
            name: name.into(),
            url: url.into(),
            secret: Some(Secret(secret.into())),
            secret_file: None,
            events: None,
            timeout: None,
            retry_base: None,
            retry_max_delay: None,
            retry_for: None,
            concurrency: None,
        }
    }

    const SECRET: &str = "0123456789abcdef";

    #[test]
    fn endpoints_are_checked_with_errors_naming_the_key() {
        let ok = endpoints(vec![raw("backend", "https://example.com/hook", SECRET)]).unwrap();
        assert_eq!(ok[0].events, ["*"]);
        assert_eq!(ok[0].retry_for, Duration::from_secs(86_400));
        let debug = format!("{:?}", ok[0]);
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("/hook"), "{debug}");

        let mut unknown_event = raw("a", "https://example.com", SECRET);
        unknown_event.events = Some(vec!["withdrawal.paid".into()]);
        let mut no_events = raw("a", "https://example.com", SECRET);
        no_events.events = Some(vec![]);
        let mut both = raw("a", "https://example.com", SECRET);
        both.secret_file = Some("/dev/null".into());
        let mut slow = raw("a", "https://example.com", SECRET);
        slow.timeout = Some(-1.0);
        let mut bursts = raw("a", "https://example.com", SECRET);
        bursts.concurrency = Some(0);
        for (entries, key) in [
            (
                vec![raw("a", "ftp://example.com", SECRET)],
                "webhooks[0].url",
            ),
            (vec![raw("a", "not a url", SECRET)], "webhooks[0].url"),
            (
                vec![raw("a", "https://user:pw@example.com", SECRET)],
                "webhooks[0].url",
            ),
            (
                vec![raw("a", "https://example.com", "short")],
                "webhooks[0].secret",
            ),
            (
                vec![raw("a", "https://example.com", "with space in it!!")],
                "webhooks[0].secret",
            ),
            (
                vec![raw("a b", "https://example.com", SECRET)],
                "webhooks[0].name",
            ),
            (
                vec![
                    raw("a", "https://example.com", SECRET),
                    raw("a", "https://example.org", SECRET),
                ],
                "webhooks[1].name",
            ),
            (vec![unknown_event], "webhooks[0].events"),
            (vec![no_events], "webhooks[0].events"),
            (vec![both], "webhooks[0].secret"),
            (vec![slow], "webhooks[0].timeout"),
            (vec![bursts], "webhooks[0].concurrency"),
        ] {
            let error = endpoints(entries).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{error}");
            assert!(!error.contains(SECRET), "{error}");
        }
    }

    #[test]
    fn event_patterns_name_kinds_that_exist() {
        for good in ["*", "withdrawal.*", "withdrawal.completed", "deposit.*"] {
            assert!(event_pattern_known(good), "{good}");
        }
        for bad in [
            "",
            "ledger.*",
            "withdrawal",
            "withdrawal*",
            "withdrawal.paid",
            "**",
        ] {
            assert!(!event_pattern_known(bad), "{bad}");
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_and_body() {
        // Computed independently: python3 -c 'import hmac, hashlib;
        // print(hmac.new(b"key", b"1.{}", hashlib.sha256).hexdigest())'
        let header = signature("key", 1, b"{}");
        assert_eq!(
            header,
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(3600);
        for (attempts, full) in [(1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (40, 3600)] {
            let delay = backoff(base, max, attempts);
            let full = Duration::from_secs(full);
            assert!(
                delay <= full && delay >= full.mul_f64(0.8),
                "{attempts}: {delay:?}"
            );
        }
    }
}
