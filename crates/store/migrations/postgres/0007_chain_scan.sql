-- Block scanning and deposits. `chain_block` keeps the recent blocks a scanner read, each with
-- its hash and its parent's, so a reorg shows as a new block whose parent is not the stored
-- one; the newest row is the scanner's cursor. `deposit` holds funds seen arriving at our
-- addresses, keyed for good by (chain, txid, asset, position), with the block they are in:
-- `pending` until the chain's confirmation policy is met, then `credited`; a reorg turns a
-- pending one `orphaned` (it comes back if the transaction is mined again) and a credited one
-- `reversed`, which needs a person.
-- `nonce_use.raw` keeps the signed bytes bound to a nonce, so a transaction the node dropped
-- is sent again, byte for byte, instead of leaving a gap.
-- Never edit this file once applied.

create table chain_block (
    chain       text not null,
    number      bigint not null check (number >= 0),
    hash        text not null check (length(hash) between 1 and 100),
    parent_hash text not null check (length(parent_hash) between 1 and 100),
    scanned_at  timestamptz not null,
    primary key (chain, number)
);

create table deposit (
    id           bigint generated always as identity primary key,
    chain        text not null,
    txid         text not null check (length(txid) between 1 and 100),
    asset        text not null check (length(asset) between 1 and 100),
    position     bigint not null check (position >= 0),
    address      text not null check (length(address) between 1 and 100),
    sender       text check (sender is null or length(sender) between 1 and 100),
    amount       text not null check (amount ~ '^[0-9]{1,78}$'),
    block_number bigint not null check (block_number >= 0),
    block_hash   text not null check (length(block_hash) between 1 and 100),
    state        text not null check (state in ('pending', 'credited', 'orphaned', 'reversed')),
    seen_at      timestamptz not null,
    credited_at  timestamptz,
    unique (chain, txid, asset, position)
);

create index deposit_pending on deposit (chain, block_number) where state = 'pending';
create index deposit_by_block on deposit (chain, block_number);

alter table nonce_use add column raw bytea;
