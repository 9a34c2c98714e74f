// Shared by the peer benchmarks: arguments, clocks and percentiles, printed the way
// `coinsensei bench queue --json` prints them.

export function parseArgs() {
  const args = { jobs: 50000, concurrency: 50, recoveryTrials: 20, redisUrl: 'redis://127.0.0.1:6379/', pgUrl: 'postgres://postgres@127.0.0.1:5432/postgres' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (key === '--jobs') args.jobs = Number(value);
    else if (key === '--concurrency') args.concurrency = Number(value);
    else if (key === '--recovery-trials') args.recoveryTrials = Number(value);
    else if (key === '--redis-url') args.redisUrl = value;
    else if (key === '--postgres-url') args.pgUrl = value;
    else if (key === '--doomed') args.doomed = value;
    else throw new Error(`unknown argument ${key}`);
  }
  return args;
}

/** Milliseconds since the epoch, with sub-millisecond precision. */
export const nowMs = () => performance.timeOrigin + performance.now();

export function percentile(samples, p) {
  const sorted = [...samples].sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const round2 = (x) => (x === null ? null : Math.round(x * 100) / 100);

export function log(message) {
  process.stderr.write(`${message}\n`);
}

/** Prints the one JSON line `cargo xtask bench queue` reads, with the keys of
 * `coinsensei bench queue --json`. `jobs_lost` counts trials not recovered within the cap. */
export function report(backend, args, { enqueueBulk, enqueueSingle, processed, latencies, samples }) {
  console.log(JSON.stringify({
    backend,
    jobs: args.jobs,
    concurrency: args.concurrency,
    enqueue_bulk_per_s: Math.round(enqueueBulk),
    enqueue_single_per_s: Math.round(enqueueSingle),
    processed_per_s: Math.round(processed),
    latency_p50_ms: round2(percentile(latencies, 50)),
    latency_p99_ms: round2(percentile(latencies, 99)),
    recovery_p50_s: round2(percentile(samples, 50)),
    recovery_p99_s: samples.length === args.recoveryTrials ? round2(percentile(samples, 99)) : null,
    recovery_trials: args.recoveryTrials,
    jobs_lost: args.recoveryTrials - samples.length,
  }));
}
