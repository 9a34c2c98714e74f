-- The ledger: `ledger_adjustment` (money that moved outside the deposit and withdrawal rows,
-- such as a hot wallet's opening balance; audited, never changed) and `ledger_check` (the
-- last reconciliation per chain and asset). See the Postgres migration of the same number.
-- Times are integer milliseconds. Never edit this file once applied.

create table ledger_adjustment (
    id         integer primary key autoincrement,
    chain      text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    address    text not null check (length(address) between 1 and 100),
    asset      text not null check (length(asset) between 1 and 20),
    direction  text not null check (direction in ('in', 'out')),
    amount     text not null check (length(amount) between 1 and 78
                                    and amount not glob '*[^0-9]*' and amount not glob '0*'),
    reason     text not null check (length(reason) between 1 and 500),
    created_by text not null check (length(created_by) between 1 and 200),
    created_at integer not null
) strict;

create index ledger_adjustment_chain on ledger_adjustment (chain, id);

create table ledger_check (
    chain      text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    asset      text not null check (length(asset) between 1 and 100),
    agreeing   integer not null check (agreeing >= 0),
    differing  integer not null check (differing >= 0),
    unknown    integer not null check (unknown >= 0),
    difference text not null check (length(difference) between 1 and 78
                                    and difference not glob '*[^0-9]*'),
    checked_at integer not null,
    primary key (chain, asset)
) strict;
