//! The provider contract's shared vocabulary (DESIGN.md §6). Building and signing are
//! separate steps, so a signed transaction is stored before it leaves the process, and
//! submitting says exactly what the node answered.

/// What a node said to a signed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// The node took it.
    Accepted,
    /// The node has it already (in its pool, or mined): success for this very transaction.
    AlreadyKnown,
    /// The node refused it. `retriable`: the same bytes may be accepted later (a busy node, a
    /// fee below the pool's floor); otherwise they never will (bad signature, nonce used).
    Rejected { retriable: bool, reason: String },
    /// No answer, or one that does not say: the transaction may or may not be out. Only the
    /// same bytes may be sent again until the chain says it is dead.
    Unknown { reason: String },
}

/// A chain call that failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChainError {
    pub retriable: bool,
    pub message: String,
}

impl ChainError {
    pub fn retriable(message: impl Into<String>) -> Self {
        ChainError {
            retriable: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ChainError {
            retriable: false,
            message: message.into(),
        }
    }
}

/// A block, by number and hash, with its parent's hash (a reorg shows as a parent that is
/// not the hash stored for the block before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub number: u64,
    pub hash: String,
    pub parent_hash: String,
}

/// Where a transaction is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    /// The node does not know it.
    NotFound,
    /// Known, not in a block yet.
    Pending,
    /// In a block; `success` false when it reverted (the fee is paid, the transfer is not).
    Included {
        block: BlockRef,
        success: bool,
        confirmations: u64,
    },
}
