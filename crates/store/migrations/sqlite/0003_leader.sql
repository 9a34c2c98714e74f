-- Leadership leases: one holder per name at a time (queue maintenance, later the scheduler
-- and autoscaler). Times are integer milliseconds. Never edit this file once applied.

create table leader (
    name       text primary key check (length(name) between 1 and 100),
    holder     text not null check (length(holder) between 1 and 200),
    expires_at integer not null
) strict;
