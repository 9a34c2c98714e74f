//! Payout attempts and output reservations on both stores: one live attempt per payout until
//! it is proved dead; a replacement must conflict with what it replaces; an output is
//! reserved for one payout only, also when many processes race for it; bad input changes
//! nothing.

use chrono::{DateTime, TimeZone, Utc};
use domain::Chain;
use store::{Attempt, AttemptNew, AttemptState, Outpoint, Store, StoreError};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn out(txid: &str, vout: u32) -> Outpoint {
    Outpoint {
        txid: format!("{txid:0>64}"),
        vout,
    }
}

fn attempt<'a>(
    chain: Chain,
    payout: &'a str,
    txid: &'a str,
    raw: &'a [u8],
    inputs: &'a [Outpoint],
) -> AttemptNew<'a> {
    AttemptNew {
        chain,
        payout,
        sender: "hot",
        txid,
        raw,
        expires_at: None,
        inputs,
        members: &[],
        replaces: None,
        now: at(0),
    }
}

fn states(attempts: &[Attempt]) -> Vec<(&str, AttemptState)> {
    attempts
        .iter()
        .map(|attempt| (attempt.txid.as_str(), attempt.state))
        .collect()
}

/// A fee bump of `replaces` in payout batch-1.
fn replacement<'a>(txid: &'a str, replaces: &'a str, inputs: &'a [Outpoint]) -> AttemptNew<'a> {
    AttemptNew {
        replaces: Some(replaces),
        now: at(30),
        ..attempt(Chain::Bitcoin, "batch-1", txid, txid.as_bytes(), inputs)
    }
}

async fn reserved(store: &Store) -> Vec<(Outpoint, String)> {
    store.utxo_reserved(Chain::Bitcoin).await.unwrap()
}

async fn one_live_attempt_per_payout_until_it_is_proved_dead(db: &TestDb) {
    let store = db.store().await;
    let tron = |txid: &'static str, raw: &'static [u8]| AttemptNew {
        sender: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7",
        expires_at: Some(1_900_000_060_000),
        ..attempt(Chain::Tron, "w-1", txid, raw, &[])
    };
    store.attempt_store(&tron("a1", b"first")).await.unwrap();
    // A caller that lost the answer stores the same attempt again: nothing changes.
    store.attempt_store(&tron("a1", b"first")).await.unwrap();
    let live = store.attempts_live(Chain::Tron, None).await.unwrap();
    assert_eq!(states(&live), [("a1", AttemptState::Live)]);
    assert_eq!(live[0].raw, b"first");
    assert_eq!(live[0].expires_at, Some(1_900_000_060_000));
    assert_eq!(live[0].payout, "w-1");
    assert_eq!(live[0].created_at, at(0));
    // New raw data for the same payout while the first may still land: refused.
    let error = store
        .attempt_store(&tron("a2", b"second"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Conflict(ref m) if m.contains("a1")),
        "{error}"
    );
    // The same txid with other bytes, or for another payout, is not the same attempt.
    assert!(matches!(
        store.attempt_store(&tron("a1", b"other")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .attempt_store(&AttemptNew {
                payout: "w-2",
                ..tron("a1", b"first")
            })
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A replacement needs outputs to conflict on: TRON has none.
    assert!(matches!(
        store
            .attempt_store(&AttemptNew {
                replaces: Some("a1"),
                ..tron("a2", b"second")
            })
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.attempts_of(Chain::Tron, "w-1").await.unwrap().len(),
        1
    );
    // Other chains and other senders do not see it.
    assert!(
        store
            .attempts_live(Chain::Bitcoin, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .attempts_live(Chain::Tron, Some("other"))
            .await
            .unwrap()
            .is_empty()
    );

    // Proved dead: a new attempt may be made, once.
    store.attempt_dead(Chain::Tron, "a1", at(5)).await.unwrap();
    assert!(matches!(
        store.attempt_dead(Chain::Tron, "a1", at(5)).await,
        Err(StoreError::Stale(_))
    ));
    assert!(matches!(
        store.attempt_landed(Chain::Tron, "a1", at(5)).await,
        Err(StoreError::Stale(_))
    ));
    store.attempt_store(&tron("a2", b"second")).await.unwrap();
    assert!(matches!(
        store.attempt_store(&tron("a3", b"third")).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .attempt_landed(Chain::Tron, "a2", at(9))
        .await
        .unwrap();
    // Paid: no further attempt, ever.
    assert!(matches!(
        store.attempt_store(&tron("a3", b"third")).await,
        Err(StoreError::Conflict(ref m)) if m.contains("landed")
    ));
    assert!(matches!(
        store.attempt_dead(Chain::Tron, "a2", at(9)).await,
        Err(StoreError::Stale(_))
    ));
    assert!(matches!(
        store.attempt_dead(Chain::Tron, "unknown", at(9)).await,
        Err(StoreError::Stale(_))
    ));
    assert_eq!(
        states(&store.attempts_of(Chain::Tron, "w-1").await.unwrap()),
        [("a1", AttemptState::Dead), ("a2", AttemptState::Landed)]
    );
    assert!(
        store
            .attempts_live(Chain::Tron, None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn outputs_are_reserved_for_one_payout_and_replacements_conflict(db: &TestDb) {
    let store = db.store().await;
    let (o1, o2, o3, o4, o5) = (
        out("1", 0),
        out("1", 1),
        out("2", 0),
        out("4", 0),
        out("5", 3),
    );
    let first = [o1.clone(), o2.clone()];
    store
        .attempt_store(&attempt(Chain::Bitcoin, "batch-1", "t1", b"t1", &first))
        .await
        .unwrap();
    // Another payout wanting o2: refused, and its other input is not reserved either.
    let overlapping = [o3.clone(), o2.clone()];
    let error = store
        .attempt_store(&attempt(
            Chain::Bitcoin,
            "batch-2",
            "t2",
            b"t2",
            &overlapping,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Conflict(ref m) if m.contains("batch-1") && m.contains(&o2.to_string())),
        "{error}"
    );
    assert!(
        store
            .attempts_of(Chain::Bitcoin, "batch-2")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(reserved(&store).await.len(), 2);
    let second = [o3.clone()];
    store
        .attempt_store(&attempt(Chain::Bitcoin, "batch-2", "t2", b"t2", &second))
        .await
        .unwrap();
    assert_eq!(
        reserved(&store).await,
        [
            (o1.clone(), "batch-1".to_string()),
            (o2.clone(), "batch-1".to_string()),
            (o3.clone(), "batch-2".to_string()),
        ]
    );

    // A fee bump of batch-1: it must name a live attempt of the payout and spend one of its
    // outputs, so that at most one of the two can confirm.
    let bump = [o1.clone(), o2.clone(), o5.clone()];
    let elsewhere = [o4.clone()];
    assert!(matches!(
        store.attempt_store(&replacement("r0", "t1", &elsewhere)).await,
        Err(StoreError::Stale(ref m)) if m.contains("both could confirm")
    ));
    assert!(matches!(
        store.attempt_store(&replacement("r1", "t2", &bump)).await,
        Err(StoreError::Stale(_))
    ));
    assert!(matches!(
        store
            .attempt_store(&replacement("r1", "nothing", &bump))
            .await,
        Err(StoreError::Stale(_))
    ));
    // Another payout's output in a bump: refused like any other attempt.
    let stealing = [o1.clone(), o3.clone()];
    assert!(matches!(
        store
            .attempt_store(&replacement("r1", "t1", &stealing))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(reserved(&store).await.len(), 3, "nothing written");
    store
        .attempt_store(&replacement("r1", "t1", &bump))
        .await
        .unwrap();
    let live = store
        .attempts_live(Chain::Bitcoin, Some("hot"))
        .await
        .unwrap();
    assert_eq!(
        states(&live),
        [
            ("t1", AttemptState::Live),
            ("t2", AttemptState::Live),
            ("r1", AttemptState::Live)
        ]
    );
    assert_eq!(live[2].inputs, [o1.clone(), o2.clone(), o5.clone()]);
    assert_eq!(live[2].replaces.as_deref(), Some("t1"));
    // The original confirms: the bump is replaced, and the output only it spent is free.
    store
        .attempt_landed(Chain::Bitcoin, "t1", at(60))
        .await
        .unwrap();
    assert_eq!(
        states(&store.attempts_of(Chain::Bitcoin, "batch-1").await.unwrap()),
        [("t1", AttemptState::Landed), ("r1", AttemptState::Replaced)]
    );
    assert!(
        !reserved(&store)
            .await
            .iter()
            .any(|(outpoint, _)| *outpoint == o5),
        "o5 released"
    );
    // batch-2's input was spent elsewhere: dead, and its output is released.
    store
        .attempt_dead(Chain::Bitcoin, "t2", at(61))
        .await
        .unwrap();
    assert_eq!(
        reserved(&store).await,
        [
            (o1.clone(), "batch-1".to_string()),
            (o2.clone(), "batch-1".to_string()),
        ]
    );
    // batch-2 may now be paid again, from other outputs.
    let again = [o4.clone()];
    store
        .attempt_store(&attempt(Chain::Bitcoin, "batch-2", "t3", b"t3", &again))
        .await
        .unwrap();
}

async fn racing_processes_never_share_an_output(db: &TestDb) {
    // Each task its own connection pool: as separate processes would be.
    let shared = out("aa", 7);
    let mut tasks = Vec::new();
    for payout in 0..12 {
        let store = db.store().await;
        let inputs = vec![out(&format!("b{payout}"), 0), shared.clone()];
        tasks.push(tokio::spawn(async move {
            let payout = format!("p{payout}");
            let txid = format!("t-{payout}");
            store
                .attempt_store(&attempt(Chain::Bitcoin, &payout, &txid, b"raw", &inputs))
                .await
        }));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => stored += 1,
            Err(StoreError::Conflict(_)) => {}
            // A Postgres deadlock between two racing inserts is transient: the caller retries.
            Err(error) => assert!(error.is_transient(), "{error}"),
        }
    }
    assert_eq!(stored, 1, "exactly one payout holds the shared output");
    let store = db.store().await;
    let reserved = reserved(&store).await;
    assert_eq!(reserved.len(), 2, "{reserved:?}");
    let winner = &reserved.iter().find(|(o, _)| *o == shared).unwrap().1;
    assert!(reserved.iter().all(|(_, payout)| payout == winner));

    // Many attempts of one payout at once: one is stored.
    let mut tasks = Vec::new();
    for n in 0..12 {
        let store = db.store().await;
        tasks.push(tokio::spawn(async move {
            let txid = format!("w-{n}");
            store
                .attempt_store(&AttemptNew {
                    expires_at: Some(1),
                    ..attempt(Chain::Tron, "withdrawal-9", &txid, txid.as_bytes(), &[])
                })
                .await
        }));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => stored += 1,
            Err(error) => assert!(matches!(error, StoreError::Conflict(_)), "{error}"),
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(
        store
            .attempts_of(Chain::Tron, "withdrawal-9")
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn bad_attempts_change_nothing(db: &TestDb) {
    let store = db.store().await;
    let o1 = out("1", 0);
    let twice = [o1.clone(), o1.clone()];
    let many: Vec<Outpoint> = (0..=store::ATTEMPT_INPUTS_MAX as u32)
        .map(|vout| out("9", vout))
        .collect();
    let long = "x".repeat(201);
    let big = vec![1u8; store::RAW_TX_BYTES_MAX + 1];
    let bad_txid = [Outpoint {
        txid: String::new(),
        vout: 0,
    }];
    let base = attempt(Chain::Bitcoin, "p", "t", b"raw", &[]);
    let cases: Vec<(&str, AttemptNew<'_>)> = vec![
        (
            "empty payout",
            AttemptNew {
                payout: "",
                ..base.clone()
            },
        ),
        (
            "long payout",
            AttemptNew {
                payout: &long,
                ..base.clone()
            },
        ),
        (
            "empty sender",
            AttemptNew {
                sender: "",
                ..base.clone()
            },
        ),
        (
            "empty txid",
            AttemptNew {
                txid: "",
                ..base.clone()
            },
        ),
        (
            "long txid",
            AttemptNew {
                txid: &long,
                ..base.clone()
            },
        ),
        (
            "no bytes",
            AttemptNew {
                raw: b"",
                ..base.clone()
            },
        ),
        (
            "too many bytes",
            AttemptNew {
                raw: &big,
                ..base.clone()
            },
        ),
        (
            "negative expiration",
            AttemptNew {
                expires_at: Some(-1),
                ..base.clone()
            },
        ),
        (
            "replaces itself",
            AttemptNew {
                replaces: Some("t"),
                inputs: &twice[..1],
                ..base.clone()
            },
        ),
        (
            "input twice",
            AttemptNew {
                inputs: &twice,
                ..base.clone()
            },
        ),
        (
            "too many inputs",
            AttemptNew {
                inputs: &many,
                ..base.clone()
            },
        ),
        (
            "empty input txid",
            AttemptNew {
                inputs: &bad_txid,
                ..base.clone()
            },
        ),
    ];
    for (what, new) in cases {
        assert!(
            matches!(store.attempt_store(&new).await, Err(StoreError::Invalid(_))),
            "{what}"
        );
    }
    assert!(matches!(
        store.attempts_of(Chain::Bitcoin, "").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(
        store
            .attempts_live(Chain::Bitcoin, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(reserved(&store).await.is_empty());
}

async fn a_withdrawal_is_paid_by_one_payout_at_a_time(db: &TestDb) {
    let store = db.store().await;
    let ids = |list: &[&str]| list.iter().map(|id| id.to_string()).collect::<Vec<_>>();
    let (first, overlapping, third) = (ids(&["w1", "w2"]), ids(&["w3", "w2"]), ids(&["w3"]));
    let (o1, o2, o3) = ([out("1", 0)], [out("2", 0)], [out("3", 0)]);
    let batch = |payout: &'static str, txid: &'static str, inputs, members| AttemptNew {
        members,
        ..attempt(Chain::Bitcoin, payout, txid, txid.as_bytes(), inputs)
    };
    store
        .attempt_store(&batch("batch-1", "t1", &o1, &first))
        .await
        .unwrap();
    // A batch formed otherwise (after a restart) that holds w2 too: refused, nothing written.
    let error = store
        .attempt_store(&batch("batch-2", "t2", &o2, &overlapping))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Claimed { ref member, ref payout } if member == "w2" && payout == "batch-1"),
        "{error}"
    );
    assert!(
        store
            .attempts_of(Chain::Bitcoin, "batch-2")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        reserved(&store).await.len(),
        1,
        "its output is not reserved"
    );
    let holder = |member: &'static str| {
        let store = store.clone();
        async move {
            store
                .payout_of_member(Chain::Bitcoin, member)
                .await
                .unwrap()
        }
    };
    assert_eq!(holder("w2").await.as_deref(), Some("batch-1"));
    assert_eq!(holder("w3").await, None, "refused: w3 is held by nothing");
    store
        .attempt_store(&batch("batch-2", "t2", &o2, &third))
        .await
        .unwrap();
    assert_eq!(holder("w3").await.as_deref(), Some("batch-2"));
    // batch-1's transaction can never land: its withdrawals may be paid by another payout.
    store
        .attempt_dead(Chain::Bitcoin, "t1", at(9))
        .await
        .unwrap();
    // Dead: its withdrawals are held by nothing (a batcher may batch them again).
    assert_eq!(holder("w1").await, None);
    assert_eq!(holder("w2").await, None);
    store
        .attempt_store(&batch("batch-3", "t3", &o3, &first))
        .await
        .unwrap();
    // Landed is for good: w3 stays with batch-2.
    store
        .attempt_landed(Chain::Bitcoin, "t2", at(10))
        .await
        .unwrap();
    assert_eq!(holder("w3").await.as_deref(), Some("batch-2"));
    assert_eq!(holder("w1").await.as_deref(), Some("batch-3"));
    assert!(matches!(
        store
            .attempt_store(&batch("batch-4", "t4", &o1, &third))
            .await,
        Err(StoreError::Claimed { .. })
    ));
    let twice = ids(&["w9", "w9"]);
    assert!(matches!(
        store
            .attempt_store(&batch("batch-5", "t5", &o1, &twice))
            .await,
        Err(StoreError::Invalid(_))
    ));
}

/// A replacement must conflict with every live attempt of its payout, not only with the one
/// it names: after A (o1) was bumped by B (o1, o2), a C that shares o2 with B but nothing
/// with A could confirm beside A, and pay the batch twice.
async fn a_replacement_conflicts_with_every_live_attempt(db: &TestDb) {
    let store = db.store().await;
    let (o1, o2, o3) = (out("1", 0), out("2", 0), out("3", 0));
    let a_inputs = [o1.clone()];
    store
        .attempt_store(&attempt(Chain::Bitcoin, "batch-1", "A", b"A", &a_inputs))
        .await
        .unwrap();
    let b_inputs = [o1.clone(), o2.clone()];
    store
        .attempt_store(&replacement("B", "A", &b_inputs))
        .await
        .unwrap();
    let c_inputs = [o2.clone(), o3.clone()];
    let error = store
        .attempt_store(&replacement("C", "B", &c_inputs))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Stale(message) if message.contains(" A")),
        "{error}"
    );
    let attempts = store.attempts_of(Chain::Bitcoin, "batch-1").await.unwrap();
    assert_eq!(
        states(&attempts),
        [("A", AttemptState::Live), ("B", AttemptState::Live)],
        "nothing written"
    );
    assert!(
        !reserved(&store)
            .await
            .iter()
            .any(|(outpoint, _)| *outpoint == o3),
        "o3 not reserved"
    );
    // Spending an output of each live attempt conflicts with both: stored.
    let d_inputs = [o1.clone(), o2.clone(), o3.clone()];
    store
        .attempt_store(&replacement("D", "B", &d_inputs))
        .await
        .unwrap();
}

/// Live attempts come least recently checked first: attempts that stay undecided round after
/// round go to the back, so a bounded reconcile reaches newer ones too.
async fn undecided_attempts_go_to_the_back(db: &TestDb) {
    let store = db.store().await;
    for (seconds, payout) in [(0, "w-1"), (1, "w-2"), (2, "w-3")] {
        store
            .attempt_store(&AttemptNew {
                now: at(seconds),
                ..attempt(Chain::Tron, payout, payout, payout.as_bytes(), &[])
            })
            .await
            .unwrap();
    }
    let order = |store: Store| async move {
        store
            .attempts_live(Chain::Tron, None)
            .await
            .unwrap()
            .into_iter()
            .map(|attempt| attempt.payout)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        order(store.clone()).await,
        ["w-1", "w-2", "w-3"],
        "oldest first"
    );
    store
        .attempt_checked(Chain::Tron, "w-1", at(10))
        .await
        .unwrap();
    store
        .attempt_checked(Chain::Tron, "w-2", at(11))
        .await
        .unwrap();
    assert_eq!(
        order(store.clone()).await,
        ["w-3", "w-1", "w-2"],
        "never checked first, then least recently checked"
    );
    store
        .attempt_checked(Chain::Tron, "w-3", at(12))
        .await
        .unwrap();
    store
        .attempt_checked(Chain::Tron, "w-1", at(13))
        .await
        .unwrap();
    assert_eq!(order(store.clone()).await, ["w-2", "w-3", "w-1"]);
    assert!(matches!(
        store.attempt_checked(Chain::Tron, "", at(14)).await,
        Err(StoreError::Invalid(_))
    ));
}

testkit::on_both_stores!(
    db:
    a_replacement_conflicts_with_every_live_attempt,
    undecided_attempts_go_to_the_back,
    a_withdrawal_is_paid_by_one_payout_at_a_time,
    one_live_attempt_per_payout_until_it_is_proved_dead,
    outputs_are_reserved_for_one_payout_and_replacements_conflict,
    racing_processes_never_share_an_output,
    bad_attempts_change_nothing,
);
