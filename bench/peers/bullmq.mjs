// BullMQ on the same Redis, measured the way `coinsensei bench queue` measures itself.
// Jobs carry the seed's settings: 3 attempts, exponential backoff from 2 s, keep 100
// completed and 50 failed.
import { spawn } from 'node:child_process';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { parseArgs, nowMs, percentile, sleep, log, report } from './common.mjs';

const args = parseArgs();
// BullMQ under native ESM takes a constructed client (it duplicates it for blocking calls).
const connection = new Redis(args.redisUrl, { maxRetriesPerRequest: null });
const prefix = args.doomed ?? `peer-bullmq-${process.pid}-${Date.now()}`;
const jobOptions = { attempts: 3, backoff: { type: 'exponential', delay: 2000 }, removeOnComplete: 100, removeOnFail: 50 };

if (args.doomed) {
  // The worker that gets SIGKILLed while it holds the recovery jobs.
  new Worker('recovery', () => new Promise(() => {}), { connection, prefix, concurrency: args.recoveryTrials });
  await new Promise(() => {});
}

const queue = (name) => new Queue(name, { connection, prefix, defaultJobOptions: jobOptions });

async function drain(name, concurrency, expected, processor = async () => {}) {
  let done = 0;
  const started = nowMs();
  const worker = new Worker(name, processor, { connection, prefix, concurrency });
  await new Promise((resolve) => worker.on('completed', () => { done += 1; if (done === expected) resolve(); }));
  const elapsed = (nowMs() - started) / 1000;
  await worker.close();
  return expected / elapsed;
}

// Bulk enqueue.
const bulk = queue('bulk');
let started = nowMs();
for (let left = args.jobs; left > 0; left -= 1000) {
  const size = Math.min(1000, left);
  await bulk.addBulk(Array.from({ length: size }, () => ({ name: 'noop', data: {} })));
}
const enqueueBulk = args.jobs / ((nowMs() - started) / 1000);
log(`bullmq bulk enqueue: ${enqueueBulk.toFixed(0)} jobs/s`);

const processed = await drain('bulk', args.concurrency, args.jobs);
log(`bullmq processed: ${processed.toFixed(0)} jobs/s`);

// Single enqueue from concurrent callers.
const single = queue('single');
const singleJobs = Math.min(args.jobs, 20000);
started = nowMs();
await Promise.all(Array.from({ length: args.concurrency }, async (_, n) => {
  const count = Math.floor(singleJobs / args.concurrency) + (n < singleJobs % args.concurrency ? 1 : 0);
  for (let i = 0; i < count; i += 1) await single.add('noop', {});
}));
const enqueueSingle = singleJobs / ((nowMs() - started) / 1000);
log(`bullmq single enqueue: ${enqueueSingle.toFixed(0)} jobs/s`);

// Enqueue-to-start latency at a steady 200 jobs/s.
const latencies = [];
const latencyWorker = new Worker('latency', async (job) => { latencies.push(nowMs() - job.data.sent); }, { connection, prefix, concurrency: args.concurrency });
await latencyWorker.waitUntilReady();
await sleep(200);
const latency = queue('latency');
const total = 200 * 5;
const t0 = nowMs();
for (let i = 0; i < total; i += 1) {
  const due = t0 + i * 5;
  const wait = due - nowMs();
  if (wait > 0) await sleep(wait);
  await latency.add('probe', { sent: nowMs() });
}
while (latencies.length < total) await sleep(20);
await latencyWorker.close();
log(`bullmq latency: p50 ${percentile(latencies, 50).toFixed(2)} ms, p99 ${percentile(latencies, 99).toFixed(2)} ms`);

// Dead-worker recovery with the default lock and stalled-job settings.
const recovery = queue('recovery');
for (let n = 0; n < args.recoveryTrials; n += 1) await recovery.add('noop', { trial: n });
const doomed = spawn(process.execPath, [new URL(import.meta.url).pathname, '--doomed', prefix, '--redis-url', args.redisUrl, '--recovery-trials', String(args.recoveryTrials)], { stdio: 'ignore' });
while ((await recovery.getActiveCount()) < args.recoveryTrials) await sleep(20);
doomed.kill('SIGKILL');
const killedAt = nowMs();
const recovered = new Map();
const survivor = new Worker('recovery', async (job) => { if (!recovered.has(job.id)) recovered.set(job.id, (nowMs() - killedAt) / 1000); }, { connection, prefix, concurrency: args.recoveryTrials });
const deadline = nowMs() + 120000;
while (recovered.size < args.recoveryTrials && nowMs() < deadline) await sleep(100);
await survivor.close();
const samples = [...recovered.values()];
log(`bullmq recovery: ${samples.length}/${args.recoveryTrials} within 120 s`);

for (const q of [bulk, single, latency, recovery]) {
  await q.obliterate({ force: true });
  await q.close();
}
report('bullmq', args, { enqueueBulk, enqueueSingle, processed, latencies, samples });
process.exit(0);
