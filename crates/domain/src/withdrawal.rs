//! A withdrawal's life: the states it moves through, the moves allowed between them, and the
//! checks on what the exchange's backend asks for (its idempotency key and reference).
//!
//! The ends are the roadmap's: `completed` (paid, confirmed at the chain's policy), `failed`
//! (provably never paid), `canceled` (only before anything was signed) and `manual_review`
//! (the system cannot decide alone). The moves are a closed table, tested case by case; the
//! store applies each as a compare-and-set on the state it expects (DESIGN.md §2.4), so two
//! processes can never both move one withdrawal. `docs/withdrawal-states.md` draws it.

string_enum!(
    /// Where a withdrawal is.
    ///
    /// - `approval`: above its asset's approval threshold, it waits for approvals from
    ///   distinct operator tokens (never its creator's); nothing queued, nothing signed.
    ///   Approved: `pending`, its job queued in the same transaction; rejected: `failed`.
    /// - `pending`: accepted and queued; nothing signed. The only state a cancel leaves.
    /// - `processing`: a payer has taken it and may sign from here on, so it can no longer be
    ///   canceled. A payer that finds the hot wallet short moves it back to `pending` (nothing
    ///   was signed) with the reason.
    /// - `broadcast`: a signed transaction is stored and was sent; it may land.
    /// - `confirming`: in a block, short of the chain's confirmation policy.
    WithdrawalState, "withdrawal state", {
        Approval => "approval",
        Pending => "pending",
        Processing => "processing",
        Broadcast => "broadcast",
        Confirming => "confirming",
        Completed => "completed",
        Failed => "failed",
        Canceled => "canceled",
        ManualReview => "manual_review",
    }
);

impl WithdrawalState {
    /// Whether nothing more happens to it without a person.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WithdrawalState::Completed | WithdrawalState::Failed | WithdrawalState::Canceled
        )
    }

    /// Whether a transaction for it may have been signed (so it may be paid, and can never
    /// be canceled).
    pub fn may_be_signed(self) -> bool {
        !matches!(
            self,
            WithdrawalState::Approval | WithdrawalState::Pending | WithdrawalState::Canceled
        )
    }

    /// Whether a withdrawal may move from `self` to `to`.
    pub fn can_transition(self, to: WithdrawalState) -> bool {
        use WithdrawalState::*;
        matches!(
            (self, to),
            // Approved (queued), rejected, or canceled by the backend meanwhile.
            (Approval, Pending | Failed | Canceled)
            // A payer takes it; or it is canceled, or refused before anything is signed.
                | (Pending, Processing | Canceled | Failed)
                // Signed and stored, then sent; or given back unsigned (the hot wallet is
                // short); refused before signing; or something a person must judge.
                | (Processing, Broadcast | Pending | Failed | ManualReview)
                // Seen in a block (short of the policy, or already deep enough); every
                // attempt provably dead (or refused for good): paid again, or with no new
                // one allowed, failed; or undecidable.
                | (Broadcast, Confirming | Completed | Processing | Failed | ManualReview)
                // Deep enough; a reorg took the block away (back, never forward); landed but
                // failed on chain.
                | (Confirming, Completed | Broadcast | ManualReview)
                // A person's decision (the controls issue): paid, never paid, or try again.
                | (ManualReview, Completed | Failed | Processing)
        )
    }
}

/// The retry policy of the jobs that pay and reconcile withdrawals: a withdrawal's safety
/// never rests on its job's attempts (every run first follows what is stored), so its job
/// keeps trying through outages and restarts (a rescued run counts as an attempt): 100
/// attempts, backing off from 1 s to at most a minute, over an hour and a half in all.
pub fn job_retry() -> crate::RetryPolicy {
    crate::RetryPolicy {
        max_attempts: crate::limits::JOB_ATTEMPTS_MAX,
        backoff_base: std::time::Duration::from_secs(1),
        backoff_max: std::time::Duration::from_secs(60),
    }
}

/// How the reason of a withdrawal waiting for its hot wallet to hold enough starts (the
/// metric `coinsensei_withdrawals_waiting_for_funds` counts these).
pub const WAITING_FOR_FUNDS: &str = "waiting for funds";

/// The longest idempotency key: 1 to this many printable ASCII characters.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 100;
/// The longest `reference` (the exchange's own id of the withdrawal).
pub const REFERENCE_LEN_MAX: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "an idempotency key is 1 to {IDEMPOTENCY_KEY_LEN_MAX} printable ASCII characters (got {0} bytes)"
    )]
    IdempotencyKeyLength(usize),
    #[error("an idempotency key is printable ASCII only (0x20 to 0x7e)")]
    IdempotencyKeyCharacters,
    #[error("a reference is 1 to {REFERENCE_LEN_MAX} bytes (got {0})")]
    ReferenceLength(usize),
    #[error("a reference may not hold control characters")]
    ReferenceCharacters,
}

/// Checks an `Idempotency-Key`: 1 to 100 printable ASCII characters, spaces included.
pub fn check_idempotency_key(key: &str) -> Result<(), RequestError> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(RequestError::IdempotencyKeyLength(key.len()));
    }
    if !key.bytes().all(|byte| (0x20..=0x7e).contains(&byte)) {
        return Err(RequestError::IdempotencyKeyCharacters);
    }
    Ok(())
}

/// Checks a `reference`: 1 to 200 bytes of text without control characters (it reaches logs,
/// the dashboard and both stores).
pub fn check_reference(reference: &str) -> Result<(), RequestError> {
    if reference.is_empty() || reference.len() > REFERENCE_LEN_MAX {
        return Err(RequestError::ReferenceLength(reference.len()));
    }
    if reference.chars().any(char::is_control) {
        return Err(RequestError::ReferenceCharacters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::WithdrawalState::{self, *};
    use super::*;

    /// Every pair of states, and whether the move is allowed: the whole table, so a new edge
    /// is a deliberate change here.
    #[test]
    fn transitions_are_exactly_the_table() {
        let allowed = [
            (Approval, Pending),
            (Approval, Failed),
            (Approval, Canceled),
            (Pending, Processing),
            (Pending, Canceled),
            (Pending, Failed),
            (Processing, Broadcast),
            (Processing, Pending),
            (Processing, Failed),
            (Processing, ManualReview),
            (Broadcast, Confirming),
            (Broadcast, Completed),
            (Broadcast, Processing),
            (Broadcast, Failed),
            (Broadcast, ManualReview),
            (Confirming, Completed),
            (Confirming, Broadcast),
            (Confirming, ManualReview),
            (ManualReview, Completed),
            (ManualReview, Failed),
            (ManualReview, Processing),
        ];
        for &from in WithdrawalState::ALL {
            for &to in WithdrawalState::ALL {
                assert_eq!(
                    from.can_transition(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn the_ends_are_final_and_only_pending_is_unsigned() {
        for &state in WithdrawalState::ALL {
            if state.is_final() {
                assert!(
                    WithdrawalState::ALL
                        .iter()
                        .all(|&to| !state.can_transition(to)),
                    "{state} is final"
                );
            }
            // Cancel is only possible where nothing may have been signed.
            assert_eq!(
                state.can_transition(Canceled),
                !state.may_be_signed() && state != Canceled,
                "{state}"
            );
        }
        // A reorg moves back, never forward: from confirming, the only way other than the
        // ends is back to broadcast.
        assert!(Confirming.can_transition(Broadcast));
        assert!(!Confirming.can_transition(Processing));
        assert_eq!("manual_review".parse::<WithdrawalState>(), Ok(ManualReview));
        assert!("done".parse::<WithdrawalState>().is_err());
    }

    #[test]
    fn keys_and_references() {
        assert!(check_idempotency_key("a").is_ok());
        assert!(check_idempotency_key("order 42/x~").is_ok());
        assert!(check_idempotency_key(&"k".repeat(100)).is_ok());
        for (bad, expected) in [
            ("", RequestError::IdempotencyKeyLength(0)),
            (&*"k".repeat(101), RequestError::IdempotencyKeyLength(101)),
            ("a\tb", RequestError::IdempotencyKeyCharacters),
            ("a\0b", RequestError::IdempotencyKeyCharacters),
            ("é", RequestError::IdempotencyKeyCharacters),
        ] {
            assert_eq!(check_idempotency_key(bad), Err(expected), "{bad:?}");
        }
        assert!(check_reference("user:7/withdrawal:99").is_ok());
        assert!(check_reference("ünïcode ok").is_ok());
        assert_eq!(check_reference(""), Err(RequestError::ReferenceLength(0)));
        assert_eq!(
            check_reference("a\nb"),
            Err(RequestError::ReferenceCharacters)
        );
        assert_eq!(
            check_reference(&"r".repeat(201)),
            Err(RequestError::ReferenceLength(201))
        );
    }
}
