//! The attempt death rule of DESIGN.md §2.3 for TRON, made provable from the solidified
//! chain alone.
//!
//! When can a transaction enter block B? java-tron's `Manager.processTransaction` runs
//! `validateTapos`, then `validateCommon`, for every transaction of a block it applies:
//! - `validateCommon` refuses it when `expiration <= headBlockTime`, the head *before* B is
//!   applied, i.e. B's parent. So B's parent must be older than the expiration: the candidate
//!   blocks end with P, the first block whose time is at or past the expiration (P's parent
//!   is still before it; every block after P has a parent at or past it).
//! - `validateTapos` looks `ref_block_bytes` (bytes 6..8 of the reference block's number) up
//!   in the recent-block store, which holds the latest block with those 16 low bits, and
//!   compares `ref_block_hash`. So B comes after the reference block R: the candidate blocks
//!   start right after R.
//!
//! Solidified blocks are final. So once the solidified chain holds P, and every solidified
//! block from R+1 up to P has been read and none holds the txid, the attempt can never land
//! and a new attempt may be made. Anything short of that (a block missing from a page, blocks
//! that do not chain, the node's transaction index answering `{}`) proves nothing: the
//! attempt may still land, and only the very same bytes may be broadcast again.
//!
//! [`Proof`] is the pure part: it is fed the solidified blocks after R, in order, and says
//! when it has seen enough. `node.rs` reads the blocks (`walletsolidity/getblockbylimitnext`,
//! 100 at a time) and feeds them.

pub use chain::provider::AttemptFate;

/// The most blocks read to prove one attempt dead: an expiration is at most 24 hours after
/// the timestamp (28,800 blocks at 3 s), plus the reference block's lag behind the clock
/// (the solidified head, about 19 blocks) with a margin. More means a reference block far
/// older than ours ever are: not proven, left for review.
pub const SCAN_BLOCKS_MAX: u64 = 30_000;
/// The most blocks `getblockbylimitnext` answers in one call (java-tron's
/// `GetBlockByLimitNextServlet.BLOCK_LIMIT_NUM`).
pub const PAGE_BLOCKS: u64 = 100;
/// How far apart two blocks with the same `ref_block_bytes` are.
pub const REF_BLOCK_CYCLE: u64 = 1 << 16;

/// A solidified block as the rule reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolidBlock {
    pub number: u64,
    /// The block id (hex), which the next block names as its parent.
    pub id: String,
    pub parent_hash: String,
    pub timestamp: i64,
    /// The block's transactions: txid (hex) and whether its `contractRet` says SUCCESS.
    pub transactions: Vec<(String, bool)>,
}

/// The number of the latest block at or below `at_or_below` whose low 16 bits are
/// `ref_block_bytes` (the only candidate for the reference block among the 65,536 blocks up
/// to it); None when there is none.
pub fn ref_block_number(ref_block_bytes: [u8; 2], at_or_below: u64) -> Option<u64> {
    let low = u64::from(u16::from_be_bytes(ref_block_bytes));
    let base = at_or_below & !(REF_BLOCK_CYCLE - 1);
    let candidate = base | low;
    if candidate <= at_or_below {
        Some(candidate)
    } else {
        candidate.checked_sub(REF_BLOCK_CYCLE)
    }
}

/// Why the blocks read so far prove nothing either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the attempt's fate is not proven: {0}")]
pub struct NotProven(pub String);

/// The proof being built for one attempt from the solidified blocks after its reference
/// block, fed in order.
#[derive(Debug, Clone)]
pub struct Proof {
    txid: String,
    expiration: i64,
    /// The last block fed (the reference block at first): number and id.
    last: (u64, String),
    read: u64,
    verdict: Option<AttemptFate>,
}

impl Proof {
    /// A proof for `txid` expiring at `expiration` (ms), whose reference block is `reference`.
    pub fn new(txid: &str, expiration: i64, reference: &SolidBlock) -> Proof {
        Proof {
            txid: txid.to_ascii_lowercase(),
            expiration,
            last: (reference.number, reference.id.clone()),
            read: 0,
            verdict: None,
        }
    }

    /// The number of the next block the proof needs.
    pub fn next(&self) -> u64 {
        self.last.0.saturating_add(1)
    }

    /// Feeds the next block. Returns the verdict once there is one (the block that holds the
    /// transaction, or the first block at or past the expiration without it); blocks fed after
    /// a verdict are ignored. A block out of order or not chained to the one before is refused.
    pub fn feed(&mut self, block: &SolidBlock) -> Result<Option<AttemptFate>, NotProven> {
        if self.verdict.is_some() {
            return Ok(self.verdict);
        }
        if block.number != self.next() {
            return Err(NotProven(format!(
                "block {} where {} was expected",
                block.number,
                self.next()
            )));
        }
        if !block.parent_hash.eq_ignore_ascii_case(&self.last.1) {
            return Err(NotProven(format!(
                "block {} does not follow block {}",
                block.number, self.last.0
            )));
        }
        self.read += 1;
        if self.read > SCAN_BLOCKS_MAX {
            return Err(NotProven(format!(
                "more than {SCAN_BLOCKS_MAX} blocks between the reference block and the expiration"
            )));
        }
        self.last = (block.number, block.id.clone());
        if let Some((_, success)) = block
            .transactions
            .iter()
            .find(|(txid, _)| txid.eq_ignore_ascii_case(&self.txid))
        {
            self.verdict = Some(AttemptFate::Landed {
                block: block.number,
                success: *success,
            });
        } else if block.timestamp >= self.expiration {
            self.verdict = Some(AttemptFate::Dead);
        }
        Ok(self.verdict)
    }

    /// The fate once every solidified block up to `solidified_head` (number, block time) has
    /// been fed: without a verdict, the attempt may still land while the solidified head is
    /// before the expiration; past it, the blocks fed fell short of it, which proves nothing.
    pub fn finish(&self, solidified_head: (u64, i64)) -> Result<AttemptFate, NotProven> {
        if let Some(verdict) = self.verdict {
            return Ok(verdict);
        }
        if solidified_head.1 < self.expiration {
            return Ok(AttemptFate::MayLand);
        }
        Err(NotProven(format!(
            "the solidified head {} is past the expiration but only blocks up to {} were read",
            solidified_head.0, self.last.0
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXID: &str = "ab01";
    const EXPIRATION: i64 = 1_900_000_060_000;

    fn id(number: u64) -> String {
        format!("{number:016x}{}", "5a".repeat(24))
    }

    fn block(number: u64, timestamp: i64, txids: &[&str]) -> SolidBlock {
        SolidBlock {
            number,
            id: id(number),
            parent_hash: id(number - 1),
            timestamp,
            transactions: txids.iter().map(|txid| (txid.to_string(), true)).collect(),
        }
    }

    /// Blocks 101.. every 3 s, the reference block 100 at `EXPIRATION - 60 s`.
    fn chain(count: u64) -> Vec<SolidBlock> {
        (101..101 + count)
            .map(|number| {
                block(
                    number,
                    EXPIRATION - 60_000 + (number as i64 - 100) * 3_000,
                    &[],
                )
            })
            .collect()
    }

    fn judge(blocks: &[SolidBlock], head: Option<(u64, i64)>) -> Result<AttemptFate, NotProven> {
        let reference = block(100, EXPIRATION - 60_000, &[]);
        let mut proof = Proof::new(TXID, EXPIRATION, &reference);
        for block in blocks {
            proof.feed(block)?;
        }
        let head = head.unwrap_or_else(|| {
            blocks.last().map_or((100, reference.timestamp), |last| {
                (last.number, last.timestamp)
            })
        });
        proof.finish(head)
    }

    /// A name, the blocks fed, the solidified head (the last block fed when None), and the
    /// fate (`Err(())`: not proven).
    type Case = (
        &'static str,
        Vec<SolidBlock>,
        Option<(u64, i64)>,
        Result<AttemptFate, ()>,
    );

    #[test]
    fn dead_only_once_every_block_up_to_the_first_past_the_expiration_is_read() {
        // Block 120 is at the expiration exactly: its parent (119) is before it, so 120 may
        // still hold the transaction; nothing after 120 can.
        let blocks = chain(25);
        assert_eq!(blocks[19].timestamp, EXPIRATION);
        let cases: Vec<Case> = vec![
            (
                "nothing solidified after the reference",
                vec![],
                None,
                Ok(AttemptFate::MayLand),
            ),
            (
                "up to the block before the expiration",
                blocks[..19].to_vec(),
                None,
                Ok(AttemptFate::MayLand),
            ),
            (
                "up to the block at the expiration",
                blocks[..20].to_vec(),
                None,
                Ok(AttemptFate::Dead),
            ),
            ("past it", blocks.clone(), None, Ok(AttemptFate::Dead)),
            // The solidified head is past the expiration, but the blocks read stop short.
            (
                "short of a head past the expiration",
                blocks[..19].to_vec(),
                Some((125, EXPIRATION + 15_000)),
                Err(()),
            ),
            (
                "a gap",
                [&blocks[..5], &blocks[6..]].concat(),
                None,
                Err(()),
            ),
            (
                "held in the last candidate",
                {
                    let mut blocks = blocks.clone();
                    blocks[19].transactions.push((TXID.to_uppercase(), false));
                    blocks
                },
                None,
                Ok(AttemptFate::Landed {
                    block: 120,
                    success: false,
                }),
            ),
            (
                "held in a block after the expiration (impossible, but it is there)",
                {
                    let mut blocks = blocks.clone();
                    blocks[19].timestamp = EXPIRATION + 1;
                    blocks[20].transactions.push((TXID.into(), true));
                    blocks
                },
                None,
                Ok(AttemptFate::Dead),
            ),
            (
                "held early",
                {
                    let mut blocks = blocks.clone();
                    blocks[0].transactions.push((TXID.into(), true));
                    blocks
                },
                None,
                Ok(AttemptFate::Landed {
                    block: 101,
                    success: true,
                }),
            ),
            (
                "a block of another chain",
                {
                    let mut blocks = blocks.clone();
                    blocks[3].parent_hash = "ff".repeat(32);
                    blocks
                },
                None,
                Err(()),
            ),
        ];
        for (name, blocks, head, expected) in cases {
            let got = judge(&blocks, head).map_err(|_| ());
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn the_scan_is_bounded() {
        let reference = block(100, 0, &[]);
        let mut proof = Proof::new(TXID, i64::MAX, &reference);
        let mut result = Ok(None);
        for number in 101..=101 + SCAN_BLOCKS_MAX {
            result = proof.feed(&block(number, 1, &[]));
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
        assert_eq!(proof.next(), 101 + SCAN_BLOCKS_MAX);
    }

    #[test]
    fn the_reference_block_is_the_latest_with_its_low_bits() {
        let cases = [
            ([0x00, 0x64], 100, Some(100)),
            ([0x00, 0x64], 99, None),
            ([0x00, 0x64], 65_636, Some(65_636)),
            ([0x00, 0x64], 65_635, Some(100)),
            ([0xff, 0xff], 200_000, Some(196_607)),
            ([0xac, 0xa0], 62_500_000, Some(62_500_000)),
            ([0xac, 0xa1], 62_500_000, Some(62_500_001 - 65_536)),
        ];
        for (bytes, below, expected) in cases {
            assert_eq!(
                ref_block_number(bytes, below),
                expected,
                "{bytes:?} {below}"
            );
        }
    }
}
