//! Nonce allocation on SQLite: `begin immediate` serialises every writer.

use domain::Chain;
use sqlx::{Row, Sqlite};

use super::to_millis;

use super::SqliteStore;
use crate::{NonceReserve, StoreError};

impl SqliteStore {
    pub(crate) async fn nonce_reserve(&self, reserve: &NonceReserve) -> Result<u64, StoreError> {
        let chain = reserve.chain.as_str();
        let pending = crate::nonces::to_i64(reserve.node_pending)?;
        let mut transaction = self.begin_write().await?;
        sqlx::query::<Sqlite>(
            "insert into nonce_counter (chain, address, next_nonce) values (?1, ?2, ?3)
             on conflict (chain, address) do nothing",
        )
        .bind(chain)
        .bind(&reserve.address)
        .bind(pending)
        .execute(&mut *transaction)
        .await?;
        let next: i64 = sqlx::query_scalar(
            "select next_nonce from nonce_counter where chain = ?1 and address = ?2",
        )
        .bind(chain)
        .bind(&reserve.address)
        .fetch_one(&mut *transaction)
        .await?;
        // A gap to fill first: a reservation nobody bound and whose holder's lease ran out.
        let reused = sqlx::query::<Sqlite>(
            "update nonce_use set holder = ?4, reserved_until = ?5
             where (chain, address, nonce) = (
                 select chain, address, nonce from nonce_use
                 where chain = ?1 and address = ?2 and txid is null
                   and reserved_until <= ?3 and nonce >= ?6
                 order by nonce limit 1)
             returning nonce",
        )
        .bind(chain)
        .bind(&reserve.address)
        .bind(to_millis(reserve.now))
        .bind(&reserve.holder)
        .bind(to_millis(reserve.lease_until))
        .bind(pending)
        .fetch_optional(&mut *transaction)
        .await?;
        let nonce = match reused {
            Some(row) => row.try_get::<i64, _>("nonce")?,
            None => {
                let nonce = next.max(pending);
                sqlx::query::<Sqlite>(
                    "insert into nonce_use (chain, address, nonce, holder, reserved_until)
                     values (?1, ?2, ?3, ?4, ?5)",
                )
                .bind(chain)
                .bind(&reserve.address)
                .bind(nonce)
                .bind(&reserve.holder)
                .bind(to_millis(reserve.lease_until))
                .execute(&mut *transaction)
                .await?;
                sqlx::query::<Sqlite>(
                    "update nonce_counter set next_nonce = ?3 where chain = ?1 and address = ?2",
                )
                .bind(chain)
                .bind(&reserve.address)
                .bind(nonce + 1)
                .execute(&mut *transaction)
                .await?;
                nonce
            }
        };
        // Unbound reservations below the node's count are moot: that nonce is used already.
        sqlx::query::<Sqlite>(
            "delete from nonce_use where chain = ?1 and address = ?2 and txid is null and nonce < ?3",
        )
        .bind(chain)
        .bind(&reserve.address)
        .bind(pending)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        u64::try_from(nonce).map_err(|_| crate::corrupt("nonce_use.nonce", nonce))
    }

    pub(crate) async fn nonce_bind(
        &self,
        chain: Chain,
        address: &str,
        nonce: i64,
        holder: &str,
        txid: &str,
        raw: &[u8],
    ) -> Result<bool, StoreError> {
        let done = sqlx::query::<Sqlite>(
            "update nonce_use set txid = ?5, raw = ?6
             where chain = ?1 and address = ?2 and nonce = ?3 and holder = ?4 and txid is null",
        )
        .bind(chain.as_str())
        .bind(address)
        .bind(nonce)
        .bind(holder)
        .bind(txid)
        .bind(raw)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn nonce_release(
        &self,
        chain: Chain,
        address: &str,
        nonce: i64,
        holder: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query::<Sqlite>(
            "update nonce_use set reserved_until = 0
             where chain = ?1 and address = ?2 and nonce = ?3 and holder = ?4 and txid is null",
        )
        .bind(chain.as_str())
        .bind(address)
        .bind(nonce)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn nonce_replace(
        &self,
        chain: Chain,
        address: &str,
        nonce: i64,
        old_txid: &str,
        txid: &str,
        raw: &[u8],
    ) -> Result<bool, StoreError> {
        let done = sqlx::query::<Sqlite>(
            "update nonce_use set txid = ?5, raw = ?6
             where chain = ?1 and address = ?2 and nonce = ?3 and txid = ?4",
        )
        .bind(chain.as_str())
        .bind(address)
        .bind(nonce)
        .bind(old_txid)
        .bind(txid)
        .bind(raw)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn nonce_unmined(
        &self,
        chain: Chain,
        address: &str,
        node_latest: i64,
    ) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
        let mut transaction = self.begin_write().await?;
        // Below the node's mined count every nonce is used for good: nothing left to watch.
        sqlx::query::<Sqlite>(
            "delete from nonce_use where chain = ?1 and address = ?2 and nonce < ?3",
        )
        .bind(chain.as_str())
        .bind(address)
        .bind(node_latest)
        .execute(&mut *transaction)
        .await?;
        let rows = sqlx::query::<Sqlite>(
            "select nonce, txid, raw from nonce_use
             where chain = ?1 and address = ?2 and txid is not null and raw is not null
             order by nonce",
        )
        .bind(chain.as_str())
        .bind(address)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("nonce")?,
                    row.try_get("txid")?,
                    row.try_get("raw")?,
                ))
            })
            .collect()
    }

    pub(crate) async fn nonce_unbind(
        &self,
        chain: Chain,
        address: &str,
        nonce: i64,
        txid: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query::<Sqlite>(
            "update nonce_use set txid = null, raw = null, reserved_until = 0
             where chain = ?1 and address = ?2 and nonce = ?3 and txid = ?4",
        )
        .bind(chain.as_str())
        .bind(address)
        .bind(nonce)
        .bind(txid)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
