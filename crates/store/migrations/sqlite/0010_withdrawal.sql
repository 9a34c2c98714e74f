-- Withdrawals: what the exchange's backend asked to pay, and where each one is
-- (domain::WithdrawalState; docs/withdrawal-states.md). The idempotency key is the backend's,
-- unique for good; `request_hash` is the SHA-256 of the request as first accepted, so the
-- same key with another body is recognised and refused. Amounts are integers in base units,
-- kept as decimal text (up to 2^256 - 1). Times are integer milliseconds. The signed
-- transactions live under the payout key `withdrawal:ID` in `payout_attempt` (TRON, Bitcoin)
-- or under their nonce (Ethereum).
--
-- The `service` role (the backend's token) needs a wider check on `api_token.role`, and
-- SQLite cannot alter a check constraint: the table is rebuilt. Dropping the old table
-- cascades to `dashboard_session`, so dashboard sessions end at this upgrade (log in again);
-- tokens, ids and hashes are kept as they were.
-- Never edit this file once applied.

create table api_token_new (
    id           integer primary key autoincrement,
    name         text not null check (length(name) between 1 and 100),
    role         text not null check (role in ('service', 'viewer', 'operator', 'admin')),
    token_hash   text not null unique check (length(token_hash) = 64),
    prefix       text not null check (length(prefix) between 1 and 20),
    created_at   integer not null,
    last_used_at integer,
    revoked_at   integer
) strict;
insert into api_token_new (id, name, role, token_hash, prefix, created_at, last_used_at, revoked_at)
    select id, name, role, token_hash, prefix, created_at, last_used_at, revoked_at from api_token;
drop table api_token;
alter table api_token_new rename to api_token;

create table withdrawal (
    id              integer primary key autoincrement,
    idempotency_key text not null check (length(idempotency_key) between 1 and 100),
    request_hash    text not null check (length(request_hash) = 64),
    reference       text not null check (length(reference) between 1 and 200),
    chain           text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    asset           text not null check (length(asset) between 1 and 20),
    destination     text not null check (length(destination) between 1 and 100),
    amount          text not null check (length(amount) between 1 and 78),
    state           text not null check (state in ('pending', 'processing', 'broadcast',
                        'confirming', 'completed', 'failed', 'canceled', 'manual_review')),
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

create index withdrawal_chain_state on withdrawal (chain, state, id);
create index withdrawal_state on withdrawal (state, id);
create index withdrawal_reference on withdrawal (reference, id);
