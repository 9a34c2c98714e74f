-- Deposits end to end (issue 16). `deposit_address` holds the addresses handed out to the
-- exchange's backend: one per (chain, reference), derived from the chain's deposit xpub at
-- `derivation_index`; each of the three is unique per chain, so two racing requests for one
-- reference get one address and two for different references never share an index.
-- `scan_lease` lets one deposit scanner per chain work at a time (a holder and an expiry,
-- taken over only once expired). `deposit` gains `ignored` (a transfer seen and kept for the
-- record that is never credited: zero value, dust, internal) with its `reason`, and
-- `updated_at`, when its state last changed. From this migration on, the `position` of an
-- Ethereum token deposit is the log's index within its transaction, not within its block.
-- Never edit this file once applied.

create table deposit_address (
    id               bigint generated always as identity primary key,
    chain            text not null,
    reference        text not null check (length(reference) between 1 and 200),
    derivation_index bigint not null check (derivation_index between 0 and 2147483647),
    address          text not null check (length(address) between 1 and 100),
    created_at       timestamptz not null,
    constraint deposit_address_reference unique (chain, reference),
    constraint deposit_address_index unique (chain, derivation_index),
    constraint deposit_address_address unique (chain, address)
);

create table scan_lease (
    chain      text primary key,
    holder     text not null check (length(holder) between 1 and 200),
    expires_at timestamptz not null
);

alter table deposit drop constraint deposit_state_check;
alter table deposit add constraint deposit_state
    check (state in ('pending', 'credited', 'orphaned', 'reversed', 'ignored'));
alter table deposit add column reason text check (reason is null or length(reason) between 1 and 200);
alter table deposit add column updated_at timestamptz;
create index deposit_by_address on deposit (chain, address);
