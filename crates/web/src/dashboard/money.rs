//! The dashboard's money pages: withdrawals waiting for approval (`/approvals`) with Approve
//! and Reject, each withdrawal's decisions, and the registered destinations of allowlist mode
//! (`/destinations`) with Remove. Every action goes through the API's own code
//! ([`crate::withdrawals::decide`], [`crate::destinations::remove`]) as the session's token,
//! so the rules are the API's: operators and up decide, never the withdrawal's creator's
//! token, the same token twice counts once, a rejection needs a reason of at most
//! [`store::DECISION_REASON_LEN_MAX`] characters. A control that the rules would refuse is
//! shown disabled with the reason on hover; the server refuses it anyway.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::{Role, WithdrawalState};
use serde::Deserialize;
use store::{Approval, DestinationList, DestinationRow, WithdrawalList, WithdrawalRow};

use super::pages::{Layout, Stamp, ago, done, html, shorten};
use super::{DashError, Session};
use crate::AppState;

/// Held withdrawals listed at most (the oldest wait longest, but the newest come first, as
/// on every list; a queue of more than this is a matter for the API).
const APPROVALS_SHOWN_MAX: u32 = 100;
/// Registered destinations listed at most.
const DESTINATIONS_SHOWN_MAX: u32 = domain::limits::LIST_LIMIT_MAX;

/// One decision on a withdrawal, for people.
#[derive(Debug)]
pub(crate) struct DecisionLine {
    pub(crate) actor: String,
    pub(crate) approve: bool,
    pub(crate) reason: String,
    pub(crate) at: Stamp,
}

impl DecisionLine {
    pub(crate) fn new(approval: &Approval) -> Self {
        DecisionLine {
            actor: approval.actor.clone(),
            approve: approval.approve,
            reason: approval.reason.clone().unwrap_or_default(),
            at: Stamp(approval.decided_at),
        }
    }
}

/// A held withdrawal with what this operator may do about it.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) id: i64,
    pub(crate) chain: &'static str,
    pub(crate) asset: String,
    pub(crate) amount: String,
    pub(crate) to: String,
    pub(crate) to_short: String,
    pub(crate) reference: String,
    pub(crate) created_by: String,
    pub(crate) created_iso: String,
    pub(crate) age: String,
    pub(crate) approved: usize,
    pub(crate) required: u32,
    pub(crate) decisions: Vec<DecisionLine>,
    /// Whether this operator may approve or reject it now.
    pub(crate) may_decide: bool,
    /// Why not, when not.
    pub(crate) locked: Option<String>,
    /// What the confirmation names: the withdrawal, its amount and its destination.
    pub(crate) question: String,
    /// The longest reason a rejection may give.
    pub(crate) reason_max: usize,
}

/// Whether `token_id` made the withdrawal (its creator is `token:ID:NAME`).
fn created_by_token(row: &WithdrawalRow, token_id: i64) -> bool {
    row.created_by
        .strip_prefix("token:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse::<i64>().ok())
        == Some(token_id)
}

impl Held {
    pub(crate) fn new(
        row: &WithdrawalRow,
        approvals: &[Approval],
        state: &AppState,
        session: &Session,
        now: DateTime<Utc>,
    ) -> Held {
        let amount = crate::withdrawals::amount_text(row, &state.options.intake);
        let locked = if !session.allows(Role::Operator) {
            Some(format!(
                "approving and rejecting need the operator role; you are {}",
                session.token.role
            ))
        } else if created_by_token(row, session.token.id) {
            Some(
                "your token created this withdrawal: its creator can never approve or reject it"
                    .into(),
            )
        } else {
            approvals
                .iter()
                .find(|each| each.token_id == session.token.id)
                .map(|mine| {
                    format!(
                        "your token {} it already; another operator's token must decide next",
                        if mine.approve { "approved" } else { "rejected" }
                    )
                })
        };
        let may_decide = row.state == WithdrawalState::Approval && locked.is_none();
        Held {
            id: row.id,
            chain: row.chain.as_str(),
            asset: row.asset.clone(),
            question: format!(
                "withdrawal {}: {amount} {} on {} to {}",
                row.id, row.asset, row.chain, row.destination
            ),
            amount,
            to: row.destination.clone(),
            to_short: shorten(&row.destination),
            reference: row.reference.clone(),
            created_by: row.created_by.clone(),
            created_iso: row
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            age: ago(row.created_at, now),
            approved: approvals.iter().filter(|each| each.approve).count(),
            required: state.options.intake.approvals_required,
            decisions: approvals.iter().map(DecisionLine::new).collect(),
            may_decide,
            locked,
            reason_max: store::DECISION_REASON_LEN_MAX,
        }
    }

    /// What changes the row's HTML apart from its age (which the page's script ticks).
    fn fingerprint(&self) -> String {
        format!(
            "{}:{}:{}:{:?}",
            self.id,
            self.decisions.len(),
            self.may_decide,
            self.locked
        )
    }
}

#[derive(Template)]
#[template(path = "approval_rows.html")]
pub(crate) struct ApprovalRows<'a> {
    pub(crate) held: &'a [Held],
}

/// The withdrawals waiting for approval, as this session sees them, and their fingerprint.
pub(crate) async fn held(
    state: &AppState,
    session: &Session,
) -> Result<(Vec<Held>, String), DashError> {
    let rows = state
        .store
        .withdrawal_list(&WithdrawalList {
            state: Some(WithdrawalState::Approval),
            chain: None,
            reference: None,
            before_id: None,
            limit: APPROVALS_SHOWN_MAX,
        })
        .await?;
    let now = Utc::now();
    let mut held = Vec::with_capacity(rows.len());
    for row in &rows {
        let approvals = state.store.withdrawal_approvals(row.id).await?;
        held.push(Held::new(row, &approvals, state, session, now));
    }
    let key = held
        .iter()
        .map(Held::fingerprint)
        .collect::<Vec<_>>()
        .join("|");
    Ok((held, key))
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    layout: Layout,
    held: Vec<Held>,
}

/// `GET /approvals`: withdrawals held for approval, live.
pub(crate) async fn approvals_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, DashError> {
    let (held, _) = held(&state, &session).await?;
    html(&ApprovalsPage {
        layout: Layout::new(
            &session,
            "Approvals",
            "approvals",
            "/live?page=approvals".into(),
        ),
        held,
    })
}

/// What an Approve or Reject form sends: the reason (and, from a plain form, its CSRF
/// token, checked before this).
#[derive(Debug, Default, Deserialize)]
struct DecisionForm {
    reason: Option<String>,
    #[allow(
        dead_code,
        reason = "checked by the guard; a plain form sends it along"
    )]
    csrf: Option<String>,
}

/// `POST /withdrawals/{id}/{approve|reject}`: the API's decision as the session's token. The
/// page's live stream shows the result.
pub(crate) async fn decide(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
    approve: bool,
) -> Result<Response, DashError> {
    let id = crate::withdrawals::withdrawal_id(&id)?;
    let form: DecisionForm = if body.is_empty() {
        DecisionForm::default()
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|error| {
            DashError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the form is not readable: {error}"),
            )
        })?
    };
    // An empty field is no reason: the store then says a rejection needs one.
    let reason = form
        .reason
        .map(|reason| reason.trim().to_string())
        .filter(|reason| !reason.is_empty());
    crate::withdrawals::decide(
        &state.store,
        state.queue.as_ref(),
        &state.options.intake,
        &session.token,
        id,
        approve,
        reason,
    )
    .await?;
    Ok(done(&headers))
}

/// A withdrawal in manual review, with what this operator may do about it.
#[derive(Debug)]
pub(crate) struct Reviewable {
    pub(crate) id: i64,
    /// Whether this operator may ask for an action now.
    pub(crate) may_act: bool,
    /// Why not, when not.
    pub(crate) locked: Option<String>,
    /// What the confirmation names.
    pub(crate) question: String,
    pub(crate) reason_max: usize,
}

impl Reviewable {
    pub(crate) fn new(
        row: &WithdrawalRow,
        reviews: &[store::ReviewRow],
        state: &AppState,
        session: &Session,
    ) -> Reviewable {
        let amount = crate::withdrawals::amount_text(row, &state.options.intake);
        let locked = if !session.allows(Role::Operator) {
            Some(format!(
                "review actions need the operator role; you are {}",
                session.token.role
            ))
        } else {
            reviews
                .iter()
                .find(|each| each.state == store::ReviewState::Requested)
                .map(|open| {
                    format!(
                        "review {} ({}) is being checked on the chain; wait for its answer",
                        open.id, open.action
                    )
                })
        };
        Reviewable {
            id: row.id,
            may_act: locked.is_none(),
            locked,
            question: format!(
                "withdrawal {}: {amount} {} on {} to {}",
                row.id, row.asset, row.chain, row.destination
            ),
            reason_max: store::REVIEW_REASON_LEN_MAX,
        }
    }
}

/// A review, for people.
#[derive(Debug)]
pub(crate) struct ReviewLine {
    pub(crate) id: i64,
    pub(crate) at: Stamp,
    pub(crate) actor: String,
    pub(crate) action: &'static str,
    pub(crate) txid: Option<String>,
    pub(crate) reason: String,
    pub(crate) state: &'static str,
    pub(crate) outcome: String,
}

impl ReviewLine {
    pub(crate) fn new(review: &store::ReviewRow) -> Self {
        ReviewLine {
            id: review.id,
            at: Stamp(review.created_at),
            actor: review.actor.clone(),
            action: review.action.as_str(),
            txid: review.txid.clone(),
            reason: review.reason.clone(),
            state: review.state.as_str(),
            outcome: review.outcome.clone().unwrap_or_default(),
        }
    }
}

/// What a review form sends.
#[derive(Debug, Default, Deserialize)]
struct ReviewForm {
    action: String,
    txid: Option<String>,
    reason: Option<String>,
    #[allow(
        dead_code,
        reason = "checked by the guard; a plain form sends it along"
    )]
    csrf: Option<String>,
}

/// `POST /withdrawals/{id}/review`: the API's review request as the session's token. The
/// page's live stream shows the answer when the worker has checked it.
pub(crate) async fn review(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DashError> {
    let id = crate::withdrawals::withdrawal_id(&id)?;
    let form: ReviewForm = serde_urlencoded::from_bytes(&body).map_err(|error| {
        DashError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the form is not readable: {error}"),
        )
    })?;
    // The txid field is on the page for every action; it counts for mark_paid only.
    let txid = form
        .txid
        .map(|txid| txid.trim().to_string())
        .filter(|txid| !txid.is_empty() && form.action == "mark_paid");
    crate::withdrawals::review_request(
        &state.store,
        state.queue.as_ref(),
        Some(session.token.id),
        crate::api::actor_of(&session.token),
        id,
        crate::withdrawals::ReviewBody {
            action: form.action,
            txid,
            reason: form.reason.unwrap_or_default().trim().to_string(),
        },
    )
    .await?;
    Ok(done(&headers))
}

/// A registered destination, for people.
#[derive(Debug)]
pub(crate) struct DestinationLine {
    pub(crate) id: i64,
    pub(crate) chain: &'static str,
    pub(crate) address: String,
    pub(crate) label: String,
    pub(crate) reference: Option<String>,
    pub(crate) created_by: String,
    pub(crate) created: Stamp,
    pub(crate) usable_at: Stamp,
    pub(crate) usable: bool,
    pub(crate) may_remove: bool,
}

impl DestinationLine {
    fn new(row: &DestinationRow, may_remove: bool, now: DateTime<Utc>) -> Self {
        DestinationLine {
            id: row.id,
            chain: row.chain.as_str(),
            address: row.address.clone(),
            label: row.label.clone(),
            reference: row.reference.clone(),
            created_by: row.created_by.clone(),
            created: Stamp(row.created_at),
            usable_at: Stamp(row.usable_at),
            usable: row.usable_at <= now,
            may_remove,
        }
    }
}

#[derive(Template)]
#[template(path = "destination_rows.html")]
pub(crate) struct DestinationRows<'a> {
    pub(crate) lines: &'a [DestinationLine],
}

/// The registered destinations as this session sees them.
pub(crate) async fn destination_lines(
    state: &AppState,
    session: &Session,
) -> Result<Vec<DestinationLine>, DashError> {
    let rows = state
        .store
        .withdrawal_destination_list(&DestinationList {
            chain: None,
            before_id: None,
            limit: DESTINATIONS_SHOWN_MAX,
        })
        .await?;
    let may_remove = session.allows(Role::Admin);
    let now = Utc::now();
    Ok(rows
        .iter()
        .map(|row| DestinationLine::new(row, may_remove, now))
        .collect())
}

#[derive(Template)]
#[template(path = "destinations.html")]
struct DestinationsPage {
    layout: Layout,
    lines: Vec<DestinationLine>,
    /// What allowlist mode covers, said in words.
    mode: String,
    cooldown: String,
}

/// `GET /destinations`: allowlist mode's registered destinations, live.
pub(crate) async fn destinations_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, DashError> {
    let lines = destination_lines(&state, &session).await?;
    let allowlist = &state.options.intake.allowlist;
    let mode = if allowlist.all {
        "on for every asset (withdrawal_allowlist)".to_string()
    } else if allowlist.assets.is_empty() {
        "off: withdrawals may pay to any valid address".to_string()
    } else {
        format!(
            "on for {}",
            allowlist
                .assets
                .iter()
                .map(|(chain, asset)| format!("{chain}/{asset}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    html(&DestinationsPage {
        layout: Layout::new(
            &session,
            "Withdrawal destinations",
            "withdrawals",
            "/live?page=destinations".into(),
        ),
        lines,
        mode,
        cooldown: humane_duration(allowlist.cooldown),
    })
}

/// "24 h", "90 min", "45 s".
fn humane_duration(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 3_600 && seconds.is_multiple_of(3_600) {
        format!("{} h", seconds / 3_600)
    } else if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

/// `POST /destinations/{id}/remove`: the API's removal as the session's token.
pub(crate) async fn remove_destination(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DashError> {
    let id = crate::destinations::destination_id(&id)?;
    crate::destinations::remove(&state.store, &session.actor(), id).await?;
    Ok(done(&headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(
            humane_duration(std::time::Duration::from_secs(86_400)),
            "24 h"
        );
        assert_eq!(
            humane_duration(std::time::Duration::from_secs(5_400)),
            "90 min"
        );
        assert_eq!(humane_duration(std::time::Duration::from_secs(45)), "45 s");
    }
}
