//! Block scanning and deposits on SQLite: `begin immediate` serialises the writers.

use chrono::{DateTime, Utc};
use domain::Chain;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SqliteStore, from_millis, to_millis};
use crate::StoreError;
use crate::scans::{
    DepositInsert, DepositRow, DepositState, Rollback, SCAN_BLOCKS_KEPT, ScannedBlock, amount_text,
    parse_amount, to_u64,
};

fn block(row: &SqliteRow) -> Result<ScannedBlock, StoreError> {
    Ok(ScannedBlock {
        number: to_u64("chain_block.number", row.try_get("number")?)?,
        hash: row.try_get("hash")?,
        parent_hash: row.try_get("parent_hash")?,
    })
}

fn deposit(row: &SqliteRow) -> Result<DepositRow, StoreError> {
    let chain: String = row.try_get("chain")?;
    let amount: String = row.try_get("amount")?;
    let state: String = row.try_get("state")?;
    Ok(DepositRow {
        id: row.try_get("id")?,
        chain: chain
            .parse()
            .map_err(|error| crate::corrupt("deposit.chain", error))?,
        txid: row.try_get("txid")?,
        asset: row.try_get("asset")?,
        position: to_u64("deposit.position", row.try_get("position")?)?,
        address: row.try_get("address")?,
        sender: row.try_get("sender")?,
        amount: parse_amount(&amount)?,
        block_number: to_u64("deposit.block_number", row.try_get("block_number")?)?,
        block_hash: row.try_get("block_hash")?,
        state: DepositState::parse(&state)?,
        seen_at: from_millis(row.try_get("seen_at")?)?,
        credited_at: row
            .try_get::<Option<i64>, _>("credited_at")?
            .map(from_millis)
            .transpose()?,
    })
}

impl SqliteStore {
    /// Block `number`, or the newest with None.
    pub(crate) async fn scan_block(
        &self,
        chain: Chain,
        number: Option<i64>,
    ) -> Result<Option<ScannedBlock>, StoreError> {
        let row = sqlx::query::<Sqlite>(
            "select number, hash, parent_hash from chain_block
             where chain = ?1 and (?2 is null or number = ?2)
             order by number desc limit 1",
        )
        .bind(chain.as_str())
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(block).transpose()
    }

    pub(crate) async fn scan_commit(
        &self,
        chain: Chain,
        blocks: &[ScannedBlock],
        deposits: &[DepositInsert],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The write lock from the first statement: the check below is a true compare-and-set.
        let mut transaction = self.begin_write().await?;
        let newest = sqlx::query::<Sqlite>(
            "select number, hash, parent_hash from chain_block
             where chain = ?1 order by number desc limit 1",
        )
        .bind(chain.as_str())
        .fetch_optional(&mut *transaction)
        .await?;
        let first = &blocks[0];
        if let Some(newest) = newest.as_ref().map(block).transpose()?
            && (newest.number + 1 != first.number || newest.hash != first.parent_hash)
        {
            return Err(StoreError::Stale(format!(
                "block {} does not follow the stored block {} {}",
                first.number, newest.number, newest.hash
            )));
        }
        let mut insert = QueryBuilder::<Sqlite>::new(
            "insert into chain_block (chain, number, hash, parent_hash, scanned_at) ",
        );
        insert.push_values(blocks, |mut row, block| {
            row.push_bind(chain.as_str())
                .push_bind(block.number as i64)
                .push_bind(&block.hash)
                .push_bind(&block.parent_hash)
                .push_bind(to_millis(now));
        });
        insert.build().execute(&mut *transaction).await?;
        for chunk in deposits.chunks(1_000) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "insert into deposit (chain, txid, asset, position, address, sender, amount,
                                      block_number, block_hash, state, seen_at) ",
            );
            // Numbers were range-checked by `validate_batch`.
            insert.push_values(chunk, |mut row, deposit| {
                row.push_bind(chain.as_str())
                    .push_bind(&deposit.txid)
                    .push_bind(&deposit.asset)
                    .push_bind(deposit.position as i64)
                    .push_bind(&deposit.address)
                    .push_bind(&deposit.sender)
                    .push_bind(amount_text(&deposit.amount))
                    .push_bind(deposit.block_number as i64)
                    .push_bind(&deposit.block_hash)
                    .push_bind("pending")
                    .push_bind(to_millis(now));
            });
            insert.push(
                " on conflict (chain, txid, asset, position) do update
                  set block_number = excluded.block_number, block_hash = excluded.block_hash,
                      state = 'pending', seen_at = excluded.seen_at
                  where deposit.state = 'orphaned'",
            );
            insert.build().execute(&mut *transaction).await?;
        }
        let newest = blocks[blocks.len() - 1].number;
        sqlx::query::<Sqlite>("delete from chain_block where chain = ?1 and number < ?2")
            .bind(chain.as_str())
            .bind(newest.saturating_sub(SCAN_BLOCKS_KEPT) as i64)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub(crate) async fn scan_rollback(
        &self,
        chain: Chain,
        keep_through: i64,
    ) -> Result<Rollback, StoreError> {
        let mut transaction = self.begin_write().await?;
        let blocks =
            sqlx::query::<Sqlite>("delete from chain_block where chain = ?1 and number > ?2")
                .bind(chain.as_str())
                .bind(keep_through)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
        let mut moved = [0u64; 2];
        for (slot, (from, to)) in [("pending", "orphaned"), ("credited", "reversed")]
            .into_iter()
            .enumerate()
        {
            moved[slot] = sqlx::query::<Sqlite>(
                "update deposit set state = ?4
                 where chain = ?1 and block_number > ?2 and state = ?3",
            )
            .bind(chain.as_str())
            .bind(keep_through)
            .bind(from)
            .bind(to)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        }
        transaction.commit().await?;
        Ok(Rollback {
            blocks,
            orphaned: moved[0],
            reversed: moved[1],
        })
    }

    pub(crate) async fn deposits_credit(
        &self,
        chain: Chain,
        through: i64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut transaction = self.begin_write().await?;
        let credited = sqlx::query::<Sqlite>(
            "update deposit set state = 'credited', credited_at = ?3
             where chain = ?1 and state = 'pending' and block_number <= ?2",
        )
        .bind(chain.as_str())
        .bind(through)
        .bind(to_millis(now))
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok(credited)
    }

    pub(crate) async fn deposits_list(
        &self,
        chain: Chain,
        state: Option<DepositState>,
        limit: u32,
    ) -> Result<Vec<DepositRow>, StoreError> {
        let rows = sqlx::query::<Sqlite>(
            "select id, chain, txid, asset, position, address, sender, amount, block_number,
                    block_hash, state, seen_at, credited_at
             from deposit where chain = ?1 and (?2 is null or state = ?2)
             order by id desc limit ?3",
        )
        .bind(chain.as_str())
        .bind(state.map(DepositState::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deposit).collect()
    }
}
