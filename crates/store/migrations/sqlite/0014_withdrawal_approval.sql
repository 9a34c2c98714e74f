-- Four eyes: a withdrawal above its asset's approval threshold is created in `approval` and
-- waits for approvals from distinct operator tokens (never its creator's); one row per
-- token and withdrawal, so the same token twice counts once. A rejection moves it to
-- `failed` with the reason. SQLite cannot alter a check constraint: the withdrawal table is
-- rebuilt with the new state allowed, every row and id kept. Times are integer
-- milliseconds. Never edit this file once applied.

create table withdrawal_new (
    id              integer primary key autoincrement,
    idempotency_key text not null check (length(idempotency_key) between 1 and 100),
    request_hash    text not null check (length(request_hash) = 64),
    reference       text not null check (length(reference) between 1 and 200),
    chain           text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    asset           text not null check (length(asset) between 1 and 20),
    destination     text not null check (length(destination) between 1 and 100),
    amount          text not null check (length(amount) between 1 and 78),
    state           text not null check (state in ('approval', 'pending', 'processing',
                        'broadcast', 'confirming', 'completed', 'failed', 'canceled',
                        'manual_review')),
    error           text check (error is null or length(error) <= 2000),
    txid            text check (txid is null or length(txid) between 1 and 100),
    block_height    integer check (block_height is null or block_height >= 0),
    confirmations   integer not null default 0 check (confirmations >= 0),
    fee             text check (fee is null or length(fee) between 1 and 78),
    created_by      text not null check (length(created_by) between 1 and 200),
    created_at      integer not null,
    updated_at      integer not null,
    constraint withdrawal_idempotency_key unique (idempotency_key)
) strict;
insert into withdrawal_new (id, idempotency_key, request_hash, reference, chain, asset,
    destination, amount, state, error, txid, block_height, confirmations, fee, created_by,
    created_at, updated_at)
    select id, idempotency_key, request_hash, reference, chain, asset, destination, amount,
        state, error, txid, block_height, confirmations, fee, created_by, created_at,
        updated_at
    from withdrawal;
drop table withdrawal;
alter table withdrawal_new rename to withdrawal;

create index withdrawal_chain_state on withdrawal (chain, state, id);
create index withdrawal_state on withdrawal (state, id);
create index withdrawal_reference on withdrawal (reference, id);
create index withdrawal_state_updated on withdrawal (state, updated_at);

create table withdrawal_approval (
    withdrawal_id integer not null references withdrawal (id),
    token_id      integer not null,
    actor         text not null check (length(actor) between 1 and 200),
    decision      text not null check (decision in ('approve', 'reject')),
    reason        text check (reason is null or length(reason) between 1 and 500),
    decided_at    integer not null,
    primary key (withdrawal_id, token_id)
) strict;
