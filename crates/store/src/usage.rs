//! Rolling 24-hour withdrawal limits (`withdrawal_usage`, `withdrawal_charge`, migration
//! 0015). A withdrawal is charged to each limit it falls under (its asset's total, its
//! reference prefix's) when it is created, in the same transaction and under the limit's lock,
//! after checking that the last 24 hours' use plus its amount stays within the limit; the
//! charge is given back in the transaction that moves it to `failed` or `canceled` (it was
//! never paid). Use is kept in hourly buckets; a limit counts the current hour and the 24
//! before it, so its window is never shorter than 24 hours (at most 25). Sums are exact,
//! in base units up to 2^256.

use chrono::{DateTime, Utc};
use ruint::aliases::U256;

/// One limit a new withdrawal is checked against and charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLimit {
    /// `""` for all of the asset's withdrawals, `ref:PREFIX` for one reference prefix.
    pub scope: String,
    /// The most the scope may use in 24 hours, in base units.
    pub limit: U256,
    /// How the limit is named in a refusal (`withdrawal_policy ethereum/ETH: daily_limit`).
    pub rule: String,
}

/// The longest scope.
pub const USAGE_SCOPE_LEN_MAX: usize = 210;

/// The hour a time falls in (hours since the epoch).
pub(crate) fn hour_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(3600)
}

pub(crate) fn units_of(text: &str) -> Result<U256, crate::StoreError> {
    text.parse()
        .map_err(|error| crate::corrupt("withdrawal_usage.units", error))
}

/// Checks `$limits` for a new withdrawal of `$amount` (U256) on `$chain`/`$asset` at `$now`
/// on `$conn` (dialect `$d`), taking each limit's lock: `LimitReached` naming the rule when
/// one would be exceeded.
macro_rules! check_usage {
    ($conn:expr, $d:ident, $chain:expr, $asset:expr, $amount:expr, $limits:expr, $now:expr) => {{
        let hour = $crate::usage::hour_of($now);
        for limit in $limits {
            $d::lock_usage(&mut *$conn, $chain, $asset, &limit.scope).await?;
            let rows = sqlx::query(
                "select units from withdrawal_usage
                 where chain = $1 and asset = $2 and scope = $3 and hour >= $4",
            )
            .bind($chain.as_str())
            .bind($asset)
            .bind(&limit.scope)
            .bind(hour - 24)
            .fetch_all(&mut *$conn)
            .await?;
            let mut used = ruint::aliases::U256::ZERO;
            for row in &rows {
                let units: String = row.try_get("units")?;
                used = used.saturating_add($crate::usage::units_of(&units)?);
            }
            if used.saturating_add($amount) > limit.limit {
                return Err($crate::StoreError::LimitReached(format!(
                    "the 24-hour limit of {} base units ({}) would be exceeded: {} used in the last 24 hours, {} asked",
                    limit.limit, limit.rule, used, $amount
                )));
            }
        }
    }};
}
pub(crate) use check_usage;

/// Adds `$delta` (U256; `$add` true) to, or takes it from (false), the bucket `$hour` of
/// `$chain`/`$asset`/`$scope`, read and written under the limit's lock.
macro_rules! move_usage {
    ($conn:expr, $d:ident, $chain:expr, $asset:expr, $scope:expr, $hour:expr, $delta:expr, $add:expr) => {{
        $d::lock_usage(&mut *$conn, $chain, $asset, $scope).await?;
        let current: Option<String> = sqlx::query(
            "select units from withdrawal_usage
             where chain = $1 and asset = $2 and scope = $3 and hour = $4",
        )
        .bind($chain.as_str())
        .bind($asset)
        .bind($scope)
        .bind($hour)
        .fetch_optional(&mut *$conn)
        .await?
        .map(|row| row.try_get("units"))
        .transpose()?;
        let current = match current {
            Some(text) => $crate::usage::units_of(&text)?,
            None => ruint::aliases::U256::ZERO,
        };
        let next = if $add {
            current.saturating_add($delta)
        } else {
            current.saturating_sub($delta)
        };
        sqlx::query(
            "insert into withdrawal_usage (chain, asset, scope, hour, units)
             values ($1, $2, $3, $4, $5)
             on conflict (chain, asset, scope, hour) do update set units = excluded.units",
        )
        .bind($chain.as_str())
        .bind($asset)
        .bind($scope)
        .bind($hour)
        .bind(next.to_string())
        .execute(&mut *$conn)
        .await?;
    }};
}
pub(crate) use move_usage;

/// Charges the new withdrawal `$row` to each of `$limits`.
macro_rules! charge_usage {
    ($conn:expr, $d:ident, $row:expr, $amount:expr, $limits:expr) => {{
        let hour = $crate::usage::hour_of($row.created_at);
        for limit in $limits {
            $crate::usage::move_usage!(
                $conn,
                $d,
                $row.chain,
                &$row.asset,
                &limit.scope,
                hour,
                $amount,
                true
            );
            sqlx::query(
                "insert into withdrawal_charge (withdrawal_id, scope, hour) values ($1, $2, $3)",
            )
            .bind($row.id)
            .bind(&limit.scope)
            .bind(hour)
            .execute(&mut *$conn)
            .await?;
        }
    }};
}
pub(crate) use charge_usage;

/// Gives back every charge of withdrawal `$row` (it failed or was canceled: never paid).
macro_rules! release_usage {
    ($conn:expr, $d:ident, $row:expr) => {{
        let charges = sqlx::query(
            "delete from withdrawal_charge where withdrawal_id = $1 returning scope, hour",
        )
        .bind($row.id)
        .fetch_all(&mut *$conn)
        .await?;
        if !charges.is_empty() {
            let amount = $crate::usage::units_of(&$row.amount)?;
            for charge in &charges {
                let scope: String = charge.try_get("scope")?;
                let hour: i64 = charge.try_get("hour")?;
                $crate::usage::move_usage!(
                    $conn,
                    $d,
                    $row.chain,
                    &$row.asset,
                    &scope,
                    hour,
                    amount,
                    false
                );
            }
        }
    }};
}
pub(crate) use release_usage;
