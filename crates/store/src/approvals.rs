//! Four eyes (`withdrawal_approval`, migration 0014): a withdrawal created in `approval`
//! waits for approvals from distinct operator tokens. [`Store::withdrawal_decide`] records
//! one token's decision and, in the same transaction, moves the withdrawal when the decision
//! settles it: the last approval needed moves it to `pending` and queues its job; a rejection
//! moves it to `failed` with the reason. Its creator's token never decides; the same token
//! twice counts once. The withdrawal's row is locked while deciding (Postgres `for update`;
//! SQLite's write transaction runs alone), so two approvals at once see each other.

use chrono::{DateTime, Utc};
use domain::{Name, WithdrawalState};
use sqlx::Row;

use crate::dialect::{in_write_tx, on_pool};
use crate::withdrawals::{COLUMNS, decode_withdrawal, moved_audit, moved_event, withdrawal_job};
use crate::{AuditInsert, Store, StoreError, WithdrawalRow, WithdrawalTransition};

/// The longest reason a decision may give.
pub const DECISION_REASON_LEN_MAX: usize = 500;

/// One token's decision on a withdrawal waiting for approval.
#[derive(Debug, Clone)]
pub struct WithdrawalDecision {
    pub id: i64,
    /// The deciding API token (distinct tokens make distinct approvals).
    pub token_id: i64,
    /// Who, for the audit log (`token:ID:NAME`).
    pub actor: String,
    pub approve: bool,
    /// Why (required to reject).
    pub reason: Option<String>,
    /// How many approvals from distinct tokens release it.
    pub required: u32,
    /// The queue and job kind that pay it, queued when it is released (a database queue);
    /// `None` when the caller queues it (Redis).
    pub job: Option<(Name, Name)>,
    pub now: DateTime<Utc>,
}

/// A decision recorded on a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub token_id: i64,
    pub actor: String,
    pub approve: bool,
    pub reason: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalDecided {
    /// The withdrawal after it: still `approval`, released to `pending`, or `failed`.
    pub row: WithdrawalRow,
    /// Every decision on it so far, oldest first.
    pub approvals: Vec<Approval>,
    /// This token had decided before: nothing changed.
    pub repeated: bool,
}

/// The token id in an actor `token:ID:NAME`.
fn token_of(actor: &str) -> Option<i64> {
    actor
        .strip_prefix("token:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

fn validate(decision: &WithdrawalDecision) -> Result<(), StoreError> {
    let invalid = |message: String| Err(StoreError::Invalid(message));
    match &decision.reason {
        None if !decision.approve => invalid("a rejection needs a reason".into()),
        Some(reason)
            if reason.trim().is_empty()
                || reason.chars().count() > DECISION_REASON_LEN_MAX
                || reason.chars().any(char::is_control) =>
        {
            invalid(format!(
                "a reason is 1 to {DECISION_REASON_LEN_MAX} characters without control characters"
            ))
        }
        _ if decision.required == 0 => invalid("at least one approval is required".into()),
        _ if decision.actor.is_empty() || decision.actor.len() > 200 => {
            invalid("an actor is 1 to 200 bytes".into())
        }
        _ => Ok(()),
    }
}

impl Store {
    /// Records `decision` and moves the withdrawal if it settles it (see the module).
    /// `Conflict` when the withdrawal is not waiting for approval, or the deciding token
    /// created it; `NotFound` when there is no such withdrawal.
    pub async fn withdrawal_decide(
        &self,
        decision: &WithdrawalDecision,
    ) -> Result<WithdrawalDecided, StoreError> {
        validate(decision)?;
        let select = format!("select {COLUMNS} from withdrawal where id = $1");
        in_write_tx!(self, |_store, conn, d| {
            d::lock_withdrawal(&mut *conn, decision.id).await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(select))
                .bind(decision.id)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound {
                    what: "withdrawal",
                    id: decision.id.to_string(),
                });
            };
            let row = decode_withdrawal!(&row, d);
            if token_of(&row.created_by) == Some(decision.token_id) {
                return Err(StoreError::Conflict(format!(
                    "withdrawal {} was created by token {}: its creator can never approve or reject it",
                    row.id, decision.token_id
                )));
            }
            let before: Option<bool> = sqlx::query(
                "select decision from withdrawal_approval where withdrawal_id = $1 and token_id = $2",
            )
            .bind(decision.id)
            .bind(decision.token_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|found| found.try_get::<String, _>("decision"))
            .transpose()?
            .map(|text| text == "approve");
            if let Some(approved) = before {
                if approved != decision.approve {
                    return Err(StoreError::Conflict(format!(
                        "token {} already {} withdrawal {}",
                        decision.token_id,
                        if approved { "approved" } else { "rejected" },
                        row.id
                    )));
                }
                let approvals = approvals_on!(&mut *conn, d, decision.id);
                return Ok(WithdrawalDecided {
                    row,
                    approvals,
                    repeated: true,
                });
            }
            if row.state != WithdrawalState::Approval {
                return Err(StoreError::Conflict(format!(
                    "withdrawal {} is {}, not waiting for approval",
                    row.id, row.state
                )));
            }
            sqlx::query(
                "insert into withdrawal_approval
                     (withdrawal_id, token_id, actor, decision, reason, decided_at)
                 values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(decision.id)
            .bind(decision.token_id)
            .bind(&decision.actor)
            .bind(if decision.approve {
                "approve"
            } else {
                "reject"
            })
            .bind(decision.reason.as_deref())
            .bind(d::time(decision.now))
            .execute(&mut *conn)
            .await?;
            d::audit::insert_on(
                &mut *conn,
                &AuditInsert {
                    actor: decision.actor.clone(),
                    action: if decision.approve {
                        "withdrawal.approve".into()
                    } else {
                        "withdrawal.reject".into()
                    },
                    target: row.payout_key(),
                    details: serde_json::json!({ "reason": decision.reason }),
                    now: decision.now,
                },
            )
            .await?;
            let approvals = approvals_on!(&mut *conn, d, decision.id);
            let approved = approvals.iter().filter(|each| each.approve).count();
            let to = if !decision.approve {
                Some(WithdrawalState::Failed)
            } else if approved >= decision.required as usize {
                Some(WithdrawalState::Pending)
            } else {
                None
            };
            let row = match to {
                None => row,
                Some(to) => {
                    let mut transition = WithdrawalTransition::new(
                        row.id,
                        WithdrawalState::Approval,
                        to,
                        decision.actor.clone(),
                        decision.now,
                    );
                    transition.error = (!decision.approve).then(|| {
                        format!(
                            "rejected by {}: {}",
                            decision.actor,
                            decision.reason.as_deref().unwrap_or_default()
                        )
                    });
                    let sql = format!(
                        "update withdrawal set state = $1, error = $2, updated_at = $3
                         where id = $4 and state = 'approval'
                         returning {COLUMNS}"
                    );
                    let moved = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(to.as_str())
                        .bind(transition.error.as_deref())
                        .bind(d::time(decision.now))
                        .bind(row.id)
                        .fetch_one(&mut *conn)
                        .await?;
                    let moved = decode_withdrawal!(&moved, d);
                    d::audit::insert_on(&mut *conn, &moved_audit(&transition, &moved)).await?;
                    d::outbox::append_on(&mut *conn, &moved_event(&moved)).await?;
                    if to == WithdrawalState::Failed {
                        // Rejected: never paid, so what it used of its limits is given back.
                        crate::usage::release_usage!(conn, d, moved);
                    }
                    if to == WithdrawalState::Pending
                        && let Some((queue, kind)) = &decision.job
                    {
                        d::job_insert_on(
                            &mut *conn,
                            &withdrawal_job(&moved, queue, kind, decision.now),
                        )
                        .await?;
                    }
                    moved
                }
            };
            Ok(WithdrawalDecided {
                row,
                approvals,
                repeated: false,
            })
        })
    }

    /// The decisions on a withdrawal, oldest first.
    pub async fn withdrawal_approvals(&self, id: i64) -> Result<Vec<Approval>, StoreError> {
        on_pool!(self, |pool, d| Ok(approvals_on!(pool, d, id)))
    }
}

/// The decisions on withdrawal `$id`, oldest first, read on `$conn` with dialect `$d`.
macro_rules! approvals_on {
    ($conn:expr, $d:ident, $id:expr) => {{
        let rows = sqlx::query(
            "select token_id, actor, decision, reason, decided_at from withdrawal_approval
             where withdrawal_id = $1 order by decided_at, token_id",
        )
        .bind($id)
        .fetch_all($conn)
        .await?;
        let mut approvals = Vec::with_capacity(rows.len());
        for row in &rows {
            let decision: String = row.try_get("decision")?;
            approvals.push(Approval {
                token_id: row.try_get("token_id")?,
                actor: row.try_get("actor")?,
                approve: decision == "approve",
                reason: row.try_get("reason")?,
                decided_at: $d::read_time(row, "decided_at")?,
            });
        }
        approvals
    }};
}
use approvals_on;
