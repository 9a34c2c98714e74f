//! Withdrawals for the exchange's backend: `POST /api/v1/withdrawals` (idempotent by the
//! `Idempotency-Key` header), `GET /api/v1/withdrawals[/{id}]` and
//! `POST /api/v1/withdrawals/{id}/cancel`.
//!
//! Everything a request says is checked here before anything is written: the chain, the
//! asset against the configured catalogue (a token's contract comes from the catalogue, never
//! from the request), the destination for the configured network (stored normalised, and
//! never one of our own addresses), the amount as a decimal string in the asset's unit (no
//! more decimals than it has, not zero, not negative, no overflow), the reference. The store
//! then writes the row, its audit entry and its job in one transaction. The CLI's local
//! `coinsensei withdrawals create` goes through [`create`] too, so both edges share one rule.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chain::address::{Address, Network};
use chrono::Utc;
use domain::{Amount, AssetCatalogue, Chain, Name, WithdrawalState, WorkerKind};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::{
    Store, StoreError, WithdrawalCreate, WithdrawalCreated, WithdrawalList, WithdrawalRow,
};

use crate::AppState;
use crate::api::{ApiError, Caller};

/// The job kind that pays a withdrawal, in its chain's `withdrawal` queue.
pub const PAY_JOB_KIND: &str = "withdrawal.pay";

/// What a withdrawal request is checked against: the assets this deployment pays (per
/// network: the token contracts of a test network differ from mainnet's), the Bitcoin
/// network, and our own addresses (a withdrawal to one of them is refused: it would move
/// money in a circle and hide a mistake).
#[derive(Debug, Clone)]
pub struct Intake {
    pub catalogue: AssetCatalogue,
    pub bitcoin_network: Network,
    pub own_addresses: HashSet<(Chain, String)>,
    /// Per-asset limits and approval thresholds (`[[withdrawal_policy]]`).
    pub policies: Vec<AssetPolicy>,
    /// How many distinct operator tokens must approve a withdrawal held for approval.
    pub approvals_required: u32,
    /// What ends a reference's prefix for `daily_limit_per_reference` (`user:42/w:7` with
    /// `/`: `user:42`).
    pub reference_separator: char,
    /// Allowlist mode: which withdrawals may pay only to registered destinations.
    pub allowlist: Allowlist,
}

/// Allowlist mode (`withdrawal_allowlist`, or `allowlist` in an asset's
/// `[[withdrawal_policy]]`): a withdrawal of an asset it covers may pay only to a destination
/// registered through `POST /api/v1/withdrawal-destinations` whose cool-down is over (and, when
/// the registration names a reference prefix, only for withdrawals of that prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    /// Every asset's withdrawals (`withdrawal_allowlist = true`).
    pub all: bool,
    /// These assets' withdrawals, `(chain, symbol)`.
    pub assets: Vec<(Chain, String)>,
    /// How long a new registration waits before withdrawals may use it.
    pub cooldown: std::time::Duration,
}

/// A new destination's wait before use, by default (`withdrawal_allowlist_cooldown`).
pub const ALLOWLIST_COOLDOWN_DEFAULT: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

impl Default for Allowlist {
    fn default() -> Self {
        Allowlist {
            all: false,
            assets: Vec::new(),
            cooldown: ALLOWLIST_COOLDOWN_DEFAULT,
        }
    }
}

impl Allowlist {
    /// Whether withdrawals of `asset` on `chain` need a registered destination, and the
    /// rule that says so (named in a refusal).
    pub fn rule_for(&self, chain: Chain, asset: &str) -> Option<String> {
        if self
            .assets
            .iter()
            .any(|(each, symbol)| *each == chain && symbol == asset)
        {
            Some(format!("withdrawal_policy {chain}/{asset}: allowlist"))
        } else if self.all {
            Some("withdrawal_allowlist".to_string())
        } else {
            None
        }
    }
}

impl Default for Intake {
    fn default() -> Self {
        Intake {
            catalogue: AssetCatalogue::mainnet(),
            bitcoin_network: Network::Mainnet,
            own_addresses: HashSet::new(),
            policies: Vec::new(),
            approvals_required: APPROVALS_REQUIRED_DEFAULT,
            reference_separator: REFERENCE_SEPARATOR_DEFAULT,
            allowlist: Allowlist::default(),
        }
    }
}

/// What ends a reference's prefix, by default.
pub const REFERENCE_SEPARATOR_DEFAULT: char = '/';

/// Approvals from this many distinct operator tokens release a held withdrawal, by default.
pub const APPROVALS_REQUIRED_DEFAULT: u32 = 2;

/// What one asset's withdrawals must keep to, in base units: a withdrawal below `min` or
/// above `max` is refused at intake (nothing stored); one above `approval_above` is held for
/// approvals from distinct operator tokens before anything is queued; the hot wallet keeps
/// `floor` (a payment that would leave less waits for funds, and the waiting alert fires);
/// over any 24 hours the asset's withdrawals stay within `daily_limit`, and those of one
/// reference prefix within `daily_limit_per_reference` (failed and canceled ones given back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetPolicy {
    pub chain: Chain,
    pub asset: String,
    pub min: Option<Amount>,
    pub max: Option<Amount>,
    pub approval_above: Option<Amount>,
    pub floor: Option<Amount>,
    pub daily_limit: Option<Amount>,
    pub daily_limit_per_reference: Option<Amount>,
}

/// A request as the backend sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub chain: String,
    pub asset: String,
    pub to: String,
    /// A decimal string in the asset's unit ("1.5" USDT).
    pub amount: String,
    pub reference: String,
}

/// Why a request was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("idempotency key {0:?} was used before with another request")]
    KeyReused(String),
    /// Refused by a configured rule, named.
    #[error("{0}")]
    Policy(String),
}

/// A request checked and normalised: what is stored.
struct Checked {
    chain: Chain,
    asset: String,
    destination: String,
    amount: Amount,
    reference: String,
    /// Above the asset's approval threshold.
    needs_approval: bool,
    /// The rolling limits it must stay within.
    limits: Vec<store::UsageLimit>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> IntakeError {
    IntakeError::Invalid {
        field,
        message: message.into(),
    }
}

impl Intake {
    /// The prefix of `reference` that daily limits and destinations registered for one
    /// user go by: the part before [`Intake::reference_separator`].
    pub fn reference_prefix<'a>(&self, reference: &'a str) -> &'a str {
        reference
            .split(self.reference_separator)
            .next()
            .unwrap_or_default()
    }

    /// The decimals of `symbol` on `chain`.
    pub fn decimals(&self, chain: Chain, symbol: &str) -> Option<u8> {
        self.catalogue
            .get(chain, symbol)
            .ok()
            .map(|asset| asset.decimals)
    }

    /// The policy `chain`/`symbol` withdrawals keep to now: the one set through the API
    /// (`crate::policies`), else the configuration's.
    pub async fn policy_now(
        &self,
        store: &Store,
        chain: Chain,
        symbol: &str,
    ) -> Result<Option<AssetPolicy>, StoreError> {
        let configured = self
            .policies
            .iter()
            .find(|p| p.chain == chain && p.asset == symbol);
        Ok(match store.policy_override_get(chain, symbol).await? {
            Some(set) => crate::policies::from_stored(chain, symbol, configured, &set.policy),
            None => configured.cloned(),
        })
    }

    /// Checks `request` with `policy` standing for its asset's (the API's, read by the
    /// caller) when given.
    fn check_with(
        &self,
        request: &CreateRequest,
        policy: Option<&AssetPolicy>,
    ) -> Result<Checked, IntakeError> {
        let chain: Chain = request
            .chain
            .parse()
            .map_err(|error: domain::ParseChainError| invalid("chain", error.to_string()))?;
        let asset = self
            .catalogue
            .get(chain, &request.asset)
            .map_err(|error| invalid("asset", error.to_string()))?;
        let amount = Amount::parse_positive(&request.amount, asset.decimals)
            .map_err(|error| invalid("amount", error.to_string()))?;
        let destination = Address::parse(chain, self.bitcoin_network, &request.to)
            .map_err(|error| invalid("to", error.to_string()))?;
        if self
            .own_addresses
            .contains(&(chain, destination.as_str().to_string()))
        {
            return Err(invalid(
                "to",
                format!("{destination} is one of our own addresses"),
            ));
        }
        domain::withdrawal::check_reference(&request.reference)
            .map_err(|error| invalid("reference", error.to_string()))?;
        let policy = policy.or_else(|| {
            self.policies
                .iter()
                .find(|policy| policy.chain == chain && policy.asset == asset.symbol)
        });
        let shown =
            |units: &Amount| format!("{} {}", units.format_decimal(asset.decimals), asset.symbol);
        let units = amount.base_units();
        if let Some(policy) = policy {
            if let Some(min) = policy.min.as_ref().filter(|min| units < min.base_units()) {
                return Err(IntakeError::Policy(format!(
                    "{} is below the minimum withdrawal of {} (withdrawal_policy {chain}/{}: min)",
                    shown(&amount),
                    shown(min),
                    asset.symbol
                )));
            }
            if let Some(max) = policy.max.as_ref().filter(|max| units > max.base_units()) {
                return Err(IntakeError::Policy(format!(
                    "{} is above the maximum withdrawal of {} (withdrawal_policy {chain}/{}: max)",
                    shown(&amount),
                    shown(max),
                    asset.symbol
                )));
            }
        }
        let needs_approval = policy
            .and_then(|policy| policy.approval_above.as_ref())
            .is_some_and(|threshold| units > threshold.base_units());
        let prefix = self.reference_prefix(&request.reference);
        let rule = |field: &str| format!("withdrawal_policy {chain}/{}: {field}", asset.symbol);
        let limits = policy
            .into_iter()
            .flat_map(|policy| {
                [
                    policy.daily_limit.map(|limit| store::UsageLimit {
                        scope: String::new(),
                        limit: limit.base_units(),
                        rule: rule("daily_limit"),
                    }),
                    policy
                        .daily_limit_per_reference
                        .map(|limit| store::UsageLimit {
                            scope: format!("ref:{prefix}"),
                            limit: limit.base_units(),
                            rule: format!(
                                "{}, reference prefix {prefix:?}",
                                rule("daily_limit_per_reference")
                            ),
                        }),
                ]
            })
            .flatten()
            .collect();
        Ok(Checked {
            chain,
            asset: asset.symbol.clone(),
            destination: destination.as_str().to_string(),
            amount,
            reference: request.reference.clone(),
            needs_approval,
            limits,
        })
    }
}

/// The SHA-256 of a checked request: two requests that say the same thing (say "1.5" and
/// "1.50") are the same request.
fn request_hash(checked: &Checked) -> String {
    let mut hasher = Sha256::new();
    for part in [
        checked.chain.as_str(),
        &checked.asset,
        &checked.destination,
        &checked.amount.base_units().to_string(),
        &checked.reference,
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Creates a withdrawal (or finds the one this key created): the API's and the local CLI's
/// one way. With a database queue its job is enqueued in the same transaction; with another
/// queue it is enqueued after the commit (by its unique key, so again is harmless), and a
/// withdrawal left without one is queued again by its chain's reconciler.
pub async fn create(
    store: &Store,
    queue: &dyn queue::Backend,
    intake: &Intake,
    actor: &str,
    idempotency_key: &str,
    request: &CreateRequest,
) -> Result<WithdrawalCreated, CreateError> {
    domain::withdrawal::check_idempotency_key(idempotency_key)
        .map_err(|error| CreateError::Intake(invalid("Idempotency-Key", error.to_string())))?;
    // The asset's policy as it stands now (one set through the API wins); a request whose
    // chain or asset is unknown is refused by the check that follows.
    let policy = match (
        request.chain.parse::<Chain>().ok(),
        request.chain.parse::<Chain>().ok().and_then(|chain| {
            intake
                .catalogue
                .get(chain, &request.asset)
                .ok()
                .map(|asset| asset.symbol.clone())
        }),
    ) {
        (Some(chain), Some(symbol)) => intake
            .policy_now(store, chain, &symbol)
            .await
            .map_err(CreateError::Store)?,
        _ => None,
    };
    let checked = intake
        .check_with(request, policy.as_ref())
        .map_err(CreateError::Intake)?;
    // Allowlist mode is checked in the create's own transaction; the same request made
    // before the destination was removed (or before this mode was on) still finds its
    // withdrawal, since a known key is answered before anything is checked.
    let destination_rule = intake
        .allowlist
        .rule_for(checked.chain, &checked.asset)
        .map(|rule| store::DestinationRule {
            rule,
            reference_prefix: intake.reference_prefix(&checked.reference).to_string(),
        });
    let queue_name = queue::queue_for(WorkerKind::Withdrawal, checked.chain);
    let kind = Name::new(PAY_JOB_KIND).expect("a valid job kind");
    let in_store = queue.name() != "redis";
    let create = WithdrawalCreate {
        idempotency_key: idempotency_key.to_string(),
        request_hash: request_hash(&checked),
        reference: checked.reference,
        chain: checked.chain,
        asset: checked.asset,
        destination: checked.destination,
        amount: checked.amount.base_units().to_string(),
        actor: actor.to_string(),
        job: in_store.then(|| (queue_name.clone(), kind.clone())),
        approval: checked.needs_approval,
        limits: checked.limits,
        destination_rule,
        now: Utc::now(),
    };
    let created = match store.withdrawal_create(&create).await {
        Ok(created) => created,
        Err(StoreError::KeyReused(key)) => {
            return Err(CreateError::Intake(IntakeError::KeyReused(key)));
        }
        Err(StoreError::LimitReached(message) | StoreError::PolicyRefused(message)) => {
            return Err(CreateError::Intake(IntakeError::Policy(message)));
        }
        Err(error) => return Err(CreateError::Store(error)),
    };
    if !in_store
        && let WithdrawalCreated::Created(row) = &created
        && row.state == WithdrawalState::Pending
    {
        let job = pay_job(row, queue_name, kind);
        if let Err(error) = queue.enqueue(&job).await {
            // Stored, not yet queued: the chain's reconciler queues it again.
            tracing::warn!(withdrawal = row.id, %error, "a withdrawal was stored but its job not queued; the reconciler will queue it");
        }
    }
    Ok(created)
}

/// The job that pays `row` (the same shape the store enqueues in its transaction).
pub fn pay_job(row: &WithdrawalRow, queue: Name, kind: Name) -> store::JobInsert {
    store::JobInsert {
        queue,
        kind,
        args: json!({ "withdrawal_id": row.id }),
        priority: 0,
        run_at: row.created_at,
        retry: Some(domain::withdrawal::job_retry()),
        unique_key: Some(row.payout_key()),
        now: Utc::now(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Intake(IntakeError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<CreateError> for ApiError {
    fn from(error: CreateError) -> Self {
        match error {
            CreateError::Intake(IntakeError::KeyReused(key)) => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                format!(
                    "idempotency key {key:?} was used before with another request; use a new key for a new withdrawal"
                ),
            ),
            CreateError::Intake(error @ IntakeError::Invalid { .. }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                error.to_string(),
            ),
            CreateError::Intake(IntakeError::Policy(message)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_refused", message)
            }
            CreateError::Store(error) => error.into(),
        }
    }
}

/// A withdrawal's amount in its asset's unit ("12.5"), formatted from base units with the
/// catalogue's decimals; for an asset no longer configured, the base units, said as such.
pub fn amount_text(row: &WithdrawalRow, intake: &Intake) -> String {
    match (
        intake.decimals(row.chain, &row.asset),
        row.amount.parse::<ruint::aliases::U256>(),
    ) {
        (Some(decimals), Ok(units)) => Amount::from_base_units(units).format_decimal(decimals),
        _ => format!("{} base units", row.amount),
    }
}

/// A withdrawal as the API and the CLI's `--json` show it; amounts in the asset's unit,
/// formatted from base units with the catalogue's decimals.
pub fn dto(row: &WithdrawalRow, intake: &Intake) -> Value {
    let amount = amount_text(row, intake);
    json!({
        "id": row.id,
        "chain": row.chain.as_str(),
        "asset": row.asset,
        "to": row.destination,
        "amount": amount,
        "amount_base_units": row.amount,
        "reference": row.reference,
        "state": row.state.as_str(),
        "txid": row.txid,
        "block_height": row.block_height,
        "confirmations": row.confirmations,
        "fee_base_units": row.fee,
        "error": row.error,
        "idempotency_key": row.idempotency_key,
        "created_at": row.created_at.to_rfc3339(),
        "updated_at": row.updated_at.to_rfc3339(),
    })
}

/// The `Idempotency-Key` header: required, 1 to 100 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "send an Idempotency-Key header (1 to 100 printable ASCII characters) that names this withdrawal; the same key returns the same withdrawal",
        )
    };
    let value = headers.get("idempotency-key").ok_or_else(missing)?;
    let key = value.to_str().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Idempotency-Key: printable ASCII only",
        )
    })?;
    domain::withdrawal::check_idempotency_key(key).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("Idempotency-Key: {error}"),
        )
    })?;
    Ok(key.to_string())
}

/// Reads a JSON object body into `T`: anything but an object (an array, say, which serde
/// would otherwise read field by field) is refused.
pub(crate) fn object_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the body is not JSON: {error}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            error.to_string(),
        )
    })
}

pub(crate) async fn create_withdrawal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let request: CreateRequest = object_body(&headers, &body)?;
    let intake = &state.options.intake;
    let created = create(
        &state.store,
        state.queue.as_ref(),
        intake,
        &caller.actor(),
        &key,
        &request,
    )
    .await?;
    let status = match &created {
        WithdrawalCreated::Created(row) => {
            tracing::info!(withdrawal = row.id, chain = %row.chain, asset = %row.asset, "withdrawal accepted");
            metrics::counter!("coinsensei_withdrawals_created_total", "chain" => row.chain.as_str())
                .increment(1);
            StatusCode::CREATED
        }
        WithdrawalCreated::Existing(_) => StatusCode::OK,
    };
    Ok((status, Json(dto(created.row(), intake))).into_response())
}

/// A withdrawal id: a canonical decimal integer, anything else names no withdrawal.
pub(crate) fn withdrawal_id(text: &str) -> Result<i64, ApiError> {
    let canonical = !text.is_empty()
        && text.len() <= 18
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    text.parse().ok().filter(|_| canonical).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no withdrawal {text:?}"),
        )
    })
}

pub(crate) async fn get_withdrawal(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = withdrawal_id(&id)?;
    let row = state.store.withdrawal_get(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("withdrawal {id} not found"),
        )
    })?;
    Ok(Json(dto(&row, &state.options.intake)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    chain: Option<String>,
    reference: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn list_withdrawals(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid", error.body_text()))?;
    let bad = |what: &str, error: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{what}: {error}"),
        )
    };
    let limit = query
        .limit
        .unwrap_or(domain::limits::LIST_LIMIT_DEFAULT)
        .clamp(1, domain::limits::LIST_LIMIT_MAX);
    let rows = state
        .store
        .withdrawal_list(&WithdrawalList {
            state: query
                .state
                .map(|text| text.parse::<WithdrawalState>())
                .transpose()
                .map_err(|error| bad("state", &error))?,
            chain: query
                .chain
                .map(|text| text.parse::<Chain>())
                .transpose()
                .map_err(|error| bad("chain", &error))?,
            reference: query.reference,
            before_id: query.before_id,
            limit,
        })
        .await?;
    let next = if rows.len() == limit as usize {
        rows.last().map(|row| row.id)
    } else {
        None
    };
    let intake = &state.options.intake;
    Ok(Json(json!({
        "withdrawals": rows.iter().map(|row| dto(row, intake)).collect::<Vec<_>>(),
        "next_before_id": next,
    })))
}

pub(crate) async fn cancel_withdrawal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = withdrawal_id(&id)?;
    let row = state
        .store
        .withdrawal_cancel(id, &caller.actor(), Utc::now())
        .await?;
    tracing::info!(withdrawal = row.id, "withdrawal canceled");
    Ok(Json(dto(&row, &state.options.intake)))
}

/// The body of an approve or reject: an optional reason (required to reject).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub reason: Option<String>,
}

/// Records one operator token's decision on a withdrawal held for approval: the API's, the
/// CLI's and the dashboard's one way. Released with a queue outside the store (Redis), its job is queued
/// here, after the commit (by its unique key; the reconciler queues a lost one again).
pub async fn decide(
    store: &Store,
    queue: &dyn queue::Backend,
    intake: &Intake,
    token: &store::ApiTokenRow,
    id: i64,
    approve: bool,
    reason: Option<String>,
) -> Result<store::WithdrawalDecided, ApiError> {
    let in_store = queue.name() != "redis";
    let row = store.withdrawal_get(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("withdrawal {id} not found"),
        )
    })?;
    let job = (
        queue::queue_for(WorkerKind::Withdrawal, row.chain),
        Name::new(PAY_JOB_KIND).expect("a valid job kind"),
    );
    let decided = store
        .withdrawal_decide(&store::WithdrawalDecision {
            id,
            token_id: token.id,
            actor: crate::api::actor_of(token),
            approve,
            reason,
            required: intake.approvals_required,
            job: in_store.then(|| job.clone()),
            now: Utc::now(),
        })
        .await
        .map_err(|error| match error {
            StoreError::Invalid(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            }
            other => other.into(),
        })?;
    if !decided.repeated {
        tracing::info!(withdrawal = id, token = token.id, approve, state = %decided.row.state, "withdrawal decision");
    }
    if !in_store && !decided.repeated && decided.row.state == WithdrawalState::Pending {
        let (queue_name, kind) = job;
        if let Err(error) = queue
            .enqueue(&pay_job(&decided.row, queue_name, kind))
            .await
        {
            tracing::warn!(withdrawal = id, %error, "an approved withdrawal's job was not queued; the reconciler will queue it");
        }
    }
    Ok(decided)
}

/// A decision's answer: the withdrawal, and every decision on it so far.
pub fn decided_dto(decided: &store::WithdrawalDecided, intake: &Intake) -> Value {
    let mut body = dto(&decided.row, intake);
    body["approvals"] = json!(
        decided
            .approvals
            .iter()
            .map(|each| json!({
                "token_id": each.token_id,
                "actor": each.actor,
                "decision": if each.approve { "approve" } else { "reject" },
                "reason": each.reason,
                "at": each.decided_at.to_rfc3339(),
            }))
            .collect::<Vec<_>>()
    );
    body
}

async fn decide_route(
    state: AppState,
    caller: Caller,
    id: String,
    headers: HeaderMap,
    body: Bytes,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    let id = withdrawal_id(&id)?;
    let request: DecisionRequest = if body.is_empty() {
        DecisionRequest::default()
    } else {
        object_body(&headers, &body)?
    };
    let decided = decide(
        &state.store,
        state.queue.as_ref(),
        &state.options.intake,
        &caller.token,
        id,
        approve,
        request.reason,
    )
    .await?;
    Ok(Json(decided_dto(&decided, &state.options.intake)))
}

pub(crate) async fn approve_withdrawal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    decide_route(state, caller, id, headers, body, true).await
}

pub(crate) async fn reject_withdrawal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    decide_route(state, caller, id, headers, body, false).await
}

/// The body of a review request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// `mark_paid`, `mark_failed` or `retry`.
    pub action: String,
    /// The paying transaction (`mark_paid` only).
    pub txid: Option<String>,
    pub reason: String,
}

/// Asks for a manual review action on a withdrawal in `manual_review` (`store::reviews`):
/// stored and its check queued on the chain's withdrawal queue (in the same transaction with
/// a database queue; right after the commit with Redis). The API's, the CLI's and the
/// dashboard's one way. The answer comes when the chain's withdrawal worker has checked it.
pub async fn review_request(
    store: &Store,
    queue: &dyn queue::Backend,
    token_id: Option<i64>,
    actor: String,
    id: i64,
    body: ReviewBody,
) -> Result<store::ReviewRow, ApiError> {
    let invalid =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
    let action: store::ReviewAction = body.action.parse().map_err(invalid)?;
    let row = store.withdrawal_get(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("withdrawal {id} not found"),
        )
    })?;
    let in_store = queue.name() != "redis";
    let withdrawal_queue = queue::queue_for(WorkerKind::Withdrawal, row.chain);
    let review = store
        .withdrawal_review_request(&store::ReviewRequest {
            withdrawal_id: id,
            action,
            txid: body.txid.map(|txid| canonical_txid(row.chain, &txid)),
            reason: body.reason,
            token_id,
            actor,
            job: in_store.then(|| withdrawal_queue.clone()),
            now: Utc::now(),
        })
        .await
        .map_err(|error| match error {
            StoreError::Invalid(message) => invalid(message),
            other => other.into(),
        })?;
    tracing::info!(withdrawal = id, review = review.id, action = %review.action, "a review was asked");
    if !in_store
        && let Err(error) = queue
            .enqueue(&store::review_job(
                &withdrawal_queue,
                review.id,
                review.created_at,
            ))
            .await
    {
        // Never left open without its check (an open review blocks the next one): refused,
        // so the person can ask again once the queue is back.
        tracing::warn!(withdrawal = id, review = review.id, %error, "a review's check was not queued");
        let reason = format!("its check could not be queued: {error}; ask again");
        if let Err(refusing) = store
            .withdrawal_review_refuse(review.id, "control-plane", &reason, Utc::now())
            .await
        {
            tracing::error!(review = review.id, %refusing, "a review without its check could not be refused");
        }
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            format!(
                "review {} could not be queued for its check ({error}); nothing changed, ask again",
                review.id
            ),
        ));
    }
    Ok(review)
}

/// A txid as the chain's withdrawals record it, so one transaction is one text whatever
/// way it was typed: lower-case hex, with `0x` on Ethereum and without elsewhere.
fn canonical_txid(chain: Chain, txid: &str) -> String {
    let bare = txid.trim();
    let bare = bare
        .strip_prefix("0x")
        .or_else(|| bare.strip_prefix("0X"))
        .unwrap_or(bare)
        .to_ascii_lowercase();
    match chain {
        Chain::Ethereum => format!("0x{bare}"),
        Chain::Tron | Chain::Bitcoin => bare,
    }
}

/// A review as the API shows it.
pub fn review_dto(review: &store::ReviewRow) -> Value {
    json!({
        "id": review.id,
        "withdrawal_id": review.withdrawal_id,
        "chain": review.chain.as_str(),
        "action": review.action.as_str(),
        "txid": review.txid,
        "position": review.position,
        "reason": review.reason,
        "requested_by": review.actor,
        "state": review.state.as_str(),
        "outcome": review.outcome,
        "created_at": review.created_at.to_rfc3339(),
        "decided_at": review.decided_at.map(|at| at.to_rfc3339()),
    })
}

pub(crate) async fn review_withdrawal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = withdrawal_id(&id)?;
    let body: ReviewBody = object_body(&headers, &body)?;
    let review = review_request(
        &state.store,
        state.queue.as_ref(),
        Some(caller.token.id),
        caller.actor(),
        id,
        body,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(review_dto(&review))))
}

pub(crate) async fn withdrawal_reviews(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = withdrawal_id(&id)?;
    if state.store.withdrawal_get(id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("withdrawal {id} not found"),
        ));
    }
    let reviews = state.store.withdrawal_reviews(id).await?;
    Ok(Json(json!({
        "reviews": reviews.iter().map(review_dto).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txids_have_one_spelling_per_chain() {
        assert_eq!(canonical_txid(Chain::Ethereum, " AB12 "), "0xab12");
        assert_eq!(canonical_txid(Chain::Ethereum, "0XaB12"), "0xab12");
        assert_eq!(canonical_txid(Chain::Tron, "0xAB12"), "ab12");
        assert_eq!(canonical_txid(Chain::Bitcoin, "AB12"), "ab12");
    }

    fn request(amount: &str, to: &str) -> CreateRequest {
        CreateRequest {
            chain: "tron".into(),
            asset: "USDT".into(),
            to: to.into(),
            amount: amount.into(),
            reference: "user:1".into(),
        }
    }

    const TO: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";

    #[test]
    fn the_same_request_said_two_ways_hashes_alike() {
        let intake = Intake::default();
        let a = intake.check_with(&request("1.5", TO), None).ok().unwrap();
        let b = intake
            .check_with(&request("1.500000", TO), None)
            .ok()
            .unwrap();
        let c = intake
            .check_with(&request("1.500001", TO), None)
            .ok()
            .unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
        assert_eq!(a.amount.base_units().to_string(), "1500000");
    }

    #[test]
    fn bad_requests_name_their_field() {
        let mut own = Intake::default();
        own.own_addresses.insert((Chain::Tron, TO.to_string()));
        for (intake, request, field) in [
            (Intake::default(), request("1.0000001", TO), "amount"),
            (Intake::default(), request("0", TO), "amount"),
            (Intake::default(), request("-1", TO), "amount"),
            (Intake::default(), request(&"9".repeat(90), TO), "amount"),
            (
                Intake::default(),
                request("1", "0x52908400098527886E0F7030069857D2E4169EE7"),
                "to",
            ),
            (
                Intake::default(),
                request("1", "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU8"),
                "to",
            ),
            (own, request("1", TO), "to"),
            (
                Intake::default(),
                CreateRequest {
                    asset: "DOGE".into(),
                    ..request("1", TO)
                },
                "asset",
            ),
            (
                Intake::default(),
                CreateRequest {
                    chain: "solana".into(),
                    ..request("1", TO)
                },
                "chain",
            ),
            (
                Intake::default(),
                CreateRequest {
                    reference: "a\u{0}b".into(),
                    ..request("1", TO)
                },
                "reference",
            ),
        ] {
            match intake.check_with(&request, None) {
                Err(IntakeError::Invalid { field: got, .. }) => {
                    assert_eq!(got, field, "{request:?}")
                }
                Err(other) => panic!("{request:?}: {other}"),
                Ok(_) => panic!("{request:?} was accepted"),
            }
        }
    }
}
