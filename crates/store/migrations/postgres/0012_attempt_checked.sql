-- When a reconciler last looked at each live payout attempt. Live attempts are read least
-- recently checked first, so attempts that stay undecided round after round go to the back
-- and never keep newer ones from being looked at. Never edit this file once applied.

alter table payout_attempt add column checked_at timestamptz;

create index payout_attempt_checked on payout_attempt (chain, checked_at, created_at)
    where state = 'live';
