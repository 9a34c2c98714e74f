//! Payout attempts on SQLite: `begin immediate` serialises every writer.

use chrono::{DateTime, Utc};
use domain::Chain;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{SqliteStore, from_millis, to_millis};
use crate::StoreError;
use crate::attempts::{Attempt, AttemptNew, AttemptState, Outpoint, check_store, vout};

/// Releases the payout's reservations that no live or landed attempt of it spends.
async fn release_unused(
    transaction: &mut Transaction<'static, Sqlite>,
    chain: Chain,
    payout: &str,
) -> Result<(), StoreError> {
    sqlx::query::<Sqlite>(
        "delete from utxo_reservation
         where chain = ?1 and payout = ?2 and not exists (
             select 1 from attempt_input i
             join payout_attempt a on a.chain = i.chain and a.txid = i.attempt_txid
             where i.chain = utxo_reservation.chain and i.txid = utxo_reservation.txid
               and i.vout = utxo_reservation.vout and a.payout = utxo_reservation.payout
               and a.state in ('live', 'landed'))",
    )
    .bind(chain.as_str())
    .bind(payout)
    .execute(&mut **transaction)
    .await?;
    sqlx::query::<Sqlite>(
        "delete from payout_member
         where chain = ?1 and payout = ?2 and not exists (
             select 1 from payout_attempt a
             where a.chain = payout_member.chain and a.payout = payout_member.payout
               and a.state in ('live', 'landed'))",
    )
    .bind(chain.as_str())
    .bind(payout)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

fn attempt(row: &SqliteRow) -> Result<Attempt, StoreError> {
    let chain: String = row.try_get("chain")?;
    let state: String = row.try_get("state")?;
    Ok(Attempt {
        chain: chain
            .parse()
            .map_err(|error| crate::corrupt("payout_attempt.chain", error))?,
        payout: row.try_get("payout")?,
        sender: row.try_get("sender")?,
        txid: row.try_get("txid")?,
        raw: row.try_get("raw")?,
        expires_at: row.try_get("expires_at")?,
        inputs: Vec::new(),
        replaces: row.try_get("replaces")?,
        state: AttemptState::parse(&state)?,
        created_at: from_millis(row.try_get("created_at")?)?,
    })
}

impl SqliteStore {
    pub(crate) async fn attempt_store(&self, new: &AttemptNew<'_>) -> Result<(), StoreError> {
        let chain = new.chain.as_str();
        let mut transaction = self.begin_write().await?;
        let same_txid = sqlx::query::<Sqlite>(
            "select payout, raw from payout_attempt where chain = ?1 and txid = ?2",
        )
        .bind(chain)
        .bind(new.txid)
        .fetch_optional(&mut *transaction)
        .await?
        .map(|row| Ok::<_, StoreError>((row.try_get("payout")?, row.try_get("raw")?)))
        .transpose()?;
        let holding = sqlx::query::<Sqlite>(
            "select txid, state from payout_attempt
             where chain = ?1 and payout = ?2 and state in ('live', 'landed')
             order by created_at, txid",
        )
        .bind(chain)
        .bind(new.payout)
        .fetch_all(&mut *transaction)
        .await?
        .iter()
        .map(|row| {
            let state: String = row.try_get("state")?;
            Ok((row.try_get("txid")?, AttemptState::parse(&state)?))
        })
        .collect::<Result<Vec<(String, AttemptState)>, StoreError>>()?;
        // A replacement must conflict with every live attempt: their inputs (a payout has a
        // few, bounded by the bumps a chain adapter makes).
        let mut live_inputs = Vec::new();
        if new.replaces.is_some() {
            for (txid, state) in &holding {
                if *state == AttemptState::Live {
                    let inputs = self
                        .attempt_inputs(&mut transaction, new.chain, txid)
                        .await?;
                    live_inputs.push((txid.clone(), inputs));
                }
            }
        }
        if !check_store(new, same_txid, &holding, &live_inputs)? {
            return Ok(());
        }
        sqlx::query::<Sqlite>(
            "insert into payout_attempt
                 (chain, txid, payout, sender, raw, expires_at, replaces, state, created_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'live', ?8)",
        )
        .bind(chain)
        .bind(new.txid)
        .bind(new.payout)
        .bind(new.sender)
        .bind(new.raw)
        .bind(new.expires_at)
        .bind(new.replaces)
        .bind(to_millis(new.now))
        .execute(&mut *transaction)
        .await?;
        let mut inputs = new.inputs.to_vec();
        inputs.sort();
        for chunk in inputs.chunks(500) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "insert into attempt_input (chain, attempt_txid, txid, vout) ",
            );
            insert.push_values(chunk, |mut row, input| {
                row.push_bind(chain)
                    .push_bind(new.txid)
                    .push_bind(&input.txid)
                    .push_bind(i64::from(input.vout));
            });
            insert.build().execute(&mut *transaction).await?;
            let mut reserve = QueryBuilder::<Sqlite>::new(
                "insert into utxo_reservation (chain, txid, vout, payout, reserved_at) ",
            );
            reserve.push_values(chunk, |mut row, input| {
                row.push_bind(chain)
                    .push_bind(&input.txid)
                    .push_bind(i64::from(input.vout))
                    .push_bind(new.payout)
                    .push_bind(to_millis(new.now));
            });
            reserve.push(" on conflict (chain, txid, vout) do nothing");
            reserve.build().execute(&mut *transaction).await?;
        }
        // Each input must now be reserved for this payout: a row of another payout means it is
        // spoken for.
        if !new.inputs.is_empty() {
            let taken = sqlx::query::<Sqlite>(
                "select r.txid, r.vout, r.payout from utxo_reservation r
                 join attempt_input i on i.chain = r.chain and i.txid = r.txid and i.vout = r.vout
                 where i.chain = ?1 and i.attempt_txid = ?2 and r.payout <> ?3
                 order by r.txid, r.vout limit 1",
            )
            .bind(chain)
            .bind(new.txid)
            .bind(new.payout)
            .fetch_optional(&mut *transaction)
            .await?;
            if let Some(row) = taken {
                let txid: String = row.try_get("txid")?;
                let output: i64 = row.try_get("vout")?;
                let payout: String = row.try_get("payout")?;
                return Err(StoreError::Conflict(format!(
                    "output {txid}:{output} is reserved by payout {payout}"
                )));
            }
        }
        // Each withdrawal it pays must be this payout's alone, the same way.
        let mut members = new.members.to_vec();
        members.sort();
        for chunk in members.chunks(500) {
            let mut claim = QueryBuilder::<Sqlite>::new(
                "insert into payout_member (chain, member, payout, claimed_at) ",
            );
            claim.push_values(chunk, |mut row, member| {
                row.push_bind(chain)
                    .push_bind(member)
                    .push_bind(new.payout)
                    .push_bind(to_millis(new.now));
            });
            claim.push(" on conflict (chain, member) do nothing");
            claim.build().execute(&mut *transaction).await?;
            let mut taken = QueryBuilder::<Sqlite>::new(
                "select member, payout from payout_member where chain = ",
            );
            taken
                .push_bind(chain)
                .push(" and payout <> ")
                .push_bind(new.payout);
            taken.push(" and member in (");
            let mut list = taken.separated(", ");
            for member in chunk {
                list.push_bind(member);
            }
            taken.push(") order by member limit 1");
            if let Some(row) = taken.build().fetch_optional(&mut *transaction).await? {
                return Err(StoreError::Claimed {
                    member: row.try_get("member")?,
                    payout: row.try_get("payout")?,
                });
            }
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn attempt_inputs(
        &self,
        transaction: &mut Transaction<'static, Sqlite>,
        chain: Chain,
        txid: &str,
    ) -> Result<Vec<Outpoint>, StoreError> {
        sqlx::query::<Sqlite>(
            "select txid, vout from attempt_input where chain = ?1 and attempt_txid = ?2
             order by txid, vout",
        )
        .bind(chain.as_str())
        .bind(txid)
        .fetch_all(&mut **transaction)
        .await?
        .iter()
        .map(|row| {
            Ok(Outpoint {
                txid: row.try_get("txid")?,
                vout: vout(row.try_get("vout")?)?,
            })
        })
        .collect()
    }

    async fn with_inputs(&self, mut attempts: Vec<Attempt>) -> Result<Vec<Attempt>, StoreError> {
        for attempt in &mut attempts {
            let rows = sqlx::query::<Sqlite>(
                "select txid, vout from attempt_input where chain = ?1 and attempt_txid = ?2
                 order by txid, vout",
            )
            .bind(attempt.chain.as_str())
            .bind(&attempt.txid)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                attempt.inputs.push(Outpoint {
                    txid: row.try_get("txid")?,
                    vout: vout(row.try_get("vout")?)?,
                });
            }
        }
        Ok(attempts)
    }

    pub(crate) async fn attempts_live(
        &self,
        chain: Chain,
        sender: Option<&str>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query::<Sqlite>(
            "select * from payout_attempt
             where chain = ?1 and state = 'live' and (?2 is null or sender = ?2)
             order by checked_at is not null, checked_at, created_at, txid limit ?3",
        )
        .bind(chain.as_str())
        .bind(sender)
        .bind(crate::attempts::ATTEMPTS_LIVE_MAX as i64)
        .fetch_all(&self.pool)
        .await?;
        let attempts = rows.iter().map(attempt).collect::<Result<Vec<_>, _>>()?;
        self.with_inputs(attempts).await
    }

    pub(crate) async fn attempts_of(
        &self,
        chain: Chain,
        payout: &str,
    ) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query::<Sqlite>(
            "select * from payout_attempt where chain = ?1 and payout = ?2
             order by created_at, txid",
        )
        .bind(chain.as_str())
        .bind(payout)
        .fetch_all(&self.pool)
        .await?;
        let attempts = rows.iter().map(attempt).collect::<Result<Vec<_>, _>>()?;
        self.with_inputs(attempts).await
    }

    pub(crate) async fn attempt_settle(
        &self,
        chain: Chain,
        txid: &str,
        to: AttemptState,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let payout: Option<String> =
            sqlx::query_scalar("select payout from payout_attempt where chain = ?1 and txid = ?2")
                .bind(chain.as_str())
                .bind(txid)
                .fetch_optional(&mut *transaction)
                .await?;
        let Some(payout) = payout else {
            return Ok(false);
        };
        let done = sqlx::query::<Sqlite>(
            "update payout_attempt set state = ?3, settled_at = ?4
             where chain = ?1 and txid = ?2 and state = 'live'",
        )
        .bind(chain.as_str())
        .bind(txid)
        .bind(to.as_str())
        .bind(to_millis(now))
        .execute(&mut *transaction)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if to == AttemptState::Landed {
            sqlx::query::<Sqlite>(
                "update payout_attempt set state = 'replaced', settled_at = ?3
                 where chain = ?1 and payout = ?2 and state = 'live'",
            )
            .bind(chain.as_str())
            .bind(&payout)
            .bind(to_millis(now))
            .execute(&mut *transaction)
            .await?;
        }
        release_unused(&mut transaction, chain, &payout).await?;
        transaction.commit().await?;
        Ok(true)
    }

    pub(crate) async fn utxo_reserved(
        &self,
        chain: Chain,
    ) -> Result<Vec<(Outpoint, String)>, StoreError> {
        sqlx::query::<Sqlite>(
            "select txid, vout, payout from utxo_reservation where chain = ?1 order by txid, vout",
        )
        .bind(chain.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok((
                Outpoint {
                    txid: row.try_get("txid")?,
                    vout: vout(row.try_get("vout")?)?,
                },
                row.try_get("payout")?,
            ))
        })
        .collect()
    }
}
