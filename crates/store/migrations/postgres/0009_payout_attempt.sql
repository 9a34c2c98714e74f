-- Payout attempts (TRON and Bitcoin; Ethereum keeps its signed bytes under its nonce in
-- `nonce_use`): every signed transaction that pays a payout (a withdrawal, or a Bitcoin batch)
-- is stored here before it is broadcast, and a new one is stored only when every earlier one
-- is provably dead (DESIGN.md §2.2 and §2.3). `utxo_reservation` locks each Bitcoin output to
-- the one payout whose attempts spend it, so two payouts never spend one output;
-- `payout_member` does the same for the withdrawals a payout pays.
-- Never edit this file once applied.

create table payout_attempt (
    chain      text not null,
    txid       text not null check (length(txid) between 1 and 100),
    payout     text not null check (length(payout) between 1 and 200),
    sender     text not null check (length(sender) between 1 and 100),
    raw        bytea not null check (length(raw) between 1 and 131072),
    expires_at bigint check (expires_at is null or expires_at >= 0),
    replaces   text check (replaces is null or replaces <> txid),
    state      text not null check (state in ('live', 'landed', 'dead', 'replaced')),
    created_at timestamptz not null,
    settled_at timestamptz,
    primary key (chain, txid)
);

create index payout_attempt_payout on payout_attempt (chain, payout);
create index payout_attempt_live on payout_attempt (chain, sender, created_at) where state = 'live';

create table attempt_input (
    chain        text not null,
    attempt_txid text not null,
    txid         text not null check (length(txid) between 1 and 100),
    vout         bigint not null check (vout between 0 and 4294967295),
    primary key (chain, attempt_txid, txid, vout),
    foreign key (chain, attempt_txid) references payout_attempt (chain, txid) on delete cascade
);

create index attempt_input_outpoint on attempt_input (chain, txid, vout);

create table utxo_reservation (
    chain       text not null,
    txid        text not null check (length(txid) between 1 and 100),
    vout        bigint not null check (vout between 0 and 4294967295),
    payout      text not null check (length(payout) between 1 and 200),
    reserved_at timestamptz not null,
    primary key (chain, txid, vout)
);

create index utxo_reservation_payout on utxo_reservation (chain, payout);

-- The withdrawals a payout pays (a Bitcoin batch pays many): each belongs to one payout while
-- that payout may land, so a withdrawal taken into two batches is refused.
create table payout_member (
    chain      text not null,
    member     text not null check (length(member) between 1 and 200),
    payout     text not null check (length(payout) between 1 and 200),
    claimed_at timestamptz not null,
    primary key (chain, member)
);

create index payout_member_payout on payout_member (chain, payout);
