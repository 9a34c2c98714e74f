-- Nonces tied to their payouts, with every transaction they ever had and their settled
-- outcome; see the Postgres migration of the same number. SQLite cannot add a table
-- constraint to an existing table, so the settled-outcome check rides on `settled_at`.
-- Times are integer milliseconds. Never edit this file once applied.

alter table nonce_use add column payout text check (payout is null or length(payout) between 1 and 200);
alter table nonce_use add column outcome text check (outcome is null or outcome in ('mined', 'foreign'));
alter table nonce_use add column mined_txid text check (mined_txid is null or length(mined_txid) between 1 and 100);
alter table nonce_use add column settled_at integer check (
    (outcome is null and mined_txid is null and settled_at is null)
    or (outcome = 'mined' and mined_txid is not null and settled_at is not null and txid is not null)
    or (outcome = 'foreign' and mined_txid is null and settled_at is not null and txid is not null)
);

update nonce_use set payout = 'legacy:' || address || ':' || nonce where payout is null;

create unique index nonce_use_payout on nonce_use (chain, payout);
create index nonce_use_unsettled on nonce_use (chain, address, nonce)
    where txid is not null and outcome is null;

create table nonce_tx (
    chain                    text not null,
    address                  text not null,
    nonce                    integer not null check (nonce >= 0),
    seq                      integer not null check (seq >= 0),
    txid                     text not null check (length(txid) between 1 and 100),
    raw                      blob not null check (length(raw) between 1 and 131072),
    max_fee_per_gas          integer check (max_fee_per_gas is null or max_fee_per_gas >= 0),
    max_priority_fee_per_gas integer check (max_priority_fee_per_gas is null or max_priority_fee_per_gas >= 0),
    created_at               integer not null,
    primary key (chain, address, nonce, seq),
    constraint nonce_tx_txid unique (chain, txid),
    foreign key (chain, address, nonce) references nonce_use (chain, address, nonce)
) strict;

insert into nonce_tx (chain, address, nonce, seq, txid, raw, created_at)
select chain, address, nonce, 0, txid, raw, cast(strftime('%s', 'now') as integer) * 1000 from nonce_use
where txid is not null and raw is not null;
