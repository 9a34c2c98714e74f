//! The worker's vocabulary and state machines: kinds, reported status, desired state, and
//! what an operator's start / stop / restart means for each.
//!
//! A worker reports its `status`; an operator writes its `desired_state`. The two are kept
//! apart on purpose (DESIGN.md §2.6): controls are declarations the worker reconciles towards,
//! so a lost message costs latency and never correctness. See `docs/worker-states.md`.

use std::fmt;
use std::str::FromStr;

use crate::limits::WORKER_ID_LEN_MAX;

string_enum!(
    /// What a worker does; with its chain it names the worker's job.
    WorkerKind, "worker kind", {
        Withdrawal => "withdrawal",
        Deposit => "deposit",
        Consolidation => "consolidation",
    }
);

string_enum!(
    /// What a worker reports about itself (and `lost`, which the reaper reports for it).
    WorkerStatus, "worker status", {
        Starting => "starting",
        Running => "running",
        Stopped => "stopped",
        Error => "error",
        Lost => "lost",
        Offline => "offline",
    }
);

string_enum!(
    /// What an operator wants a worker to do.
    DesiredState, "desired state", {
        Running => "running",
        Stopped => "stopped",
    }
);

string_enum!(
    /// An operator's command on a worker.
    ControlAction, "action", {
        Start => "start",
        Stop => "stop",
        Restart => "restart",
    }
);

impl WorkerStatus {
    /// Whether a worker may move from `self` to `to`. Registration of a new process is not a
    /// transition: it takes the row over from any status to `starting` under a new incarnation.
    pub fn can_transition(self, to: WorkerStatus) -> bool {
        use WorkerStatus::*;
        match (self, to) {
            (from, to) if from == to => false,
            // Only registration (a new process) leaves `offline`.
            (Offline, _) => false,
            // `lost` is written by the reaper, never by the worker itself.
            (_, Lost) => true,
            // A worker that was thought lost and answers again reports what it really is.
            (Lost, Running | Stopped | Error | Offline | Starting) => true,
            (Starting, Running | Stopped | Error | Offline) => true,
            (Running, Stopped | Error | Offline | Starting) => true,
            (Stopped, Running | Error | Offline | Starting) => true,
            (Error, Running | Stopped | Offline | Starting) => true,
            _ => false,
        }
    }

    /// Whether a process is believed to be behind this row.
    pub fn is_alive(self) -> bool {
        !matches!(self, WorkerStatus::Lost | WorkerStatus::Offline)
    }
}

/// What an accepted control action writes to the worker's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlDecision {
    pub desired_state: DesiredState,
    /// A restart bumps the generation; the worker drains and rebuilds when it sees it.
    pub bump_generation: bool,
}

/// Why a control action would mean nothing, said so the operator knows what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ControlRefusal(pub String);

impl ControlAction {
    /// Decides what `self` means for a worker that is desired `desired` and reports `status`.
    /// `restart_pending`: an earlier restart has not been applied yet (its generation is above
    /// the one the worker reports), so another would only restart it twice.
    pub fn decide(
        self,
        desired: DesiredState,
        status: WorkerStatus,
        restart_pending: bool,
    ) -> Result<ControlDecision, ControlRefusal> {
        match self {
            ControlAction::Start if desired == DesiredState::Running => Err(ControlRefusal(
                "worker is already desired running; use restart to rebuild it".into(),
            )),
            ControlAction::Start => Ok(ControlDecision {
                desired_state: DesiredState::Running,
                bump_generation: false,
            }),
            ControlAction::Stop if desired == DesiredState::Stopped => {
                Err(ControlRefusal("worker is already desired stopped".into()))
            }
            ControlAction::Stop => Ok(ControlDecision {
                desired_state: DesiredState::Stopped,
                bump_generation: false,
            }),
            ControlAction::Restart if !status.is_alive() => Err(ControlRefusal(format!(
                "worker is {status}: no process is there to restart; start its process (or its supervisor) first"
            ))),
            ControlAction::Restart if restart_pending => Err(ControlRefusal(
                "worker is restarting already; wait for it to come back".into(),
            )),
            ControlAction::Restart => Ok(ControlDecision {
                desired_state: DesiredState::Running,
                bump_generation: true,
            }),
        }
    }
}

/// A worker's stable identity, e.g. `tron-withdrawal-1`: 1 to 50 characters of lowercase
/// letters, digits, `-`, `_` and `.`, so it is safe in URLs, logs and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid worker id {got:?}: use 1 to {WORKER_ID_LEN_MAX} characters of a-z, 0-9, '-', '_' and '.'"
)]
pub struct WorkerIdError {
    pub got: String,
}

impl WorkerId {
    pub fn new(text: impl Into<String>) -> Result<Self, WorkerIdError> {
        let text = text.into();
        let valid = (1..=WORKER_ID_LEN_MAX).contains(&text.len())
            && text.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if valid {
            Ok(WorkerId(text))
        } else {
            Err(WorkerIdError {
                got: text.chars().take(60).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WorkerId {
    type Err = WorkerIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        WorkerId::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkerStatus::*;

    /// The whole transition table, written out so that a change to it is a visible decision.
    /// Rows are `from`, columns are `to` in the order of `WorkerStatus::ALL`.
    #[test]
    fn status_transition_table() {
        #[rustfmt::skip]
        let table: [(WorkerStatus, [bool; 6]); 6] = [
            //           starting running stopped error  lost   offline
            (Starting, [false,   true,   true,   true,  true,  true ]),
            (Running,  [true,    false,  true,   true,  true,  true ]),
            (Stopped,  [true,    true,   false,  true,  true,  true ]),
            (Error,    [true,    true,   true,   false, true,  true ]),
            (Lost,     [true,    true,   true,   true,  false, true ]),
            (Offline,  [false,   false,  false,  false, false, false]),
        ];
        for (from, row) in table {
            for (to, allowed) in WorkerStatus::ALL.iter().zip(row) {
                assert_eq!(from.can_transition(*to), allowed, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn control_action_table() {
        use ControlAction::*;
        use DesiredState as D;
        let go = |desired_state, bump_generation| {
            Ok(ControlDecision {
                desired_state,
                bump_generation,
            })
        };
        let cases = [
            (Start, D::Stopped, Stopped, go(D::Running, false)),
            (Start, D::Stopped, Offline, go(D::Running, false)),
            (Stop, D::Running, Running, go(D::Stopped, false)),
            (Stop, D::Running, Offline, go(D::Stopped, false)),
            (Stop, D::Running, Error, go(D::Stopped, false)),
            (Restart, D::Running, Running, go(D::Running, true)),
            (Restart, D::Stopped, Stopped, go(D::Running, true)),
            (Restart, D::Running, Error, go(D::Running, true)),
        ];
        for (action, desired, status, expected) in cases {
            assert_eq!(
                action.decide(desired, status, false),
                expected,
                "{action} when {desired}/{status}"
            );
        }
        let refused = [
            (Start, D::Running, Running),
            (Start, D::Running, Error),
            (Stop, D::Stopped, Stopped),
            (Stop, D::Stopped, Running),
            (Restart, D::Running, Offline),
            (Restart, D::Running, Lost),
        ];
        for (action, desired, status) in refused {
            assert!(
                action.decide(desired, status, false).is_err(),
                "{action} when {desired}/{status}"
            );
        }
        // A restart not applied yet: another is refused; stop and start still mean something.
        assert!(Restart.decide(D::Running, Running, true).is_err());
        assert!(Restart.decide(D::Running, Starting, true).is_err());
        assert_eq!(
            Stop.decide(D::Running, Running, true),
            go(D::Stopped, false)
        );
    }

    #[test]
    fn enums_round_trip_and_name_the_choices() {
        for kind in WorkerKind::ALL {
            assert_eq!(kind.as_str().parse::<WorkerKind>(), Ok(*kind));
        }
        for status in WorkerStatus::ALL {
            assert_eq!(status.as_str().parse::<WorkerStatus>(), Ok(*status));
        }
        let error = "payout".parse::<WorkerKind>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown worker kind \"payout\": expected one of withdrawal deposit consolidation"
        );
    }

    #[test]
    fn worker_ids_are_validated() {
        for good in ["tron-withdrawal-1", "a", "eth_deposit.2", &"x".repeat(50)] {
            assert!(WorkerId::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Tron",
            "a b",
            "a/b",
            "../x",
            &"x".repeat(51),
            "tron;drop",
        ] {
            assert!(WorkerId::new(bad).is_err(), "{bad}");
        }
    }
}
