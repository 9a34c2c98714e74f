-- Rolling 24-hour withdrawal limits: what each asset's withdrawals used, per scope ('' for
-- all of the asset; 'ref:PREFIX' for one reference prefix, the user part of the backend's
-- references), in hourly buckets. A limit counts the current hour and the 24 before it, so
-- its window is never shorter than 24 hours. Each withdrawal's charges are kept, and given
-- back when it fails or is canceled (it was never paid). Amounts are integers in base units
-- as decimal text. Never edit this file once applied.

create table withdrawal_usage (
    chain text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    asset text not null check (length(asset) between 1 and 20),
    scope text not null check (length(scope) <= 210),
    hour  integer not null check (hour >= 0),
    units text not null check (length(units) between 1 and 80),
    primary key (chain, asset, scope, hour)
) strict;

create table withdrawal_charge (
    withdrawal_id integer not null references withdrawal (id),
    scope         text not null check (length(scope) <= 210),
    hour          integer not null check (hour >= 0),
    primary key (withdrawal_id, scope)
) strict;
