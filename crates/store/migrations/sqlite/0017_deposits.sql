-- Deposits end to end; see the Postgres migration of the same number. SQLite cannot change a
-- check constraint in place, so `deposit` is rebuilt with its rows.
-- Times are integer milliseconds. Never edit this file once applied.

create table deposit_address (
    id               integer primary key autoincrement,
    chain            text not null,
    reference        text not null check (length(reference) between 1 and 200),
    derivation_index integer not null check (derivation_index between 0 and 2147483647),
    address          text not null check (length(address) between 1 and 100),
    created_at       integer not null,
    constraint deposit_address_reference unique (chain, reference),
    constraint deposit_address_index unique (chain, derivation_index),
    constraint deposit_address_address unique (chain, address)
) strict;

create table scan_lease (
    chain      text primary key,
    holder     text not null check (length(holder) between 1 and 200),
    expires_at integer not null
) strict;

create table deposit_rebuilt (
    id           integer primary key autoincrement,
    chain        text not null,
    txid         text not null check (length(txid) between 1 and 100),
    asset        text not null check (length(asset) between 1 and 100),
    position     integer not null check (position >= 0),
    address      text not null check (length(address) between 1 and 100),
    sender       text check (sender is null or length(sender) between 1 and 100),
    amount       text not null check (length(amount) between 1 and 78 and amount not glob '*[^0-9]*'),
    block_number integer not null check (block_number >= 0),
    block_hash   text not null check (length(block_hash) between 1 and 100),
    state        text not null
                 check (state in ('pending', 'credited', 'orphaned', 'reversed', 'ignored')),
    seen_at      integer not null,
    credited_at  integer,
    reason       text check (reason is null or length(reason) between 1 and 200),
    updated_at   integer,
    unique (chain, txid, asset, position)
) strict;

insert into deposit_rebuilt (id, chain, txid, asset, position, address, sender, amount,
                             block_number, block_hash, state, seen_at, credited_at)
select id, chain, txid, asset, position, address, sender, amount, block_number, block_hash,
       state, seen_at, credited_at
from deposit;

drop table deposit;
alter table deposit_rebuilt rename to deposit;

create index deposit_pending on deposit (chain, block_number) where state = 'pending';
create index deposit_by_block on deposit (chain, block_number);
create index deposit_by_address on deposit (chain, address);
