-- Every nonce is tied to the payout it pays (a withdrawal id), and keeps every transaction it
-- ever had, so a job retried after a crash finds and finishes the same transaction instead of
-- reserving a second nonce, and a nonce is settled by which of its transactions was mined.
--
-- `nonce_use.payout`: the payout a reservation is for, one nonce per (chain, payout). A
-- reservation given back or taken over by another payout carries that payout's key instead.
-- `nonce_use.txid` / `raw` stay the first transaction signed with the nonce (never
-- overwritten); `nonce_tx` holds it and every replacement (same nonce, higher fees), in order.
-- `outcome`: null while undecided; `mined` (with `mined_txid`, one of the nonce's own
-- transactions) or `foreign` (the nonce was consumed by a transaction that is none of ours).
-- Version 10 is the withdrawal table (another branch). Never edit this file once applied.

alter table nonce_use add column payout text check (payout is null or length(payout) between 1 and 200);
alter table nonce_use add column outcome text check (outcome is null or outcome in ('mined', 'foreign'));
alter table nonce_use add column mined_txid text check (mined_txid is null or length(mined_txid) between 1 and 100);
alter table nonce_use add column settled_at timestamptz;
alter table nonce_use add constraint nonce_use_settled check (
    (outcome is null and mined_txid is null and settled_at is null)
    or (outcome = 'mined' and mined_txid is not null and settled_at is not null and txid is not null)
    or (outcome = 'foreign' and mined_txid is null and settled_at is not null and txid is not null)
);

-- Rows from before this migration get a payout key of their own, so every row has one.
update nonce_use set payout = 'legacy:' || address || ':' || nonce where payout is null;

create unique index nonce_use_payout on nonce_use (chain, payout);
create index nonce_use_unsettled on nonce_use (chain, address, nonce)
    where txid is not null and outcome is null;

create table nonce_tx (
    chain                    text not null,
    address                  text not null,
    nonce                    bigint not null check (nonce >= 0),
    seq                      bigint not null check (seq >= 0),
    txid                     text not null check (length(txid) between 1 and 100),
    raw                      bytea not null check (length(raw) between 1 and 131072),
    max_fee_per_gas          bigint check (max_fee_per_gas is null or max_fee_per_gas >= 0),
    max_priority_fee_per_gas bigint check (max_priority_fee_per_gas is null or max_priority_fee_per_gas >= 0),
    created_at               timestamptz not null,
    primary key (chain, address, nonce, seq),
    constraint nonce_tx_txid unique (chain, txid),
    foreign key (chain, address, nonce) references nonce_use (chain, address, nonce)
);

insert into nonce_tx (chain, address, nonce, seq, txid, raw, created_at)
select chain, address, nonce, 0, txid, raw, now() from nonce_use
where txid is not null and raw is not null;
