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
