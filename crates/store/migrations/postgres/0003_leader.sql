-- Leadership leases: one holder per name at a time (queue maintenance, later the scheduler
-- and autoscaler). A lease row rather than an advisory lock: it behaves the same on SQLite,
-- survives connection poolers, and shows who leads. Never edit this file once applied.

create table leader (
    name       text primary key check (length(name) between 1 and 100),
    holder     text not null check (length(holder) between 1 and 200),
    expires_at timestamptz not null
);
