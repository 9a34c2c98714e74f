-- The job queue: named queues (pause, concurrency limit) and their jobs. A job is claimed with
-- a lease (owner, expiry) and a fencing token that every later state change must present.
-- Times are integer milliseconds since the Unix epoch. Never edit this file once applied.

create table queue (
    name              text primary key check (length(name) between 1 and 100),
    paused            integer not null default 0 check (paused in (0, 1)),
    concurrency_limit integer check (concurrency_limit > 0),
    updated_at        integer not null
) strict;

create table job (
    id               integer primary key autoincrement,
    queue            text not null check (length(queue) between 1 and 100),
    kind             text not null check (length(kind) between 1 and 100),
    args             text not null default '{}' check (json_valid(args)),
    state            text not null
                     check (state in ('available', 'running', 'completed', 'failed', 'cancelled')),
    priority         integer not null default 0 check (priority between -32768 and 32767),
    attempt          integer not null default 0 check (attempt >= 0),
    max_attempts     integer not null check (max_attempts between 1 and 100),
    backoff_base_ms  integer not null check (backoff_base_ms >= 0),
    backoff_max_ms   integer not null check (backoff_max_ms >= backoff_base_ms),
    unique_key       text check (length(unique_key) between 1 and 200),
    run_at           integer not null,
    token            integer not null default 0,
    lease_owner      text,
    lease_expires_at integer,
    errors           text not null default '[]' check (json_valid(errors)),
    rescues          integer not null default 0,
    created_at       integer not null,
    started_at       integer,
    finished_at      integer,
    check ((state = 'running') = (lease_owner is not null and lease_expires_at is not null))
) strict;

create index job_claim_idx on job (queue, priority, run_at, id) where state = 'available';
create index job_lease_idx on job (lease_expires_at) where state = 'running';
create index job_owner_idx on job (lease_owner) where state = 'running';
create unique index job_unique_key_idx on job (queue, unique_key)
    where unique_key is not null and state in ('available', 'running');
create index job_queue_state_idx on job (queue, state, id desc);
