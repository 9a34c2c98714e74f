// graphile-worker on the same Postgres, with its batching options on (a local queue of 500
// prefetched jobs, as CoinSensei's bench prefetches 500; batched completions), measured the way `coinsensei bench queue` measures
// itself, on a throwaway database.
import { spawn } from 'node:child_process';
import pg from 'pg';
import { run, makeWorkerUtils } from 'graphile-worker';
import { parseArgs, nowMs, percentile, sleep, log, report } from './common.mjs';

const args = parseArgs();
const database = args.doomed ?? `peer_graphile_${process.pid}_${Date.now()}`;
const serverUrl = new URL(args.pgUrl);
const url = new URL(args.pgUrl);
url.pathname = `/${database}`;
const connectionString = url.toString();
const quiet = new (await import('graphile-worker')).Logger(() => () => {});
const preset = (concurrency) => ({
  worker: {
    connectionString,
    concurrentJobs: concurrency,
    maxPoolSize: concurrency + 2,
    pollInterval: 1000,
    localQueue: { size: Math.max(concurrency + 1, 500) },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
});
const runner = (concurrency, taskList) => run({ preset: preset(concurrency), taskList, noHandleSignals: true, logger: quiet });

if (args.doomed) {
  // The worker that gets SIGKILLed while it holds the recovery jobs.
  await runner(args.recoveryTrials, { hold: () => new Promise(() => {}) });
  await new Promise(() => {});
}

const admin = new pg.Client({ connectionString: serverUrl.toString() });
await admin.connect();
await admin.query(`create database ${database}`);
const utils = await makeWorkerUtils({ connectionString, logger: quiet });
await utils.migrate();

async function drain(concurrency, expected, taskList) {
  let done = 0;
  const started = nowMs();
  const worker = await runner(concurrency, taskList);
  await new Promise((resolve) => worker.events.on('job:success', () => { done += 1; if (done === expected) resolve(); }));
  const elapsed = (nowMs() - started) / 1000;
  await worker.stop();
  return expected / elapsed;
}

// Bulk enqueue.
let started = nowMs();
for (let left = args.jobs; left > 0; left -= 1000) {
  const size = Math.min(1000, left);
  await utils.addJobs(Array.from({ length: size }, () => ({ identifier: 'noop', payload: {} })));
}
const enqueueBulk = args.jobs / ((nowMs() - started) / 1000);
log(`graphile-worker bulk enqueue: ${enqueueBulk.toFixed(0)} jobs/s`);

const processed = await drain(args.concurrency, args.jobs, { noop: async () => {} });
log(`graphile-worker processed: ${processed.toFixed(0)} jobs/s`);

// Single enqueue from concurrent callers.
const singleJobs = Math.min(args.jobs, 20000);
started = nowMs();
await Promise.all(Array.from({ length: args.concurrency }, async (_, n) => {
  const count = Math.floor(singleJobs / args.concurrency) + (n < singleJobs % args.concurrency ? 1 : 0);
  for (let i = 0; i < count; i += 1) await utils.addJob('single', {});
}));
const enqueueSingle = singleJobs / ((nowMs() - started) / 1000);
log(`graphile-worker single enqueue: ${enqueueSingle.toFixed(0)} jobs/s`);
await admin.query(`select 1`);

// Enqueue-to-start latency at a steady 200 jobs/s.
const latencies = [];
const latencyWorker = await runner(args.concurrency, { probe: async (payload) => { latencies.push(nowMs() - payload.sent); } });
await sleep(200);
const total = 200 * 5;
const t0 = nowMs();
for (let i = 0; i < total; i += 1) {
  const due = t0 + i * 5;
  const wait = due - nowMs();
  if (wait > 0) await sleep(wait);
  await utils.addJob('probe', { sent: nowMs() });
}
while (latencies.length < total) await sleep(20);
await latencyWorker.stop();
log(`graphile-worker latency: p50 ${percentile(latencies, 50).toFixed(2)} ms, p99 ${percentile(latencies, 99).toFixed(2)} ms`);

// Dead-worker recovery with the default settings (locks expire after 4 hours): capped at 120 s.
for (let n = 0; n < args.recoveryTrials; n += 1) await utils.addJob('hold', { trial: n });
const doomed = spawn(process.execPath, [new URL(import.meta.url).pathname, '--doomed', database, '--postgres-url', args.pgUrl, '--recovery-trials', String(args.recoveryTrials)], { stdio: 'ignore' });
const locked = async () => Number((await utils.withPgClient((client) => client.query(`select count(*) from graphile_worker._private_jobs where locked_at is not null`))).rows[0].count);
while ((await locked()) < args.recoveryTrials) await sleep(20);
doomed.kill('SIGKILL');
const killedAt = nowMs();
const recovered = new Map();
const survivor = await runner(args.recoveryTrials, { hold: async (payload) => { if (!recovered.has(payload.trial)) recovered.set(payload.trial, (nowMs() - killedAt) / 1000); } });
const deadline = nowMs() + 120000;
while (recovered.size < args.recoveryTrials && nowMs() < deadline) await sleep(100);
await survivor.stop();
const samples = [...recovered.values()];
log(`graphile-worker recovery: ${samples.length}/${args.recoveryTrials} within 120 s`);

await utils.release();
await admin.query(`drop database ${database} with (force)`);
await admin.end();
report('graphile-worker', args, { enqueueBulk, enqueueSingle, processed, latencies, samples });
process.exit(0);
