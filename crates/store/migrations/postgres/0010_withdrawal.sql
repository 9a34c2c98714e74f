-- Withdrawals: what the exchange's backend asked to pay, and where each one is
-- (domain::WithdrawalState; docs/withdrawal-states.md). The idempotency key is the backend's,
-- unique for good; `request_hash` is the SHA-256 of the request as first accepted, so the
-- same key with another body is recognised and refused. Amounts are integers in base units,
-- kept as decimal text (up to 2^256 - 1, wider than bigint). The signed transactions
-- themselves live under the payout key `withdrawal:ID` in `payout_attempt` (TRON, Bitcoin)
-- or under their nonce (Ethereum). The `service` role is the backend's token.
-- Never edit this file once applied.

alter table api_token drop constraint api_token_role_check;
alter table api_token add constraint api_token_role_check
    check (role in ('service', 'viewer', 'operator', 'admin'));

create table withdrawal (
    id              bigint generated always as identity primary key,
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
    block_height    bigint check (block_height is null or block_height >= 0),
    confirmations   bigint not null default 0 check (confirmations >= 0),
    fee             text check (fee is null or length(fee) between 1 and 78),
    created_by      text not null check (length(created_by) between 1 and 200),
    created_at      timestamptz not null,
    updated_at      timestamptz not null,
    constraint withdrawal_idempotency_key unique (idempotency_key)
);

create index withdrawal_chain_state on withdrawal (chain, state, id);
create index withdrawal_state on withdrawal (state, id);
create index withdrawal_reference on withdrawal (reference, id);
