-- The worker registry (the seed's worker_registry, plus desired state, generations, incarnation
-- fencing and counters) and the audit log. Times are integer milliseconds since the Unix epoch,
-- so comparisons are exact. Never edit this file once applied: add a new one.

create table worker (
    id                 text primary key check (length(id) between 1 and 50),
    name               text not null check (length(name) between 1 and 100),
    type               text not null check (type in ('withdrawal', 'deposit', 'consolidation')),
    blockchain         text not null check (blockchain in ('tron', 'ethereum', 'bitcoin')),
    status             text not null default 'stopped'
                       check (status in ('starting', 'running', 'stopped', 'error', 'lost', 'offline')),
    desired_state      text not null default 'running' check (desired_state in ('running', 'stopped')),
    pid                integer,
    host               text,
    port               integer check (port between 0 and 65535),
    version            text,
    config             text not null default '{}' check (json_valid(config)),
    incarnation        text,
    generation         integer not null default 0 check (generation >= 0),
    applied_generation integer not null default 0 check (applied_generation >= 0),
    last_heartbeat     integer,
    last_error         text,
    started_at         integer,
    rss_bytes          integer check (rss_bytes >= 0),
    in_flight          integer not null default 0 check (in_flight >= 0),
    processed_total    integer not null default 0 check (processed_total >= 0),
    failed_total       integer not null default 0 check (failed_total >= 0),
    created_at         integer not null,
    updated_at         integer not null
) strict;

create index worker_live_heartbeat_idx on worker (last_heartbeat)
    where status in ('starting', 'running', 'stopped', 'error');

create table audit_log (
    id      integer primary key autoincrement,
    at      integer not null,
    actor   text not null check (length(actor) between 1 and 200),
    action  text not null check (length(action) between 1 and 200),
    target  text not null check (length(target) between 1 and 200),
    details text not null default '{}' check (json_valid(details))
) strict;

create index audit_log_target_idx on audit_log (target, id desc);
