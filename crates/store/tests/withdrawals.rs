//! The withdrawal table on both stores: idempotent creation with its job and audit entry in
//! one transaction, compare-and-set moves along the state table only, cancel only before
//! anything may be signed, listing and paging, and bad input that changes nothing; and what
//! `/metrics` reads of them: hot wallet balances, state ages, completion times; and four
//! eyes: approvals that release a held withdrawal once, rejections, and what is refused.

use chrono::{DateTime, TimeZone, Utc};
use domain::{Chain, JobState, Name, WithdrawalState};
use store::{
    AuditList, HotWalletBalance, JobList, Store, StoreError, WithdrawalCreate, WithdrawalCreated,
    WithdrawalDecision, WithdrawalList, WithdrawalScan, WithdrawalTransition,
};
use testkit::TestDb;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn request(key: &str, hash: char) -> WithdrawalCreate {
    WithdrawalCreate {
        idempotency_key: key.into(),
        request_hash: hash.to_string().repeat(64),
        reference: "user:7/w:1".into(),
        chain: Chain::Tron,
        asset: "USDT".into(),
        destination: "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into(),
        amount: "1500000".into(),
        actor: "token:1:backend".into(),
        job: Some((
            Name::new("tron.withdrawal").unwrap(),
            Name::new("withdrawal.pay").unwrap(),
        )),
        approval: false,
        limits: vec![],
        destination_rule: None,
        now: at(0),
    }
}

async fn jobs(store: &Store) -> Vec<store::JobRow> {
    store
        .job_list(&JobList {
            queue: Some(Name::new("tron.withdrawal").unwrap()),
            state: None,
            before_id: None,
            limit: 100,
        })
        .await
        .unwrap()
}

async fn created_with_its_job_once_per_key(db: &TestDb) {
    let store = db.store().await;
    let created = store.withdrawal_create(&request("k-1", 'a')).await.unwrap();
    let WithdrawalCreated::Created(row) = &created else {
        panic!("{created:?}");
    };
    assert_eq!(row.state, WithdrawalState::Pending);
    assert_eq!(row.amount, "1500000");
    assert_eq!(row.created_at, at(0));
    assert_eq!(row.payout_key(), format!("withdrawal:{}", row.id));
    let queued = jobs(&store).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].args, serde_json::json!({"withdrawal_id": row.id}));
    assert_eq!(queued[0].state, JobState::Available);
    // The same key and request again: the same withdrawal, and no second job.
    let again = store.withdrawal_create(&request("k-1", 'a')).await.unwrap();
    assert_eq!(again, WithdrawalCreated::Existing(row.clone()));
    assert_eq!(jobs(&store).await.len(), 1);
    // The same key with another request: refused, nothing changed.
    let error = store
        .withdrawal_create(&request("k-1", 'b'))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::KeyReused(key) if key == "k-1"),
        "{error}"
    );
    assert_eq!(jobs(&store).await.len(), 1);
    let audit = store
        .audit_list(&AuditList {
            target: Some(row.payout_key()),
            limit: 10,
            ..AuditList::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "withdrawal.create");
    assert_eq!(audit[0].actor, "token:1:backend");
}

async fn racing_creates_with_one_key_store_one(db: &TestDb) {
    let store = db.store().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.withdrawal_create(&request("race", 'c')).await
        }));
    }
    let mut created = 0;
    let mut ids = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            WithdrawalCreated::Created(row) => {
                created += 1;
                ids.push(row.id);
            }
            WithdrawalCreated::Existing(row) => ids.push(row.id),
        }
    }
    assert_eq!(created, 1);
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(jobs(&store).await.len(), 1);
}

async fn moves_follow_the_table_as_compare_and_set(db: &TestDb) {
    let store = db.store().await;
    let id = store
        .withdrawal_create(&request("k-2", 'a'))
        .await
        .unwrap()
        .row()
        .id;
    let take = WithdrawalTransition::new(
        id,
        WithdrawalState::Pending,
        WithdrawalState::Processing,
        "worker:tron-withdrawal-1",
        at(1),
    );
    store.withdrawal_transition(&take).await.unwrap();
    // A second payer taking it loses the compare-and-set.
    let error = store.withdrawal_transition(&take).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(message) if message.contains("is processing, not pending")),
        "{error}"
    );
    // Not in the table: refused before anything is read.
    let skip = WithdrawalTransition::new(
        id,
        WithdrawalState::Processing,
        WithdrawalState::Completed,
        "worker:x",
        at(2),
    );
    assert!(matches!(
        store.withdrawal_transition(&skip).await,
        Err(StoreError::Invalid(_))
    ));
    let mut sent = WithdrawalTransition::new(
        id,
        WithdrawalState::Processing,
        WithdrawalState::Broadcast,
        "worker:x",
        at(3),
    );
    sent.txid = Some("ab".repeat(32));
    let row = store.withdrawal_transition(&sent).await.unwrap();
    assert_eq!(row.txid.as_deref(), Some(&*"ab".repeat(32)));
    // Seen in a block, then a reorg takes it back to broadcast, keeping the txid.
    let mut seen = WithdrawalTransition::new(
        id,
        WithdrawalState::Broadcast,
        WithdrawalState::Confirming,
        "worker:x",
        at(4),
    );
    seen.block_height = Some(100);
    seen.confirmations = Some(1);
    store.withdrawal_transition(&seen).await.unwrap();
    let back = WithdrawalTransition::new(
        id,
        WithdrawalState::Confirming,
        WithdrawalState::Broadcast,
        "worker:x",
        at(5),
    );
    let row = store.withdrawal_transition(&back).await.unwrap();
    assert_eq!(row.state, WithdrawalState::Broadcast);
    assert!(row.txid.is_some());
    // An update in place (confirmations) writes no audit entry; moves do.
    let mut count = WithdrawalTransition::new(
        id,
        WithdrawalState::Broadcast,
        WithdrawalState::Broadcast,
        "worker:x",
        at(6),
    );
    count.confirmations = Some(0);
    store.withdrawal_transition(&count).await.unwrap();
    let mut done = WithdrawalTransition::new(
        id,
        WithdrawalState::Broadcast,
        WithdrawalState::Completed,
        "worker:x",
        at(7),
    );
    done.block_height = Some(101);
    done.confirmations = Some(20);
    done.fee = Some("345000".into());
    let row = store.withdrawal_transition(&done).await.unwrap();
    assert_eq!(
        (
            row.state,
            row.block_height,
            row.confirmations,
            row.fee.as_deref()
        ),
        (WithdrawalState::Completed, Some(101), 20, Some("345000"))
    );
    assert_eq!(row.updated_at, at(7));
    let audit = store
        .audit_list(&AuditList {
            target: Some(row.payout_key()),
            limit: 20,
            ..AuditList::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .rev()
        .map(|entry| entry.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "withdrawal.create",
            "withdrawal.processing",
            "withdrawal.broadcast",
            "withdrawal.confirming",
            "withdrawal.broadcast",
            "withdrawal.completed"
        ]
    );
    // A final state stays final.
    let reopen = WithdrawalTransition::new(
        id,
        WithdrawalState::Completed,
        WithdrawalState::Broadcast,
        "worker:x",
        at(8),
    );
    assert!(matches!(
        store.withdrawal_transition(&reopen).await,
        Err(StoreError::Invalid(_))
    ));
    let missing = WithdrawalTransition::new(
        id + 1000,
        WithdrawalState::Pending,
        WithdrawalState::Processing,
        "worker:x",
        at(8),
    );
    assert!(matches!(
        store.withdrawal_transition(&missing).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn cancel_only_before_anything_may_be_signed(db: &TestDb) {
    let store = db.store().await;
    let first = store.withdrawal_create(&request("c-1", 'a')).await.unwrap();
    let second = store.withdrawal_create(&request("c-2", 'b')).await.unwrap();
    let canceled = store
        .withdrawal_cancel(first.row().id, "token:1:backend", at(1))
        .await
        .unwrap();
    assert_eq!(canceled.state, WithdrawalState::Canceled);
    assert!(
        canceled
            .error
            .unwrap()
            .contains("canceled by token:1:backend")
    );
    let again = store
        .withdrawal_cancel(first.row().id, "token:1:backend", at(2))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("canceled already"), "{again}");
    store
        .withdrawal_transition(&WithdrawalTransition::new(
            second.row().id,
            WithdrawalState::Pending,
            WithdrawalState::Processing,
            "worker:x",
            at(2),
        ))
        .await
        .unwrap();
    let late = store
        .withdrawal_cancel(second.row().id, "token:1:backend", at(3))
        .await
        .unwrap_err();
    assert!(
        matches!(&late, StoreError::Conflict(message) if message.contains("may have been signed")),
        "{late}"
    );
    assert_eq!(
        store
            .withdrawal_get(second.row().id)
            .await
            .unwrap()
            .unwrap()
            .state,
        WithdrawalState::Processing
    );
    assert!(matches!(
        store
            .withdrawal_cancel(999_999, "token:1:backend", at(3))
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn lists_filter_and_page(db: &TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut create = request(&format!("l-{n}"), 'a');
        create.reference = format!("user:{}", n % 2);
        if n == 4 {
            create.chain = Chain::Ethereum;
            create.asset = "ETH".into();
            create.destination = "0x52908400098527886E0F7030069857D2E4169EE7".into();
        }
        ids.push(store.withdrawal_create(&create).await.unwrap().row().id);
    }
    let all = store
        .withdrawal_list(&WithdrawalList {
            limit: 100,
            ..WithdrawalList::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|row| row.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    let page = store
        .withdrawal_list(&WithdrawalList {
            before_id: Some(ids[3]),
            limit: 2,
            ..WithdrawalList::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|row| row.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    let of_user = store
        .withdrawal_list(&WithdrawalList {
            reference: Some("user:1".into()),
            chain: Some(Chain::Tron),
            state: Some(WithdrawalState::Pending),
            limit: 100,
            ..WithdrawalList::default()
        })
        .await
        .unwrap();
    assert_eq!(
        of_user.iter().map(|row| row.id).collect::<Vec<_>>(),
        [ids[3], ids[1]]
    );
    let scan = store
        .withdrawal_scan(&WithdrawalScan {
            chain: Chain::Tron,
            states: vec![WithdrawalState::Pending, WithdrawalState::Broadcast],
            after_id: ids[0],
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        scan.iter().map(|row| row.id).collect::<Vec<_>>(),
        [ids[1], ids[2]]
    );
    let (counts, oldest) = store.withdrawal_counts().await.unwrap();
    assert!(counts.contains(&(Chain::Tron, WithdrawalState::Pending, 4)));
    assert!(counts.contains(&(Chain::Ethereum, WithdrawalState::Pending, 1)));
    assert_eq!(oldest, Some(at(0)));
}

async fn bad_requests_change_nothing(db: &TestDb) {
    let store = db.store().await;
    type Change = Box<dyn Fn(&mut WithdrawalCreate)>;
    let cases: Vec<(&str, Change)> = vec![
        ("empty key", Box::new(|c| c.idempotency_key.clear())),
        (
            "control in key",
            Box::new(|c| c.idempotency_key = "a\nb".into()),
        ),
        (
            "long key",
            Box::new(|c| c.idempotency_key = "k".repeat(101)),
        ),
        (
            "NUL in reference",
            Box::new(|c| c.reference = "a\0b".into()),
        ),
        ("leading zero", Box::new(|c| c.amount = "01".into())),
        ("sign", Box::new(|c| c.amount = "-1".into())),
        ("decimals", Box::new(|c| c.amount = "1.5".into())),
        ("too wide", Box::new(|c| c.amount = "9".repeat(79))),
        ("hash", Box::new(|c| c.request_hash = "zz".into())),
    ];
    for (what, change) in cases {
        let mut create = request("bad", 'a');
        change(&mut create);
        let error = store.withdrawal_create(&create).await.unwrap_err();
        assert!(matches!(error, StoreError::Invalid(_)), "{what}: {error}");
    }
    assert!(
        store
            .withdrawal_list(&WithdrawalList {
                limit: 10,
                ..WithdrawalList::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert!(jobs(&store).await.is_empty());
}

/// The hot wallet's balance: the last reading wins, per chain and asset; malformed readings
/// are refused and change nothing.
async fn hot_wallet_balances_keep_the_last_reading(db: &TestDb) {
    let store = db.store().await;
    let reading = |units: &str, seconds| HotWalletBalance {
        chain: Chain::Tron,
        asset: "USDT".into(),
        address: "TWer2Ygk5TEheHp3TPuYeqxmB6SsGZmaL6".into(),
        units: units.into(),
        checked_at: at(seconds),
    };
    store.hot_wallet_set(&reading("1000000", 1)).await.unwrap();
    store.hot_wallet_set(&reading("999", 2)).await.unwrap();
    let mut trx = reading("5", 3);
    trx.asset = "TRX".into();
    store.hot_wallet_set(&trx).await.unwrap();
    // Up to 2^256 - 1: 78 digits.
    let mut eth = reading(&"9".repeat(78), 4);
    eth.chain = Chain::Ethereum;
    eth.asset = "ETH".into();
    store.hot_wallet_set(&eth).await.unwrap();
    for bad in ["", "12a", "-1", "1.5", &"9".repeat(79)] {
        let error = store.hot_wallet_set(&reading(bad, 9)).await.unwrap_err();
        assert!(matches!(error, StoreError::Invalid(_)), "{bad:?}: {error}");
    }
    let mut nameless = reading("1", 9);
    nameless.asset = String::new();
    assert!(store.hot_wallet_set(&nameless).await.is_err());
    let listed = store.hot_wallet_list().await.unwrap();
    let seen: Vec<(Chain, &str, &str, DateTime<Utc>)> = listed
        .iter()
        .map(|row| {
            (
                row.chain,
                row.asset.as_str(),
                row.units.as_str(),
                row.checked_at,
            )
        })
        .collect();
    let nines = "9".repeat(78);
    assert_eq!(
        seen,
        vec![
            (Chain::Ethereum, "ETH", nines.as_str(), at(4)),
            (Chain::Tron, "TRX", "5", at(3)),
            (Chain::Tron, "USDT", "999", at(2)),
        ]
    );
}

/// Where the withdrawals' time goes: when the longest-waiting one of each unfinished state
/// got there, and request to `completed` of those completed since a time.
async fn state_ages_and_completion_times(db: &TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for (n, seconds) in [(1, 0), (2, 5), (3, 10)] {
        let mut create = request(&format!("t-{n}"), 'a');
        create.now = at(seconds);
        ids.push(store.withdrawal_create(&create).await.unwrap().row().id);
    }
    let path = [
        WithdrawalState::Pending,
        WithdrawalState::Processing,
        WithdrawalState::Broadcast,
        WithdrawalState::Completed,
    ];
    // The first goes all the way at 20 s, 30 s, 42 s; the second to broadcast at 25 s.
    for (id, moves) in [(ids[0], vec![20, 30, 42]), (ids[1], vec![22, 25])] {
        for (step, seconds) in moves.into_iter().enumerate() {
            store
                .withdrawal_transition(&WithdrawalTransition::new(
                    id,
                    path[step],
                    path[step + 1],
                    "worker:tron-withdrawal-1",
                    at(seconds),
                ))
                .await
                .unwrap();
        }
    }
    let mut oldest = store.withdrawal_state_oldest().await.unwrap();
    oldest.sort_by_key(|(_, state, _)| state.as_str());
    assert_eq!(
        oldest,
        vec![
            (Chain::Tron, WithdrawalState::Broadcast, at(25)),
            (Chain::Tron, WithdrawalState::Pending, at(10)),
        ]
    );
    assert_eq!(
        store.withdrawal_completion_times(at(40)).await.unwrap(),
        vec![(Chain::Tron, 42_000)]
    );
    assert!(
        store
            .withdrawal_completion_times(at(43))
            .await
            .unwrap()
            .is_empty()
    );
    // No payout transactions yet; rebroadcasts add up per chain.
    assert!(store.payout_transaction_counts().await.unwrap().is_empty());
    store.payout_rebroadcasts_add(Chain::Tron, 2).await.unwrap();
    store.payout_rebroadcasts_add(Chain::Tron, 3).await.unwrap();
    assert_eq!(
        store.payout_transaction_counts().await.unwrap(),
        vec![store::PayoutCounts {
            chain: Chain::Tron,
            transactions: 0,
            replacements: 0,
            rebroadcasts: 5,
        }]
    );
}

fn decision(id: i64, token_id: i64, approve: bool, reason: Option<&str>) -> WithdrawalDecision {
    WithdrawalDecision {
        id,
        token_id,
        actor: format!("token:{token_id}:operator-{token_id}"),
        approve,
        reason: reason.map(str::to_string),
        required: 2,
        job: Some((
            Name::new("tron.withdrawal").unwrap(),
            Name::new("withdrawal.pay").unwrap(),
        )),
        now: at(100),
    }
}

/// Four eyes: held in `approval` with no job; never decided by its creator's token; the
/// same token twice counts once; the second distinct approval releases it to `pending` and
/// queues its job in the same transaction; a rejection fails it with the reason; bad
/// decisions change nothing; a held one can still be canceled.
async fn approvals_release_or_reject_held_withdrawals(db: &TestDb) {
    let store = db.store().await;
    let mut create = request("held-1", 'a');
    create.approval = true;
    let held = store
        .withdrawal_create(&create)
        .await
        .unwrap()
        .row()
        .clone();
    assert_eq!(held.state, WithdrawalState::Approval);
    assert!(jobs(&store).await.is_empty(), "nothing queued while held");
    // The creator is token 1 (`token:1:backend`).
    let error = store
        .withdrawal_decide(&decision(held.id, 1, true, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(m) if m.contains("creator")),
        "{error}"
    );
    let first = store
        .withdrawal_decide(&decision(held.id, 2, true, None))
        .await
        .unwrap();
    assert_eq!(first.row.state, WithdrawalState::Approval);
    assert_eq!(first.approvals.len(), 1);
    let again = store
        .withdrawal_decide(&decision(held.id, 2, true, None))
        .await
        .unwrap();
    assert!(again.repeated);
    assert_eq!(
        (again.row.state, again.approvals.len()),
        (WithdrawalState::Approval, 1)
    );
    // Token 2 cannot change its mind into a rejection either.
    assert!(matches!(
        store
            .withdrawal_decide(&decision(held.id, 2, false, Some("no")))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(jobs(&store).await.is_empty());
    let second = store
        .withdrawal_decide(&decision(held.id, 3, true, None))
        .await
        .unwrap();
    assert_eq!(second.row.state, WithdrawalState::Pending);
    assert_eq!(second.approvals.len(), 2);
    let queued = jobs(&store).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].unique_key.as_deref(),
        Some(held.payout_key().as_str())
    );
    // Released: no more decisions.
    assert!(matches!(
        store.withdrawal_decide(&decision(held.id, 4, true, None)).await,
        Err(StoreError::Conflict(m)) if m.contains("not waiting for approval")
    ));

    let mut create = request("held-2", 'b');
    create.approval = true;
    let rejected = store.withdrawal_create(&create).await.unwrap().row().id;
    for bad in [
        decision(rejected, 2, false, None),
        decision(rejected, 2, false, Some("  ")),
        decision(rejected, 2, false, Some(&"x".repeat(501))),
        decision(rejected, 2, false, Some("line\nbreak")),
        WithdrawalDecision {
            required: 0,
            ..decision(rejected, 2, true, None)
        },
    ] {
        let error = store.withdrawal_decide(&bad).await.unwrap_err();
        assert!(matches!(error, StoreError::Invalid(_)), "{error}");
    }
    assert!(
        store
            .withdrawal_approvals(rejected)
            .await
            .unwrap()
            .is_empty()
    );
    let decided = store
        .withdrawal_decide(&decision(
            rejected,
            2,
            false,
            Some("destination on a watch list"),
        ))
        .await
        .unwrap();
    assert_eq!(decided.row.state, WithdrawalState::Failed);
    let reason = decided.row.error.unwrap();
    assert!(
        reason.contains("rejected by token:2") && reason.contains("watch list"),
        "{reason}"
    );
    assert_eq!(
        jobs(&store).await.len(),
        1,
        "a rejected one is never queued"
    );

    let mut create = request("held-3", 'c');
    create.approval = true;
    let canceled = store.withdrawal_create(&create).await.unwrap().row().id;
    let row = store
        .withdrawal_cancel(canceled, "token:1:backend", at(5))
        .await
        .unwrap();
    assert_eq!(row.state, WithdrawalState::Canceled);
    assert!(matches!(
        store
            .withdrawal_decide(&decision(999_999, 2, true, None))
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Two approvals at once: each sees the other, so the withdrawal is released once.
async fn racing_approvals_release_once(db: &TestDb) {
    let store = db.store().await;
    for n in 0..5 {
        let mut create = request(&format!("race-{n}"), 'a');
        create.approval = true;
        let id = store.withdrawal_create(&create).await.unwrap().row().id;
        let (first, second) = (decision(id, 2, true, None), decision(id, 3, true, None));
        let (a, b) = tokio::join!(
            store.withdrawal_decide(&first),
            store.withdrawal_decide(&second),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let released = [&a, &b]
            .iter()
            .filter(|each| each.row.state == WithdrawalState::Pending)
            .count();
        assert_eq!(released, 1, "{a:?} {b:?}");
    }
    assert_eq!(jobs(&store).await.len(), 5);
}

fn limited(key: &str, amount: &str, seconds: i64, limits: &[(&str, u64)]) -> WithdrawalCreate {
    let mut create = request(key, 'a');
    create.amount = amount.into();
    create.now = at(seconds);
    create.limits = limits
        .iter()
        .map(|(scope, limit)| store::UsageLimit {
            scope: (*scope).into(),
            limit: ruint::aliases::U256::from(*limit),
            rule: format!("test {scope:?}"),
        })
        .collect();
    create
}

/// Rolling 24-hour limits: use adds up per scope; a withdrawal that would pass a limit is
/// refused with the rule named and nothing stored; exactly the limit passes; a canceled or
/// rejected one gives its use back; use older than the window no longer counts.
async fn rolling_limits_count_and_give_back(db: &TestDb) {
    let store = db.store().await;
    let both = [("", 10), ("ref:user:7", 6)];
    let first = store
        .withdrawal_create(&limited("l-1", "6", 0, &both))
        .await
        .unwrap()
        .row()
        .id;
    // The reference's 6 is used up.
    let error = store
        .withdrawal_create(&limited("l-2", "1", 60, &both))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::LimitReached(m) if m.contains("\"ref:user:7\"") && m.contains("6 used")),
        "{error}"
    );
    // The asset's total: 6 + 4 = 10 passes, one more does not.
    store
        .withdrawal_create(&limited("l-3", "4", 120, &[("", 10)]))
        .await
        .unwrap();
    let error = store
        .withdrawal_create(&limited("l-4", "1", 180, &[("", 10)]))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::LimitReached(_)), "{error}");
    assert_eq!(
        store
            .withdrawal_list(&WithdrawalList {
                limit: 10,
                ..WithdrawalList::default()
            })
            .await
            .unwrap()
            .len(),
        2,
        "refused ones are not stored"
    );
    // Canceled: its 6 is given back to both scopes.
    store
        .withdrawal_cancel(first, "token:1:backend", at(200))
        .await
        .unwrap();
    store
        .withdrawal_create(&limited("l-5", "6", 240, &both))
        .await
        .unwrap();
    // A rejected one gives back too.
    let mut held = limited("l-6", "1", 300, &[("ref:user:9", 1)]);
    held.approval = true;
    let held = store.withdrawal_create(&held).await.unwrap().row().id;
    assert!(matches!(
        store
            .withdrawal_create(&limited("l-7", "1", 310, &[("ref:user:9", 1)]))
            .await,
        Err(StoreError::LimitReached(_))
    ));
    store
        .withdrawal_decide(&decision(held, 2, false, Some("not today")))
        .await
        .unwrap();
    store
        .withdrawal_create(&limited("l-8", "1", 320, &[("ref:user:9", 1)]))
        .await
        .unwrap();
    // A day and more later the window has moved on: the asset's 10 is free again.
    store
        .withdrawal_create(&limited("l-9", "10", 26 * 3600, &[("", 10)]))
        .await
        .unwrap();
}

/// Creates racing under one limit: exactly as many as fit are stored.
async fn racing_creates_stay_within_a_limit(db: &TestDb) {
    let store = db.store().await;
    let creates: Vec<WithdrawalCreate> = (0..8)
        .map(|n| limited(&format!("r-{n}"), "3", 0, &[("", 10)]))
        .collect();
    let results = futures_util::future::join_all(
        creates.iter().map(|create| store.withdrawal_create(create)),
    )
    .await;
    let stored = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(stored, 3, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|result| result.as_ref().err())
            .all(|error| matches!(error, StoreError::LimitReached(_)))
    );
}

testkit::on_both_stores!(
    db:
    created_with_its_job_once_per_key,
    racing_creates_with_one_key_store_one,
    moves_follow_the_table_as_compare_and_set,
    cancel_only_before_anything_may_be_signed,
    lists_filter_and_page,
    bad_requests_change_nothing,
    hot_wallet_balances_keep_the_last_reading,
    state_ages_and_completion_times,
    approvals_release_or_reject_held_withdrawals,
    racing_approvals_release_once,
    rolling_limits_count_and_give_back,
    racing_creates_stay_within_a_limit,
);
