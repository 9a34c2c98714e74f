//! The attempt death rule of DESIGN.md §2.3 for TRON. A transaction can only enter a block
//! whose time is at most its expiration, and solidified blocks are final; so once the
//! solidified head's time is past the expiration and the solidified chain does not hold the
//! transaction, it can never land, and a new attempt (new raw data) may be made. Until then
//! the only thing allowed is broadcasting the very same bytes again.

/// What may be done about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFate {
    /// It is in a solidified block: nothing more to do (its receipt says whether it paid).
    Landed,
    /// It may still land: only the same bytes may be broadcast again.
    MayLand,
    /// It cannot land any more: a new attempt is allowed.
    Dead,
}

/// The fate of an attempt whose raw data expires at `expiration` (ms), given whether the
/// solidified chain holds it and the solidified head's block time (ms).
pub fn attempt_fate(
    in_solidified_chain: bool,
    expiration: i64,
    solidified_head_time: i64,
) -> AttemptFate {
    if in_solidified_chain {
        AttemptFate::Landed
    } else if solidified_head_time > expiration {
        AttemptFate::Dead
    } else {
        AttemptFate::MayLand
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_only_when_absent_from_a_solidified_chain_past_the_expiration() {
        let expiration = 1_900_000_060_000;
        let cases = [
            (true, expiration - 1, AttemptFate::Landed),
            (true, expiration + 10_000, AttemptFate::Landed),
            (false, expiration - 3_000, AttemptFate::MayLand),
            // A block at exactly the expiration can still hold it.
            (false, expiration, AttemptFate::MayLand),
            (false, expiration + 1, AttemptFate::Dead),
        ];
        for (found, head_time, fate) in cases {
            assert_eq!(
                attempt_fate(found, expiration, head_time),
                fate,
                "{found} {head_time}"
            );
        }
    }
}
