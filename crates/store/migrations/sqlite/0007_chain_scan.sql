-- Block scanning and deposits; see the Postgres migration of the same number.
-- Times are integer milliseconds. Never edit this file once applied.

create table chain_block (
    chain       text not null,
    number      integer not null check (number >= 0),
    hash        text not null check (length(hash) between 1 and 100),
    parent_hash text not null check (length(parent_hash) between 1 and 100),
    scanned_at  integer not null,
    primary key (chain, number)
) strict;

create table deposit (
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
    state        text not null check (state in ('pending', 'credited', 'orphaned', 'reversed')),
    seen_at      integer not null,
    credited_at  integer,
    unique (chain, txid, asset, position)
) strict;

create index deposit_pending on deposit (chain, block_number) where state = 'pending';
create index deposit_by_block on deposit (chain, block_number);

alter table nonce_use add column raw blob;
