-- When a reconciler last looked at each live payout attempt; see the Postgres migration of
-- the same number. Times are integer milliseconds. Never edit this file once applied.

alter table payout_attempt add column checked_at integer;

create index payout_attempt_checked on payout_attempt (chain, checked_at, created_at)
    where state = 'live';
