//! The queue on Redis, for scale. Every state change is one Lua script, so it is atomic on the
//! server; scripts are re-sent by `redis::Script` after a server restart flushed them, and the
//! connection manager reconnects by itself, so workers resume without help.
//!
//! Keys, under a prefix (default `cs:`), with `{queue}` in braces so that names cannot collide:
//! - `job:ID`: a hash with the job's fields (times in milliseconds since the epoch);
//! - `q:{Q}:ready:P`: ready jobs of priority P (sorted set, score = run_at); `q:{Q}:prios`:
//!   the priorities in use; `q:{Q}:delayed`: jobs waiting for their run_at (or a retry);
//! - `q:{Q}:running` and `running` (every queue): leases, score = expiry; `owner:O`: the jobs
//!   a lease holder has; `q:{Q}:completed|failed|cancelled`: finished jobs by finish time;
//! - `q:{Q}:unique`: unique key → id while the job is unfinished; `q:{Q}:meta`: paused and
//!   concurrency limit; `queues`: every queue; `id`: the id counter; `wake`: the channel that
//!   announces available jobs.
//!
//! Members of the sorted sets are zero-padded ids, so equal scores keep enqueue order.
//! Durability is Redis's: run it with `appendonly yes` and `appendfsync everysec` (at most a
//! second of acknowledged jobs lost on a power cut) or `always` (none, slower). This backend
//! does not commit with the caller's SQL data; use the SQL backends for that.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{JobState, Name};
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use store::{
    JobClaim, JobFail, JobFinish, JobInsert, JobInserted, JobLeaseExtend, JobList, JobPrune,
    JobRescue, JobRow, JobSnooze, QueueStats,
};
use tokio::sync::mpsc;

use crate::backend::{Backend, QueueError, Wake, Wakeups};

const PRELUDE: &str = r#"
local P = ARGV[1]
local function pad(id) return string.format('%016d', tonumber(id)) end
local function jk(id) return P .. 'job:' .. tonumber(id) end
local function qk(q, part) return P .. 'q:{' .. q .. '}:' .. part end
local function ready_add(q, prio, runat, id)
  redis.call('ZADD', qk(q, 'ready:' .. prio), runat, pad(id))
  redis.call('ZADD', qk(q, 'prios'), prio, tostring(prio))
end
local function ready_remove(q, prio, id)
  redis.call('ZREM', qk(q, 'ready:' .. prio), pad(id))
end
local function free_unique(q, k, id)
  local key = redis.call('HGET', k, 'unique_key')
  local holder = key and redis.call('HGET', qk(q, 'unique'), key)
  if holder and tonumber(holder) == tonumber(id) then
    redis.call('HDEL', qk(q, 'unique'), key)
  end
end
local function release_lease(q, k, id)
  local owner = redis.call('HGET', k, 'lease_owner')
  redis.call('ZREM', qk(q, 'running'), pad(id))
  redis.call('ZREM', P .. 'running', pad(id))
  if owner then redis.call('SREM', P .. 'owner:' .. owner, pad(id)) end
  redis.call('HDEL', k, 'lease_owner', 'lease_expires_at')
  return owner
end
local function push_error(k, attempt, at, message)
  local errors = cjson.decode(redis.call('HGET', k, 'errors') or '[]')
  table.insert(errors, {attempt = tonumber(attempt), at = at, error = message})
  redis.call('HSET', k, 'errors', cjson.encode(errors))
end
local function finish(q, k, id, state, now)
  redis.call('HSET', k, 'state', state, 'finished_at', now)
  redis.call('ZADD', qk(q, state), now, pad(id))
  free_unique(q, k, id)
end
"#;

/// ARGV: prefix, now, then 10 per job: queue kind args priority max_attempts base max unique_key
/// run_at explicit ('0': the queue's own retry policy, when it has one, replaces the three).
const ENQUEUE: &str = r#"
local now = tonumber(ARGV[2])
local out, woken = {}, {}
local n = (#ARGV - 2) / 10
for i = 0, n - 1 do
  local b = 2 + i * 10
  local q, ukey, runat = ARGV[b + 1], ARGV[b + 8], tonumber(ARGV[b + 9])
  local maxa, base, bmax = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  if ARGV[b + 10] == '0' then
    local policy = redis.call('HMGET', qk(q, 'meta'), 'max_attempts', 'backoff_base_ms', 'backoff_max_ms')
    maxa, base, bmax = policy[1] or maxa, policy[2] or base, policy[3] or bmax
  end
  local existing = false
  if ukey ~= '' then
    existing = redis.call('HGET', qk(q, 'unique'), ukey)
    -- Only an unfinished job holds its key; a stale entry is overwritten below.
    if existing then
      local state = redis.call('HGET', jk(existing), 'state')
      if state ~= 'available' and state ~= 'running' then existing = false end
    end
  end
  if existing then
    out[#out + 1] = tonumber(existing); out[#out + 1] = 0
  else
    local id = redis.call('INCR', P .. 'id')
    local k = jk(id)
    redis.call('HSET', k, 'id', id, 'queue', q, 'kind', ARGV[b + 2], 'args', ARGV[b + 3], 'state', 'available',
      'priority', ARGV[b + 4], 'attempt', 0, 'max_attempts', maxa, 'backoff_base_ms', base,
      'backoff_max_ms', bmax, 'run_at', runat, 'token', 0, 'errors', '[]', 'rescues', 0, 'created_at', now)
    if ukey ~= '' then
      redis.call('HSET', k, 'unique_key', ukey)
      redis.call('HSET', qk(q, 'unique'), ukey, id)
    end
    redis.call('SADD', P .. 'queues', q)
    if runat > now then
      redis.call('ZADD', qk(q, 'delayed'), runat, pad(id))
    else
      ready_add(q, tonumber(ARGV[b + 4]), runat, id)
      woken[q] = true
    end
    out[#out + 1] = id; out[#out + 1] = 1
  end
end
for q, _ in pairs(woken) do redis.call('PUBLISH', P .. 'wake', q) end
return out
"#;

/// ARGV: prefix, queue, owner, limit, lease_until, now.
const CLAIM: &str = r#"
local q, owner, limit, lease, now = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local meta = redis.call('HMGET', qk(q, 'meta'), 'paused', 'limit')
if meta[1] == '1' then return {} end
local due = redis.call('ZRANGEBYSCORE', qk(q, 'delayed'), '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #due, 2 do
  local id = tonumber(due[i])
  redis.call('ZREM', qk(q, 'delayed'), due[i])
  ready_add(q, tonumber(redis.call('HGET', jk(id), 'priority')), tonumber(due[i + 1]), id)
end
local room = limit
if meta[2] then room = math.min(room, tonumber(meta[2]) - redis.call('ZCARD', qk(q, 'running'))) end
local out = {}
if room <= 0 then return out end
for _, p in ipairs(redis.call('ZRANGE', qk(q, 'prios'), 0, -1)) do
  if room <= 0 then break end
  local rk = qk(q, 'ready:' .. p)
  local members = redis.call('ZRANGE', rk, 0, room - 1)
  if #members == 0 then redis.call('ZREM', qk(q, 'prios'), p) end
  for _, m in ipairs(members) do
    local id = tonumber(m)
    local k = jk(id)
    redis.call('ZREM', rk, m)
    redis.call('HINCRBY', k, 'token', 1)
    redis.call('HINCRBY', k, 'attempt', 1)
    redis.call('HSET', k, 'state', 'running', 'lease_owner', owner, 'last_worker', owner, 'lease_expires_at', lease, 'started_at', now)
    redis.call('ZADD', qk(q, 'running'), lease, m)
    redis.call('ZADD', P .. 'running', lease, m)
    redis.call('SADD', P .. 'owner:' .. owner, m)
    out[#out + 1] = redis.call('HGETALL', k)
    room = room - 1
  end
end
return out
"#;

/// ARGV: prefix, owner, lease_until, then pairs of id, token: the jobs the owner still runs.
const EXTEND: &str = r#"
local owner, lease = ARGV[2], tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV, 2 do
  local k = jk(ARGV[i])
  local state, holder, token, q, expires =
    unpack(redis.call('HMGET', k, 'state', 'lease_owner', 'token', 'queue', 'lease_expires_at'))
  if state == 'running' and holder == owner and token == ARGV[i + 1] and tonumber(expires) < lease then
    local m = pad(ARGV[i])
    redis.call('HSET', k, 'lease_expires_at', lease)
    redis.call('ZADD', qk(q, 'running'), 'XX', lease, m)
    redis.call('ZADD', P .. 'running', 'XX', lease, m)
    n = n + 1
  end
end
return n
"#;

/// ARGV: prefix, now, then pairs of id, token. Returns the ids completed.
const COMPLETE_MANY: &str = r#"
local now = tonumber(ARGV[2])
local done = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local k = jk(id)
  local state, held, q = unpack(redis.call('HMGET', k, 'state', 'token', 'queue'))
  if state == 'running' and held == token then
    release_lease(q, k, id)
    finish(q, k, id, 'completed', now)
    done[#done + 1] = tonumber(id)
  end
end
return done
"#;

/// ARGV: prefix, id, token, mode (complete|cancel|fail|snooze), now, message, at (ms or ''), now_rfc3339.
const SETTLE: &str = r#"
local id, token, mode, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local k = jk(id)
local state, held, q, attempt = unpack(redis.call('HMGET', k, 'state', 'token', 'queue', 'attempt'))
if not state then return {'missing'} end
if state ~= 'running' or held ~= token then return {'stale', state, held} end
release_lease(q, k, id)
if mode == 'complete' then
  finish(q, k, id, 'completed', now)
elseif mode == 'cancel' then
  finish(q, k, id, 'cancelled', now)
elseif mode == 'fail' then
  push_error(k, attempt, ARGV[8], ARGV[6])
  if ARGV[7] ~= '' then
    redis.call('HSET', k, 'state', 'available', 'run_at', ARGV[7])
    redis.call('ZADD', qk(q, 'delayed'), tonumber(ARGV[7]), pad(id))
  else
    finish(q, k, id, 'failed', now)
  end
else
  redis.call('HSET', k, 'state', 'available', 'run_at', ARGV[7])
  redis.call('HINCRBY', k, 'attempt', -1)
  redis.call('ZADD', qk(q, 'delayed'), tonumber(ARGV[7]), pad(id))
end
return {'ok', redis.call('HGETALL', k)}
"#;

/// ARGV: prefix, now, limit, owner ('' = every expired lease), now_rfc3339.
const RESCUE: &str = r#"
local now, limit, owner = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local members
if owner ~= '' then
  members = redis.call('SMEMBERS', P .. 'owner:' .. owner)
else
  members = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', '(' .. now, 'LIMIT', 0, limit)
end
local out, woken = {}, {}
for _, m in ipairs(members) do
  if #out >= limit then break end
  local k = jk(m)
  local state, q, attempt, maxa, prio, holder =
    unpack(redis.call('HMGET', k, 'state', 'queue', 'attempt', 'max_attempts', 'priority', 'lease_owner'))
  if state == 'running' and (owner == '' or holder == owner) then
    release_lease(q, k, m)
    push_error(k, attempt, ARGV[5], 'lease of ' .. (holder or '?') .. ' expired: its worker stopped answering')
    redis.call('HINCRBY', k, 'rescues', 1)
    if tonumber(attempt) >= tonumber(maxa) then
      finish(q, k, m, 'failed', now)
    else
      redis.call('HSET', k, 'state', 'available', 'run_at', now)
      ready_add(q, tonumber(prio), now, m)
      woken[q] = true
    end
    out[#out + 1] = redis.call('HGETALL', k)
  elseif owner ~= '' then
    redis.call('SREM', P .. 'owner:' .. owner, m)
  else
    -- Not running any more (or gone): a stale entry must not fill the LIMIT window.
    redis.call('ZREM', P .. 'running', m)
  end
end
for q, _ in pairs(woken) do redis.call('PUBLISH', P .. 'wake', q) end
return out
"#;

/// ARGV: prefix, id, mode (retry|discard), now.
const ADMIN: &str = r#"
local id, mode, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local k = jk(id)
local state, q, prio, ukey = unpack(redis.call('HMGET', k, 'state', 'queue', 'priority', 'unique_key'))
if not state then return {'missing'} end
if mode == 'retry' then
  if state ~= 'failed' and state ~= 'cancelled' then return {'conflict', state} end
  if ukey then
    local holder = redis.call('HGET', qk(q, 'unique'), ukey)
    if holder and holder ~= tostring(tonumber(id)) then return {'conflict', 'unique'} end
    redis.call('HSET', qk(q, 'unique'), ukey, tonumber(id))
  end
  redis.call('ZREM', qk(q, state), pad(id))
  redis.call('HSET', k, 'state', 'available', 'attempt', 0, 'run_at', now)
  redis.call('HDEL', k, 'finished_at')
  ready_add(q, tonumber(prio), now, id)
  redis.call('PUBLISH', P .. 'wake', q)
else
  if state == 'available' then
    ready_remove(q, prio, id)
    redis.call('ZREM', qk(q, 'delayed'), pad(id))
  elseif state == 'failed' then
    redis.call('ZREM', qk(q, 'failed'), pad(id))
  else
    return {'conflict', state}
  end
  finish(q, k, id, 'cancelled', now)
end
return {'ok', redis.call('HGETALL', k)}
"#;

/// ARGV: prefix, now. Returns per queue: name, paused, limit, available, scheduled, running,
/// completed, failed, cancelled, oldest available run_at ('' when none).
const STATS: &str = r#"
local now = tonumber(ARGV[2])
local out = {}
local queues = redis.call('SMEMBERS', P .. 'queues')
table.sort(queues)
for _, q in ipairs(queues) do
  local meta = redis.call('HMGET', qk(q, 'meta'), 'paused', 'limit')
  local available, oldest = 0, nil
  for _, p in ipairs(redis.call('ZRANGE', qk(q, 'prios'), 0, -1)) do
    local rk = qk(q, 'ready:' .. p)
    available = available + redis.call('ZCARD', rk)
    local first = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    if #first > 0 and (not oldest or tonumber(first[2]) < oldest) then oldest = tonumber(first[2]) end
  end
  local due = redis.call('ZRANGEBYSCORE', qk(q, 'delayed'), '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if #due > 0 and (not oldest or tonumber(due[2]) < oldest) then oldest = tonumber(due[2]) end
  local due_count = redis.call('ZCOUNT', qk(q, 'delayed'), '-inf', now)
  out[#out + 1] = {q, meta[1] or '0', meta[2] or '', available + due_count,
    redis.call('ZCARD', qk(q, 'delayed')) - due_count, redis.call('ZCARD', qk(q, 'running')),
    redis.call('ZCARD', qk(q, 'completed')), redis.call('ZCARD', qk(q, 'failed')),
    redis.call('ZCARD', qk(q, 'cancelled')), oldest and tostring(oldest) or ''}
end
return out
"#;

/// ARGV: prefix, queue, field (paused|limit), value ('' removes).
const QUEUE_SET: &str = r#"
local q, field, value = ARGV[2], ARGV[3], ARGV[4]
if redis.call('SISMEMBER', P .. 'queues', q) == 0 then return 0 end
if value == '' then redis.call('HDEL', qk(q, 'meta'), field) else redis.call('HSET', qk(q, 'meta'), field, value) end
if field == 'paused' and value == '0' then redis.call('PUBLISH', P .. 'wake', q) end
return 1
"#;

/// ARGV: prefix, queue, max_attempts, backoff_base_ms, backoff_max_ms ('' removes the policy).
const RETRY_SET: &str = r#"
local q = ARGV[2]
if redis.call('SISMEMBER', P .. 'queues', q) == 0 then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', qk(q, 'meta'), 'max_attempts', 'backoff_base_ms', 'backoff_max_ms')
else
  redis.call('HSET', qk(q, 'meta'), 'max_attempts', ARGV[3], 'backoff_base_ms', ARGV[4], 'backoff_max_ms', ARGV[5])
end
return 1
"#;

/// ARGV: prefix, name, holder, ttl_ms. Takes or renews a leadership lease.
const LEAD: &str = r#"
local key = P .. 'leader:' .. ARGV[2]
local holder = redis.call('GET', key)
if not holder or holder == ARGV[3] then
  redis.call('SET', key, ARGV[3], 'PX', tonumber(ARGV[4]))
  return 1
end
return 0
"#;

/// ARGV: prefix, keep_completed, keep_failed, finished_before ('' = none), most to delete
/// (a bounded script: Redis runs nothing else meanwhile).
const PRUNE: &str = r#"
local keep = {completed = tonumber(ARGV[2]), failed = tonumber(ARGV[3]), cancelled = tonumber(ARGV[3])}
local before, limit = ARGV[4], tonumber(ARGV[5])
local n = 0
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  for state, kept in pairs(keep) do
    local zk = qk(q, state)
    local victims = {}
    local count = redis.call('ZCARD', zk)
    if count > kept then
      for _, m in ipairs(redis.call('ZRANGE', zk, 0, count - kept - 1)) do victims[m] = true end
    end
    if before ~= '' then
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', zk, '-inf', '(' .. before)) do victims[m] = true end
    end
    for m, _ in pairs(victims) do
      if n >= limit then return n end
      redis.call('ZREM', zk, m)
      redis.call('DEL', jk(m))
      n = n + 1
    end
  end
end
return n
"#;

struct Scripts {
    enqueue: Script,
    claim: Script,
    extend: Script,
    settle: Script,
    complete_many: Script,
    rescue: Script,
    admin: Script,
    stats: Script,
    queue_set: Script,
    prune: Script,
    lead: Script,
    retry_set: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            enqueue: script(ENQUEUE),
            claim: script(CLAIM),
            extend: script(EXTEND),
            settle: script(SETTLE),
            complete_many: script(COMPLETE_MANY),
            rescue: script(RESCUE),
            admin: script(ADMIN),
            stats: script(STATS),
            queue_set: script(QUEUE_SET),
            prune: script(PRUNE),
            lead: script(LEAD),
            retry_set: script(RETRY_SET),
        }
    }
}

/// The queue on a Redis server.
#[derive(Clone)]
pub struct RedisBackend {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
}

fn unavailable(error: redis::RedisError) -> QueueError {
    QueueError::Unavailable(format!("redis: {error}"))
}

fn corrupt(what: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(format!("unexpected reply from redis: {what}"))
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_ms(value: i64) -> Result<DateTime<Utc>, QueueError> {
    DateTime::from_timestamp_millis(value).ok_or_else(|| corrupt(format!("timestamp {value}")))
}

fn text(value: &Value) -> Result<String, QueueError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(corrupt),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(corrupt(format!("{other:?}"))),
    }
}

fn array(value: Value) -> Result<Vec<Value>, QueueError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format!("{other:?}"))),
    }
}

/// A job hash (HGETALL: field, value, field, value, ...) as a row.
fn decode_job(value: Value) -> Result<JobRow, QueueError> {
    let items = array(value)?;
    let mut fields = HashMap::with_capacity(items.len() / 2);
    for pair in items.chunks(2) {
        if let [key, value] = pair {
            fields.insert(text(key)?, text(value)?);
        }
    }
    let get = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| corrupt(format!("job without {name}")))
    };
    let int =
        |name: &str| -> Result<i64, QueueError> { get(name)?.parse::<i64>().map_err(corrupt) };
    let opt_int = |name: &str| -> Result<Option<i64>, QueueError> {
        fields
            .get(name)
            .map(|value| value.parse::<i64>().map_err(corrupt))
            .transpose()
    };
    let opt_time = |name: &str| -> Result<Option<DateTime<Utc>>, QueueError> {
        opt_int(name)?.map(from_ms).transpose()
    };
    let small =
        |name: &str| -> Result<i32, QueueError> { i32::try_from(int(name)?).map_err(corrupt) };
    Ok(JobRow {
        id: int("id")?,
        queue: Name::new(get("queue")?.clone()).map_err(corrupt)?,
        kind: Name::new(get("kind")?.clone()).map_err(corrupt)?,
        args: serde_json::from_str(get("args")?).map_err(corrupt)?,
        state: get("state")?.parse().map_err(corrupt)?,
        priority: i16::try_from(int("priority")?).map_err(corrupt)?,
        attempt: small("attempt")?,
        max_attempts: small("max_attempts")?,
        backoff_base_ms: int("backoff_base_ms")?,
        backoff_max_ms: int("backoff_max_ms")?,
        unique_key: fields.get("unique_key").cloned(),
        run_at: from_ms(int("run_at")?)?,
        token: int("token")?,
        lease_owner: fields.get("lease_owner").cloned(),
        lease_expires_at: opt_time("lease_expires_at")?,
        errors: serde_json::from_str(get("errors")?).map_err(corrupt)?,
        rescues: small("rescues")?,
        created_at: from_ms(int("created_at")?)?,
        started_at: opt_time("started_at")?,
        finished_at: opt_time("finished_at")?,
        last_worker: fields.get("last_worker").cloned(),
    })
}

/// A settling script's reply: `{'ok', job}`, `{'missing'}`, or a refusal with details.
enum Reply {
    Job(Box<JobRow>),
    Refused(String, Vec<String>),
}

fn scripted_reply(reply: Value, id: i64) -> Result<Reply, QueueError> {
    let mut items = array(reply)?.into_iter();
    let status = items
        .next()
        .map(|value| text(&value))
        .transpose()?
        .unwrap_or_default();
    match status.as_str() {
        "ok" => Ok(Reply::Job(Box::new(decode_job(
            items.next().ok_or_else(|| corrupt("reply without job"))?,
        )?))),
        "missing" => Err(QueueError::NotFound {
            what: "job",
            id: id.to_string(),
        }),
        _ => Ok(Reply::Refused(
            status,
            items.map(|value| text(&value)).collect::<Result<_, _>>()?,
        )),
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl RedisBackend {
    /// Connects to `redis://HOST:PORT/DB`. Keys live under `prefix` (e.g. `cs:`), so several
    /// systems (or tests) can share a server.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)
            .map_err(|error| QueueError::Invalid(format!("redis url: {error}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(10)));
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        Ok(RedisBackend {
            client,
            connection,
            prefix: prefix.to_string(),
            scripts: std::sync::Arc::new(Scripts::new()),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The server's persistence settings, for reports: `appendonly=… appendfsync=… save=…`.
    pub async fn durability(&self) -> Result<String, QueueError> {
        let mut connection = self.connection.clone();
        let mut parts = Vec::new();
        for name in ["appendonly", "appendfsync", "save"] {
            let reply: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            parts.push(format!(
                "{name}={}",
                reply.get(1).map(String::as_str).unwrap_or("?")
            ));
        }
        Ok(parts.join(" "))
    }

    /// Deletes every key under the prefix (tests, and resetting a system).
    pub async fn delete_everything(&self) -> Result<u64, QueueError> {
        let mut connection = self.connection.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    async fn settle(
        &self,
        id: i64,
        token: i64,
        mode: &str,
        message: &str,
        at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<JobRow, QueueError> {
        let mut connection = self.connection.clone();
        let reply: Value = self
            .scripts
            .settle
            .arg(&self.prefix)
            .arg(id)
            .arg(token)
            .arg(mode)
            .arg(ms(now))
            .arg(store::truncate_error_text(message))
            .arg(at.map(|at| ms(at).to_string()).unwrap_or_default())
            .arg(now.to_rfc3339())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match scripted_reply(reply, id)? {
            Reply::Job(row) => Ok(*row),
            Reply::Refused(status, details) if status == "stale" => {
                let detail = |index: usize| details.get(index).map(String::as_str).unwrap_or("?");
                Err(QueueError::Stale(format!(
                    "job {id} is {} under token {}; the caller holds token {token}",
                    detail(0),
                    detail(1)
                )))
            }
            Reply::Refused(status, _) => Err(corrupt(status)),
        }
    }

    async fn admin(&self, id: i64, mode: &str, now: DateTime<Utc>) -> Result<JobRow, QueueError> {
        let mut connection = self.connection.clone();
        let reply: Value = self
            .scripts
            .admin
            .arg(&self.prefix)
            .arg(id)
            .arg(mode)
            .arg(ms(now))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match scripted_reply(reply, id)? {
            Reply::Job(row) => Ok(*row),
            Reply::Refused(status, details) if status == "conflict" => {
                let state = details.first().cloned().unwrap_or_default();
                Err(QueueError::Conflict(match (mode, state.as_str()) {
                    (_, "unique") => format!(
                        "job {id} cannot be retried: another unfinished job holds its unique key"
                    ),
                    ("retry", state) => {
                        format!("job {id} is {state}: only failed or cancelled jobs can be retried")
                    }
                    (_, state) => format!(
                        "job {id} is {state}: only available or failed jobs can be discarded"
                    ),
                }))
            }
            Reply::Refused(status, _) => Err(corrupt(status)),
        }
    }

    async fn queue_set(&self, queue: &Name, field: &str, value: String) -> Result<(), QueueError> {
        let mut connection = self.connection.clone();
        let found: i64 = self
            .scripts
            .queue_set
            .arg(&self.prefix)
            .arg(queue.as_str())
            .arg(field)
            .arg(value)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if found == 1 {
            Ok(())
        } else {
            Err(QueueError::NotFound {
                what: "queue",
                id: queue.to_string(),
            })
        }
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, job: &JobInsert) -> Result<JobInserted, QueueError> {
        let mut inserted = self.enqueue_many(std::slice::from_ref(job)).await?;
        inserted
            .pop()
            .ok_or_else(|| corrupt("enqueue returned nothing"))
    }

    async fn enqueue_many(&self, jobs: &[JobInsert]) -> Result<Vec<JobInserted>, QueueError> {
        store::validate_job_batch(jobs)?;
        let Some(first) = jobs.first() else {
            return Ok(Vec::new());
        };
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.arg(&self.prefix).arg(ms(first.now));
        let default = domain::RetryPolicy::default();
        for job in jobs {
            let retry = job.retry.unwrap_or(default);
            invocation
                .arg(job.queue.as_str())
                .arg(job.kind.as_str())
                .arg(job.args.to_string())
                .arg(job.priority)
                .arg(retry.max_attempts)
                .arg(millis(retry.backoff_base))
                .arg(millis(retry.backoff_max))
                .arg(job.unique_key.as_deref().unwrap_or(""))
                .arg(ms(job.run_at))
                .arg(if job.retry.is_some() { "1" } else { "0" });
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(reply
            .chunks(2)
            .map(|pair| JobInserted {
                id: pair[0],
                inserted: pair.get(1) == Some(&1),
            })
            .collect())
    }

    async fn claim(&self, claim: &JobClaim) -> Result<Vec<JobRow>, QueueError> {
        if claim.limit == 0 || claim.owner.is_empty() {
            return Err(QueueError::Invalid(
                "a claim needs an owner and a limit above 0".into(),
            ));
        }
        let mut connection = self.connection.clone();
        let reply: Value = self
            .scripts
            .claim
            .arg(&self.prefix)
            .arg(claim.queue.as_str())
            .arg(&claim.owner)
            .arg(claim.limit.min(domain::limits::JOB_CLAIM_BATCH_MAX))
            .arg(ms(claim.lease_until))
            .arg(ms(claim.now))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        array(reply)?.into_iter().map(decode_job).collect()
    }

    async fn extend_leases(&self, extend: &JobLeaseExtend) -> Result<u64, QueueError> {
        if extend.jobs.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.scripts.extend.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(&extend.owner)
            .arg(ms(extend.lease_until));
        for (id, token) in &extend.jobs {
            invocation.arg(id).arg(token);
        }
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn complete(&self, finish: &JobFinish) -> Result<JobRow, QueueError> {
        self.settle(finish.id, finish.token, "complete", "", None, finish.now)
            .await
    }

    async fn complete_many(&self, finishes: &[JobFinish]) -> Result<Vec<i64>, QueueError> {
        let Some(first) = finishes.first() else {
            return Ok(Vec::new());
        };
        let mut invocation = self.scripts.complete_many.prepare_invoke();
        invocation.arg(&self.prefix).arg(ms(first.now));
        for finish in finishes {
            invocation.arg(finish.id).arg(finish.token);
        }
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn fail(&self, fail: &JobFail) -> Result<JobRow, QueueError> {
        self.settle(
            fail.id,
            fail.token,
            "fail",
            &fail.error,
            fail.retry_at,
            fail.now,
        )
        .await
    }

    async fn snooze(&self, snooze: &JobSnooze) -> Result<JobRow, QueueError> {
        self.settle(
            snooze.id,
            snooze.token,
            "snooze",
            "",
            Some(snooze.run_at),
            snooze.now,
        )
        .await
    }

    async fn cancel(&self, finish: &JobFinish) -> Result<JobRow, QueueError> {
        self.settle(finish.id, finish.token, "cancel", "", None, finish.now)
            .await
    }

    async fn rescue(&self, rescue: &JobRescue) -> Result<Vec<JobRow>, QueueError> {
        let mut connection = self.connection.clone();
        let reply: Value = self
            .scripts
            .rescue
            .arg(&self.prefix)
            .arg(ms(rescue.now))
            .arg(rescue.limit.min(domain::limits::JOB_RESCUE_BATCH_MAX))
            .arg(rescue.owner.as_deref().unwrap_or(""))
            .arg(rescue.now.to_rfc3339())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        array(reply)?.into_iter().map(decode_job).collect()
    }

    async fn retry(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, QueueError> {
        self.admin(id, "retry", now).await
    }

    async fn discard(&self, id: i64, now: DateTime<Utc>) -> Result<JobRow, QueueError> {
        self.admin(id, "discard", now).await
    }

    async fn get(&self, id: i64) -> Result<Option<JobRow>, QueueError> {
        let mut connection = self.connection.clone();
        let reply: Value = redis::cmd("HGETALL")
            .arg(format!("{}job:{id}", self.prefix))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match &reply {
            Value::Array(items) if items.is_empty() => Ok(None),
            Value::Map(items) if items.is_empty() => Ok(None),
            _ => decode_job(flatten_map(reply)).map(Some),
        }
    }

    /// Lists by reading the per-state sets; meant for operators, not hot paths.
    async fn list(&self, list: &JobList) -> Result<Vec<JobRow>, QueueError> {
        let mut connection = self.connection.clone();
        let queues: Vec<String> = match &list.queue {
            Some(queue) => vec![queue.to_string()],
            None => redis::cmd("SMEMBERS")
                .arg(format!("{}queues", self.prefix))
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?,
        };
        let mut ids: Vec<i64> = Vec::new();
        for queue in &queues {
            let key = |part: &str| format!("{}q:{{{queue}}}:{part}", self.prefix);
            let mut sets: Vec<String> = Vec::new();
            let wants = |state: JobState| list.state.is_none_or(|wanted| wanted == state);
            if wants(JobState::Available) {
                let prios: Vec<String> = redis::cmd("ZRANGE")
                    .arg(key("prios"))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                sets.extend(prios.iter().map(|prio| key(&format!("ready:{prio}"))));
                sets.push(key("delayed"));
            }
            for (state, part) in [
                (JobState::Running, "running"),
                (JobState::Completed, "completed"),
                (JobState::Failed, "failed"),
                (JobState::Cancelled, "cancelled"),
            ] {
                if wants(state) {
                    sets.push(key(part));
                }
            }
            for set in sets {
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&set)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                ids.extend(
                    members
                        .iter()
                        .filter_map(|member| member.parse::<i64>().ok()),
                );
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let limit = list.limit.clamp(1, domain::limits::LIST_LIMIT_MAX) as usize;
        let mut rows = Vec::new();
        for id in ids
            .into_iter()
            .filter(|id| list.before_id.is_none_or(|before| *id < before))
        {
            if rows.len() >= limit {
                break;
            }
            if let Some(row) = self.get(id).await? {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Vec<QueueStats>, QueueError> {
        let mut connection = self.connection.clone();
        let reply: Value = self
            .scripts
            .stats
            .arg(&self.prefix)
            .arg(ms(now))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        array(reply)?
            .into_iter()
            .map(|row| {
                let fields: Vec<String> = array(row)?.iter().map(text).collect::<Result<_, _>>()?;
                let int = |index: usize| fields[index].parse::<i64>().map_err(corrupt);
                Ok(QueueStats {
                    name: Name::new(fields[0].clone()).map_err(corrupt)?,
                    paused: fields[1] == "1",
                    concurrency_limit: if fields[2].is_empty() {
                        None
                    } else {
                        Some(i32::try_from(int(2)?).map_err(corrupt)?)
                    },
                    available: int(3)?,
                    scheduled: int(4)?,
                    running: int(5)?,
                    completed: int(6)?,
                    failed: int(7)?,
                    cancelled: int(8)?,
                    oldest_available_at: if fields[9].is_empty() {
                        None
                    } else {
                        Some(from_ms(int(9)?)?)
                    },
                })
            })
            .collect()
    }

    async fn pause(
        &self,
        queue: &Name,
        paused: bool,
        _now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.queue_set(queue, "paused", if paused { "1" } else { "0" }.into())
            .await
    }

    async fn set_concurrency(
        &self,
        queue: &Name,
        limit: Option<u32>,
        _now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        if limit == Some(0) {
            return Err(QueueError::Invalid(
                "a concurrency limit must be at least 1".into(),
            ));
        }
        self.queue_set(
            queue,
            "limit",
            limit.map(|limit| limit.to_string()).unwrap_or_default(),
        )
        .await
    }

    async fn prune(&self, prune: &JobPrune) -> Result<u64, QueueError> {
        /// Most jobs one prune script deletes; the loop below takes the rest.
        const PRUNE_BATCH: u64 = 5_000;
        let before = prune
            .finished_before
            .map(|at| ms(at).to_string())
            .unwrap_or_default();
        let mut total = 0;
        loop {
            let mut connection = self.connection.clone();
            let pruned: u64 = self
                .scripts
                .prune
                .arg(&self.prefix)
                .arg(prune.keep_completed)
                .arg(prune.keep_failed)
                .arg(&before)
                .arg(PRUNE_BATCH)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            total += pruned;
            if pruned < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn set_retry(
        &self,
        queue: &Name,
        retry: Option<domain::RetryPolicy>,
        _now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        if let Some(retry) = &retry {
            store::validate_retry(retry)?;
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.retry_set.prepare_invoke();
        invocation.arg(&self.prefix).arg(queue.as_str());
        match retry {
            Some(retry) => invocation
                .arg(retry.max_attempts)
                .arg(millis(retry.backoff_base))
                .arg(millis(retry.backoff_max)),
            None => invocation.arg("").arg("").arg(""),
        };
        let found: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if found == 1 {
            Ok(())
        } else {
            Err(QueueError::NotFound {
                what: "queue",
                id: queue.to_string(),
            })
        }
    }

    async fn lead(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        _now: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        let mut connection = self.connection.clone();
        let led: i64 = self
            .scripts
            .lead
            .arg(&self.prefix)
            .arg(name)
            .arg(holder)
            .arg(millis(ttl).max(1))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(led == 1)
    }

    async fn wakeups(&self) -> Result<Wakeups, QueueError> {
        let (sender, receiver) = mpsc::channel(256);
        let client = self.client.clone();
        let channel = format!("{}wake", self.prefix);
        // First subscription now, so an error is reported to the caller.
        let pubsub = subscribe(&client, &channel).await?;
        let task = tokio::spawn(forward_wakeups(client, channel, pubsub, sender));
        Ok(Wakeups::from_channel(receiver, task))
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSub, QueueError> {
    let mut pubsub = client.get_async_pubsub().await.map_err(unavailable)?;
    pubsub.subscribe(channel).await.map_err(unavailable)?;
    Ok(pubsub)
}

/// Forwards wake-ups, resubscribing after the connection drops (a Redis restart); a
/// resubscription is announced as `Wake::Any`, since messages may have been missed.
async fn forward_wakeups(
    client: redis::Client,
    channel: String,
    pubsub: redis::aio::PubSub,
    sender: mpsc::Sender<Wake>,
) {
    use futures_util::StreamExt;
    let mut pubsub = Some(pubsub);
    let mut failures: u32 = 0;
    loop {
        let current = match pubsub.take() {
            Some(current) => current,
            None => match subscribe(&client, &channel).await {
                Ok(fresh) => {
                    failures = 0;
                    if sender.send(Wake::Any).await.is_err() {
                        return;
                    }
                    fresh
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, failures, "redis wake-ups lost; resubscribing");
                    tokio::time::sleep(std::time::Duration::from_millis(100u64 << failures.min(5)))
                        .await;
                    continue;
                }
            },
        };
        let mut messages = current.into_on_message();
        while let Some(message) = messages.next().await {
            let wake = message
                .get_payload::<String>()
                .ok()
                .and_then(|queue| Name::new(queue).ok())
                .map(Wake::Queue)
                .unwrap_or(Wake::Any);
            // A full buffer means the reader is behind: it re-reads anyway.
            if let Err(mpsc::error::TrySendError::Closed(_)) = sender.try_send(wake) {
                return;
            }
        }
        if sender.is_closed() {
            return;
        }
    }
}

/// RESP3 answers HGETALL with a map; the decoder takes the flat RESP2 form.
fn flatten_map(value: Value) -> Value {
    match value {
        Value::Map(pairs) => Value::Array(
            pairs
                .into_iter()
                .flat_map(|(key, value)| [key, value])
                .collect(),
        ),
        other => other,
    }
}
