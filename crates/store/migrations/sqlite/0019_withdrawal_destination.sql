-- Allowlist mode: the destinations withdrawals may pay to, when `withdrawal_allowlist` (or an
-- asset's `allowlist`) is on. Each registration is usable from `usable_at` (its creation plus
-- the configured cool-down, fixed when it is registered), so a stolen admin token cannot add
-- an address and pay to it at once. One registration per chain and address; removing one
-- deletes its row (the audit log keeps the history), and registering it again starts a new
-- cool-down. `reference`, when set, is the reference prefix (the backend's user part) the
-- destination belongs to: only withdrawals of that prefix may use it. Times are integer
-- milliseconds.
--
-- Also: `job.last_worker`, the lease owner of a job's latest claim, kept when the job ends
-- (the lease owner is cleared then, as the queue's contract needs), so a finished job's page
-- can say which worker ran it. Never edit this file once applied.

create table withdrawal_destination (
    id         integer primary key autoincrement,
    chain      text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    address    text not null check (length(address) between 1 and 100),
    label      text not null check (length(label) between 1 and 100),
    reference  text check (reference is null or length(reference) between 1 and 200),
    created_by text not null check (length(created_by) between 1 and 200),
    created_at integer not null,
    usable_at  integer not null,
    constraint withdrawal_destination_address unique (chain, address)
) strict;

alter table job add column last_worker text;
