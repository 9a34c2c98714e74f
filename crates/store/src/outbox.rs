//! The outbox (`event_outbox`, migration 0016) and the deliveries of its events to the
//! exchange's webhook endpoints (`webhook_subscription`, `webhook_delivery`).
//!
//! An event is appended on the connection of the transaction that makes the change it tells
//! of ([`append_on`], called next to the change's audit entry), so it exists exactly when
//! that change committed; the same statement writes one delivery per endpoint subscribed to
//! its kind. A deliverer claims due deliveries ([`Store::webhook_claim`]: pending, due, not
//! claimed by another deliverer, and no earlier event of the same subject still pending for
//! that endpoint, so one subject's events reach an endpoint in order), posts them and
//! settles each ([`Store::webhook_settle`]) under its claim. One SQL text serves both
//! dialects.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool, per_dialect};
use crate::{AuditInsert, Store, StoreError};

/// The longest error kept of a failed delivery attempt.
pub const DELIVERY_ERROR_LEN_MAX: usize = 2000;
/// At most this many deliveries are claimed at once.
pub const CLAIM_MAX: u32 = 100;
/// At most this many deliveries are set back to pending by one replay.
pub const REPLAY_MAX: u32 = 1000;
/// The longest endpoint name.
pub const ENDPOINT_NAME_LEN_MAX: usize = 64;

/// An event to append with a change.
#[derive(Debug, Clone)]
pub struct EventInsert {
    /// What happened: `withdrawal.completed`, `deposit.confirmed`.
    pub kind: String,
    /// What it happened to: `withdrawal:42`. One subject's events are delivered in order.
    pub subject: String,
    pub payload: serde_json::Value,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// The outbox's order: a later change of the same subject has a larger one.
    pub sequence: i64,
    /// The stable id receivers deduplicate on.
    pub event_id: String,
    pub kind: String,
    pub subject: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// One endpoint's subscriptions, as configured: kinds (`withdrawal.completed`), prefixes
/// (`withdrawal.*`) or everything (`*`).
#[derive(Debug, Clone)]
pub struct WebhookSubscription {
    pub endpoint: String,
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Given up after the retry period; replayable.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryState> {
        match text {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The claim under which a deliverer holds it (set only by [`Store::webhook_claim`]).
    pub claim: Option<i64>,
    pub event: EventRow,
}

/// What a deliverer's attempt came to.
#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered { status: i32 },
    /// It did not: try again at `retry_at`, or give up (`failed`) when that is `None`.
    Failed {
        status: Option<i32>,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryList {
    pub endpoint: Option<String>,
    pub state: Option<DeliveryState>,
    pub subject: Option<String>,
    /// Only deliveries with a smaller id (paging back, newest first).
    pub before: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default)]
pub struct EventList {
    pub kind: Option<String>,
    pub subject: Option<String>,
    /// Only events after this sequence (paging forward, oldest first).
    pub after: Option<i64>,
    pub limit: u32,
}

/// Which deliveries a replay sets back to pending.
#[derive(Debug, Clone)]
pub enum ReplaySelect {
    /// These deliveries, whatever their state.
    Ids(Vec<i64>),
    /// Every failed delivery, of one endpoint or all.
    Failed { endpoint: Option<String> },
}

/// Per endpoint and state, how many deliveries and the oldest pending one's age base.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryCount {
    pub endpoint: String,
    pub state: DeliveryState,
    pub count: i64,
    /// The oldest one's event time (pending only).
    pub oldest: Option<DateTime<Utc>>,
}

const EVENT_COLUMNS: &str = "e.id as sequence, e.event_id, e.kind, e.subject, e.payload, \
    e.created_at";

const DELIVERY_COLUMNS: &str = "w.id, w.endpoint, w.state, w.attempts, w.next_attempt_at, \
    w.first_attempt_at, w.last_attempt_at, w.last_status, w.last_error, w.delivered_at, \
    w.claim, e.id as sequence, e.event_id, e.kind, e.subject, e.payload, e.created_at";

macro_rules! decode_event {
    ($row:expr, $d:ident) => {{
        let row = $row;
        EventRow {
            sequence: row.try_get("sequence")?,
            event_id: row.try_get("event_id")?,
            kind: row.try_get("kind")?,
            subject: row.try_get("subject")?,
            payload: $d::read_json(row, "payload")?,
            created_at: $d::read_time(row, "created_at")?,
        }
    }};
}

macro_rules! decode_delivery {
    ($row:expr, $d:ident) => {{
        let row = $row;
        let state: String = row.try_get("state")?;
        DeliveryRow {
            id: row.try_get("id")?,
            endpoint: row.try_get("endpoint")?,
            state: DeliveryState::parse(&state)
                .ok_or_else(|| crate::corrupt("webhook_delivery.state", &state))?,
            attempts: row.try_get("attempts")?,
            next_attempt_at: $d::read_time(row, "next_attempt_at")?,
            first_attempt_at: $d::read_time_opt(row, "first_attempt_at")?,
            last_attempt_at: $d::read_time_opt(row, "last_attempt_at")?,
            last_status: row.try_get("last_status")?,
            last_error: row.try_get("last_error")?,
            delivered_at: $d::read_time_opt(row, "delivered_at")?,
            claim: row.try_get("claim")?,
            event: decode_event!(row, $d),
        }
    }};
}

per_dialect! {
    /// Appends `event` on the caller's connection, so it commits with the change it tells
    /// of, with one pending delivery for each endpoint subscribed to its kind.
    pub(crate) async fn append_on(
        connection: &mut d::Connection,
        event: &EventInsert,
    ) -> Result<i64, StoreError> {
        let sequence: i64 = sqlx::query_scalar(
            "insert into event_outbox (event_id, kind, subject, payload, created_at)
             values ($1, $2, $3, $4, $5) returning id",
        )
        .bind(new_event_id())
        .bind(&event.kind)
        .bind(&event.subject)
        .bind(d::json(&event.payload))
        .bind(d::time(event.now))
        .fetch_one(&mut *connection)
        .await?;
        sqlx::query(
            "insert into webhook_delivery (endpoint, event, subject, state, attempts, next_attempt_at)
             select distinct endpoint, $1, $2, 'pending', 0, $3 from webhook_subscription
             where $4 like pattern
             on conflict do nothing",
        )
        .bind(sequence)
        .bind(&event.subject)
        .bind(d::time(event.now))
        .bind(&event.kind)
        .execute(&mut *connection)
        .await?;
        Ok(sequence)
    }

    /// Appends `events` on the caller's connection, as [`append_on`] does one, a few hundred
    /// a statement: what a scan's commit, credit or rollback tells of its deposits.
    pub(crate) async fn append_many_on(
        connection: &mut d::Connection,
        events: &[EventInsert],
    ) -> Result<(), StoreError> {
        for chunk in events.chunks(500) {
            let mut insert = sqlx::QueryBuilder::<d::Db>::new(
                "insert into event_outbox (event_id, kind, subject, payload, created_at) ",
            );
            insert.push_values(chunk, |mut row, event| {
                row.push_bind(new_event_id())
                    .push_bind(event.kind.clone())
                    .push_bind(event.subject.clone())
                    .push_bind(d::json(&event.payload))
                    .push_bind(d::time(event.now));
            });
            insert.push(" returning id");
            let ids: Vec<i64> = insert
                .build_query_scalar()
                .fetch_all(&mut *connection)
                .await?;
            let mut deliveries = sqlx::QueryBuilder::<d::Db>::new(
                "insert into webhook_delivery (endpoint, event, subject, state, attempts, next_attempt_at)
                 select distinct s.endpoint, e.id, e.subject, 'pending', 0, e.created_at
                 from event_outbox e join webhook_subscription s on e.kind like s.pattern
                 where e.id in (",
            );
            let mut separated = deliveries.separated(", ");
            for id in &ids {
                separated.push_bind(*id);
            }
            deliveries.push(") on conflict do nothing");
            deliveries.build().execute(&mut *connection).await?;
        }
        Ok(())
    }
}

/// A random id no other event has: `evt_` and 128 random bits in hex.
fn new_event_id() -> String {
    format!("evt_{:032x}", rand::random::<u128>())
}

/// The LIKE pattern of a subscription: `withdrawal.*` → `withdrawal.%`, `*` → `%`; an exact
/// kind stays itself (its `_` matches only itself among the kinds there are).
fn like_pattern(event: &str) -> Result<String, StoreError> {
    let prefix = event.strip_suffix('*').unwrap_or(event);
    let valid = !event.is_empty()
        && event.len() <= 63
        && prefix
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'.' || byte == b'_')
        && (prefix.len() == event.len() || prefix.is_empty() || prefix.ends_with('.'));
    if !valid {
        return Err(StoreError::Invalid(format!(
            "event subscription {event:?}: use a kind (withdrawal.completed), a prefix (withdrawal.*) or *"
        )));
    }
    Ok(if prefix.len() == event.len() {
        event.to_string()
    } else {
        format!("{prefix}%")
    })
}

pub(crate) fn check_endpoint_name(name: &str) -> Result<(), StoreError> {
    let valid = !name.is_empty()
        && name.len() <= ENDPOINT_NAME_LEN_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "webhook endpoint name {name:?}: 1 to {ENDPOINT_NAME_LEN_MAX} letters, digits, '-' or '_'"
        )))
    }
}

fn truncate(error: &str) -> String {
    let mut end = error.len().min(DELIVERY_ERROR_LEN_MAX);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_string()
}

impl Store {
    /// Makes the stored subscriptions exactly `subscriptions` (the configured endpoints):
    /// events appended from now on get deliveries for them. An endpoint no longer
    /// configured gets no new deliveries; its earlier ones stay, visible and replayable.
    pub async fn webhook_subscribe(
        &self,
        subscriptions: &[WebhookSubscription],
    ) -> Result<(), StoreError> {
        let mut rows = Vec::new();
        for subscription in subscriptions {
            check_endpoint_name(&subscription.endpoint)?;
            for event in &subscription.events {
                rows.push((subscription.endpoint.clone(), like_pattern(event)?));
            }
        }
        in_write_tx!(self, |_store, conn, d| {
            sqlx::query("delete from webhook_subscription")
                .execute(&mut *conn)
                .await?;
            for (endpoint, pattern) in &rows {
                sqlx::query(
                    "insert into webhook_subscription (endpoint, pattern) values ($1, $2)
                     on conflict do nothing",
                )
                .bind(endpoint)
                .bind(pattern)
                .execute(&mut *conn)
                .await?;
            }
            Ok::<(), StoreError>(())
        })
    }

    /// Claims up to `limit` due deliveries of `endpoint` for `lease`: pending, due, not
    /// claimed by a live claim, and the oldest pending one of their subject for that
    /// endpoint. Each is claimed by a compare-and-set, so two deliverers never hold one.
    pub async fn webhook_claim(
        &self,
        endpoint: &str,
        limit: u32,
        lease: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let limit = i64::from(limit.clamp(1, CLAIM_MAX));
        let until = now
            + chrono::Duration::from_std(lease)
                .map_err(|_| StoreError::Invalid("lease too long".into()))?;
        // The head of each subject, as a correlated `min` that seeks the partial index
        // `webhook_delivery_order` once per candidate. (An anti-join said the same, but
        // with a fresh backlog's stale statistics Postgres planned it as a nested loop over
        // the whole index: 5,000 pending deliveries took 8.6 s per claim, this 14 ms.)
        let candidates = "select w.id from webhook_delivery w
             where w.endpoint = $1 and w.state = 'pending' and w.next_attempt_at <= $2
               and (w.claimed_until is null or w.claimed_until <= $2)
               and w.event = (
                   select min(p.event) from webhook_delivery p
                   where p.endpoint = $1 and p.subject = w.subject and p.state = 'pending')
             order by w.event
             limit $3";
        let claimed = "update webhook_delivery set claim = $1, claimed_until = $2
             where id = $3 and state = 'pending'
               and (claimed_until is null or claimed_until <= $4)
             returning id";
        let select = format!(
            "select {DELIVERY_COLUMNS} from webhook_delivery w
             join event_outbox e on e.id = w.event where w.id = $1"
        );
        on_pool!(self, |pool, d| {
            let ids: Vec<i64> = sqlx::query_scalar(candidates)
                .bind(endpoint)
                .bind(d::time(now))
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                let claim = rand::random::<i64>();
                let won: Option<i64> = sqlx::query_scalar(claimed)
                    .bind(claim)
                    .bind(d::time(until))
                    .bind(id)
                    .bind(d::time(now))
                    .fetch_optional(pool)
                    .await?;
                if won.is_none() {
                    continue;
                }
                let row = sqlx::query(sqlx::AssertSqlSafe(select.as_str()))
                    .bind(id)
                    .fetch_one(pool)
                    .await?;
                rows.push(decode_delivery!(&row, d));
            }
            Ok(rows)
        })
    }

    /// Records an attempt's outcome under the claim `delivery` was claimed with; `false`
    /// (nothing changed) when that claim is no longer current.
    pub async fn webhook_settle(
        &self,
        delivery: &DeliveryRow,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let Some(claim) = delivery.claim else {
            return Err(StoreError::Invalid(format!(
                "delivery {} was not claimed",
                delivery.id
            )));
        };
        let (state, status, error, next) = match outcome {
            DeliveryOutcome::Delivered { status } => {
                (DeliveryState::Delivered, Some(*status), None, now)
            }
            DeliveryOutcome::Failed {
                status,
                error,
                retry_at,
            } => (
                if retry_at.is_some() {
                    DeliveryState::Pending
                } else {
                    DeliveryState::Failed
                },
                *status,
                Some(truncate(error)),
                retry_at.unwrap_or(now),
            ),
        };
        on_pool!(self, |pool, d| {
            let done = sqlx::query(
                "update webhook_delivery
                 set state = $1, attempts = attempts + 1, last_status = $2, last_error = $3,
                     next_attempt_at = $4, last_attempt_at = $5,
                     first_attempt_at = coalesce(first_attempt_at, $5),
                     delivered_at = case when $1 = 'delivered' then $5 else delivered_at end,
                     claim = null, claimed_until = null
                 where id = $6 and state = 'pending' and claim = $7",
            )
            .bind(state.as_str())
            .bind(status)
            .bind(error)
            .bind(d::time(next))
            .bind(d::time(now))
            .bind(delivery.id)
            .bind(claim)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Sets the selected deliveries back to pending, due now, with a fresh retry period,
    /// and audits it; returns how many.
    pub async fn webhook_replay(
        &self,
        select: &ReplaySelect,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        domain::check_text("actor", actor, domain::Controls::None)
            .map_err(|error| StoreError::Invalid(error.to_string()))?;
        let (ids, endpoint) = match select {
            ReplaySelect::Ids(ids) => {
                if ids.is_empty() || ids.len() > REPLAY_MAX as usize {
                    return Err(StoreError::Invalid(format!(
                        "replay 1 to {REPLAY_MAX} deliveries at a time"
                    )));
                }
                (Some(ids.clone()), None)
            }
            ReplaySelect::Failed { endpoint } => {
                if let Some(endpoint) = endpoint {
                    check_endpoint_name(endpoint)?;
                }
                (None, endpoint.clone())
            }
        };
        in_write_tx!(self, |_store, conn, d| {
            let ids: Vec<i64> = match ids {
                Some(ids) => {
                    let mut found = Vec::with_capacity(ids.len());
                    for id in ids {
                        let exists: Option<i64> =
                            sqlx::query_scalar("select id from webhook_delivery where id = $1")
                                .bind(id)
                                .fetch_optional(&mut *conn)
                                .await?;
                        match exists {
                            Some(id) => found.push(id),
                            None => {
                                return Err(StoreError::NotFound {
                                    what: "delivery",
                                    id: id.to_string(),
                                });
                            }
                        }
                    }
                    found
                }
                None => {
                    sqlx::query_scalar(
                        "select id from webhook_delivery
                         where state = 'failed' and ($1 is null or endpoint = $1)
                         order by id limit $2",
                    )
                    .bind(endpoint.as_deref())
                    .bind(i64::from(REPLAY_MAX))
                    .fetch_all(&mut *conn)
                    .await?
                }
            };
            for id in &ids {
                sqlx::query(
                    "update webhook_delivery
                     set state = 'pending', attempts = 0, next_attempt_at = $1,
                         first_attempt_at = null, delivered_at = null,
                         claim = null, claimed_until = null
                     where id = $2",
                )
                .bind(d::time(now))
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            if !ids.is_empty() {
                d::audit::insert_on(
                    &mut *conn,
                    &AuditInsert {
                        actor: actor.to_string(),
                        action: "webhook.replay".into(),
                        target: match select {
                            ReplaySelect::Failed {
                                endpoint: Some(endpoint),
                            } => format!("webhook:{endpoint}"),
                            _ => "webhook".into(),
                        },
                        details: serde_json::json!({ "deliveries": ids }),
                        now,
                    },
                )
                .await?;
            }
            Ok(ids.len() as u64)
        })
    }

    /// Deliveries, newest first, with their events.
    pub async fn webhook_deliveries(
        &self,
        list: &DeliveryList,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        if let Some(endpoint) = &list.endpoint {
            check_endpoint_name(endpoint)?;
        }
        let limit = i64::from(list.limit.clamp(1, domain::limits::LIST_LIMIT_MAX));
        let sql = format!(
            "select {DELIVERY_COLUMNS} from webhook_delivery w
             join event_outbox e on e.id = w.event
             where ($1 is null or w.endpoint = $1) and ($2 is null or w.state = $2)
               and ($3 is null or w.subject = $3) and ($4 is null or w.id < $4)
             order by w.id desc limit $5"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(list.endpoint.as_deref())
                .bind(list.state.map(DeliveryState::as_str))
                .bind(list.subject.as_deref())
                .bind(list.before)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut deliveries = Vec::with_capacity(rows.len());
            for row in &rows {
                deliveries.push(decode_delivery!(row, d));
            }
            Ok(deliveries)
        })
    }

    /// Events, oldest first.
    pub async fn events_list(&self, list: &EventList) -> Result<Vec<EventRow>, StoreError> {
        let limit = i64::from(list.limit.clamp(1, domain::limits::LIST_LIMIT_MAX));
        let sql = format!(
            "select {EVENT_COLUMNS} from event_outbox e
             where ($1 is null or e.kind = $1) and ($2 is null or e.subject = $2)
               and ($3 is null or e.id > $3)
             order by e.id limit $4"
        );
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(list.kind.as_deref())
                .bind(list.subject.as_deref())
                .bind(list.after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                events.push(decode_event!(row, d));
            }
            Ok(events)
        })
    }

    /// Per endpoint and state, how many deliveries (what `/metrics` and the health of the
    /// deliverer read), with the oldest pending one's event time.
    pub async fn webhook_counts(&self) -> Result<Vec<DeliveryCount>, StoreError> {
        on_pool!(self, |pool, d| {
            let rows = sqlx::query(
                "select w.endpoint, w.state, count(*) as count,
                        min(case when w.state = 'pending' then e.created_at end) as oldest
                 from webhook_delivery w join event_outbox e on e.id = w.event
                 group by w.endpoint, w.state order by w.endpoint, w.state",
            )
            .fetch_all(pool)
            .await?;
            let mut counts = Vec::with_capacity(rows.len());
            for row in &rows {
                let state: String = row.try_get("state")?;
                counts.push(DeliveryCount {
                    endpoint: row.try_get("endpoint")?,
                    state: DeliveryState::parse(&state)
                        .ok_or_else(|| crate::corrupt("webhook_delivery.state", &state))?,
                    count: row.try_get("count")?,
                    oldest: d::read_time_opt(row, "oldest")?,
                });
            }
            Ok(counts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_become_like_patterns_and_nonsense_is_refused() {
        assert_eq!(like_pattern("*").unwrap(), "%");
        assert_eq!(like_pattern("withdrawal.*").unwrap(), "withdrawal.%");
        assert_eq!(
            like_pattern("withdrawal.completed").unwrap(),
            "withdrawal.completed"
        );
        for bad in [
            "",
            "with%",
            "withdrawal*",
            "a.*.b",
            "Withdrawal.*",
            "x;drop",
        ] {
            assert!(like_pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn endpoint_names_are_checked() {
        assert!(check_endpoint_name("backend-1").is_ok());
        for bad in ["", "a b", "ä", &"x".repeat(65)] {
            assert!(check_endpoint_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
