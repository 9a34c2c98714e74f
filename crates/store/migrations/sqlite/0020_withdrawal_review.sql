-- Manual review actions; see the Postgres migration of the same number. Times are integer
-- milliseconds. Never edit this file once applied.

create table withdrawal_review (
    id            integer primary key autoincrement,
    withdrawal_id integer not null references withdrawal (id),
    chain         text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    action        text not null check (action in ('mark_paid', 'mark_failed', 'retry')),
    txid          text check (txid is null or length(txid) between 1 and 100),
    position      integer check (position is null or position >= 0),
    reason        text not null check (length(reason) between 1 and 500),
    token_id      integer,
    actor         text not null check (length(actor) between 1 and 200),
    state         text not null check (state in ('requested', 'applied', 'refused')),
    outcome       text check (outcome is null or length(outcome) <= 2000),
    created_at    integer not null,
    decided_at    integer,
    check ((action = 'mark_paid') = (txid is not null))
) strict;

create unique index withdrawal_review_open on withdrawal_review (withdrawal_id)
    where state = 'requested';
create unique index withdrawal_review_paid_by on withdrawal_review (chain, txid, position)
    where action = 'mark_paid' and state = 'applied';
create index withdrawal_review_of on withdrawal_review (withdrawal_id, id);

alter table withdrawal add column payout_round integer not null default 1 check (payout_round >= 1);

create table withdrawal_policy_override (
    chain      text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    asset      text not null check (length(asset) between 1 and 100),
    policy     text not null check (length(policy) <= 4000),
    updated_by text not null check (length(updated_by) between 1 and 200),
    updated_at integer not null,
    primary key (chain, asset)
) strict;
