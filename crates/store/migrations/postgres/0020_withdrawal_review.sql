-- Manual review actions (docs/withdrawal-states.md, "Manual review"): an operator asks, the
-- chain's withdrawal worker checks against the chain, and the review is applied (the
-- withdrawal moved in the same transaction) or refused with the reason. One open review per
-- withdrawal at a time. A transfer that proves a withdrawal paid (`mark_paid`: chain, txid
-- and the transfer's position in it) proves one withdrawal only: the partial unique index.
--
-- Also: `withdrawal.payout_round`, which round of payment the withdrawal is on. A retry
-- after every attempt was proved dead starts the next round, whose transactions are held
-- under their own payout key (`withdrawal:ID` for round 1, `withdrawal:ID:rN` after), so a
-- settled nonce or a landed-but-failed attempt of an earlier round is never followed again.
-- Never edit this file once applied.

create table withdrawal_review (
    id            bigserial primary key,
    withdrawal_id bigint not null references withdrawal (id),
    chain         text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    action        text not null check (action in ('mark_paid', 'mark_failed', 'retry')),
    txid          text check (txid is null or length(txid) between 1 and 100),
    position      bigint check (position is null or position >= 0),
    reason        text not null check (length(reason) between 1 and 500),
    token_id      bigint,
    actor         text not null check (length(actor) between 1 and 200),
    state         text not null check (state in ('requested', 'applied', 'refused')),
    outcome       text check (outcome is null or length(outcome) <= 2000),
    created_at    timestamptz not null,
    decided_at    timestamptz,
    check ((action = 'mark_paid') = (txid is not null))
);

create unique index withdrawal_review_open on withdrawal_review (withdrawal_id)
    where state = 'requested';
create unique index withdrawal_review_paid_by on withdrawal_review (chain, txid, position)
    where action = 'mark_paid' and state = 'applied';
create index withdrawal_review_of on withdrawal_review (withdrawal_id, id);

alter table withdrawal add column payout_round bigint not null default 1 check (payout_round >= 1);

-- Withdrawal policies changed through the API (`PUT /api/admin/withdrawal-policies/{chain}/
-- {asset}`): one row per asset replaces that asset's `[[withdrawal_policy]]` at intake until
-- it is deleted. `policy` is JSON, amounts in base units as decimal strings.
create table withdrawal_policy_override (
    chain      text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    asset      text not null check (length(asset) between 1 and 100),
    policy     text not null check (length(policy) <= 4000),
    updated_by text not null check (length(updated_by) between 1 and 200),
    updated_at timestamptz not null,
    primary key (chain, asset)
);
