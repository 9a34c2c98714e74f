-- The ledger (issue 16, item 5). What each wallet should hold is computed, not stored: from
-- the rows that move money (credited and held deposits, withdrawals and the fees they paid)
-- and the entries of `ledger_adjustment`, the money that moved outside those rows: above all
-- a hot wallet's opening balance (the operator funded it from outside), or a correction after
-- an investigation. An adjustment is written by an operator with a reason, audited in the
-- same transaction, and never updated or deleted: a wrong one is undone by an opposite one.
-- `asset` is the catalogue symbol; `amount` integer base units as decimal text, never zero.
--
-- `ledger_check` keeps the last reconciliation of each chain and asset against the chain's
-- nodes: how many wallets agreed, differed or could not be compared, and the sum of the
-- differences' sizes in base units. `/metrics` exports it and the dashboard shows it; each
-- reconciliation of a chain replaces that chain's rows.
-- Never edit this file once applied.

create table ledger_adjustment (
    id         bigint generated always as identity primary key,
    chain      text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    address    text not null check (length(address) between 1 and 100),
    asset      text not null check (length(asset) between 1 and 20),
    direction  text not null check (direction in ('in', 'out')),
    amount     text not null check (amount ~ '^[1-9][0-9]{0,77}$'),
    reason     text not null check (length(reason) between 1 and 500),
    created_by text not null check (length(created_by) between 1 and 200),
    created_at timestamptz not null
);

create index ledger_adjustment_chain on ledger_adjustment (chain, id);

create table ledger_check (
    chain      text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    asset      text not null check (length(asset) between 1 and 100),
    agreeing   bigint not null check (agreeing >= 0),
    differing  bigint not null check (differing >= 0),
    unknown    bigint not null check (unknown >= 0),
    difference text not null check (difference ~ '^[0-9]{1,78}$'),
    checked_at timestamptz not null,
    primary key (chain, asset)
);
