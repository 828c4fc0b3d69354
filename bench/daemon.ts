// The daemon's token endpoint under 50 concurrent connections, against a bare node:http server
// answering a constant JSON document in the same run; and a sweep of 10,000 expiring connections
// against the Google Ads double (20 ms latency, concurrency 32): on PostgreSQL (fleet work), then on
// the embedded database (no target there; it shows what a team without PostgreSQL gets).
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { GOOGLE_ADWORDS_SCOPE, startGoogleDouble } from '../test/doubles/index.js';
import { seedConnections } from '../test/helpers/daemon.js';
import { BIN, prepareVault, runCli, scratchDatabase, scratchHome } from './lib.js';

async function waitHealthy(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the daemon did not become healthy');
}

/** CPU seconds (user + system) a process has used so far, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

async function load(url: string, headers: Record<string, string>) {
  const result = await autocannon({
    url,
    connections: 50,
    duration: 8,
    headers,
    warmup: { connections: 50, duration: 2 },
  } as autocannon.Options);
  if (result.non2xx || result.errors)
    throw new Error(`${result.non2xx} non-2xx answers, ${result.errors} errors from ${url}`);
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99 };
}

/** The mean size of the daemon's audit batches so far, from its own /metrics. */
async function meanAuditBatch(port: number, token: string): Promise<string> {
  const text = await fetch(`http://127.0.0.1:${port}/metrics`, {
    headers: { authorization: `Bearer ${token}` },
  }).then((r) => r.text());
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  const count = value('credvault_audit_batch_size_count');
  return `${(value('credvault_audit_batch_size_sum') / count).toFixed(1)} rows (${count} batches)`;
}

const BARE = `
const http = require('node:http');
const body = JSON.stringify({ access_token: 'x'.repeat(48), token_type: 'Bearer', expires_at: new Date().toISOString() });
http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }); res.end(body); })
  .listen(Number(process.argv[1]), '127.0.0.1', () => console.log('ready'));
`;

/**
 * `credvault daemon` on 127.0.0.1:`port` at concurrency 32. CREDVAULT_BENCH_PROFILE=DIR writes its CPU
 * profile to DIR + `profileSub` (for looking, not for figures).
 */
function spawnDaemon(
  env: Record<string, string | undefined>,
  port: number,
  profileSub: string,
): ChildProcess {
  const profile = process.env.CREDVAULT_BENCH_PROFILE;
  return spawn(
    process.execPath,
    [
      ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}${profileSub}`] : []),
      BIN,
      'daemon',
      '--listen',
      `127.0.0.1:${port}`,
      '--concurrency',
      '32',
    ],
    { env: env as NodeJS.ProcessEnv },
  );
}

export async function daemon() {
  const rows: Array<[string, number | string, string, string?]> = [];
  const pg = await scratchDatabase();
  if (!pg) return { title: 'Daemon (skipped: PostgreSQL not reachable)', rows };
  const double = await startGoogleDouble({ accessTokenTtlSeconds: 3600 });
  const { root, home, env, cleanup } = scratchHome(pg.url);
  const children: ChildProcess[] = [];
  try {
    await prepareVault(env, double);
    const token = (await runCli(['clients', 'create', 'bench', '--all'], env)).trim();

    // Endpoint throughput: bare node:http first, then the daemon, same machine, same run.
    const barePort = 28000 + Math.floor(Math.random() * 1000);
    const bare = spawn(process.execPath, ['-e', BARE, String(barePort)]);
    children.push(bare);
    await new Promise((resolve) => bare.stdout.once('data', resolve));
    const baseline = await load(`http://127.0.0.1:${barePort}/`, {});
    bare.kill();
    const port = barePort + 1;
    const d = spawnDaemon(env, port, '');
    children.push(d);
    await waitHealthy(port);
    const served = await load(`http://127.0.0.1:${port}/v1/connections/bench/token`, {
      authorization: `Bearer ${token}`,
    });
    rows.push([
      'bare node:http, constant JSON (baseline)',
      `${baseline.rps.toFixed(0)} req/s`,
      '1.00×',
      `p50 ${baseline.p50} ms, p99 ${baseline.p99} ms`,
    ]);
    rows.push([
      'token endpoint, audit on (50 connections)',
      `${served.rps.toFixed(0)} req/s`,
      `${(served.rps / baseline.rps).toFixed(2)}×`,
      `p50 ${served.p50} ms, p99 ${served.p99} ms (targets ≥ 0.50×, p99 ≤ 10 ms)`,
    ]);
    rows.push([
      'token endpoint: mean audit batch',
      await meanAuditBatch(port, token),
      '',
      '(rows per statement)',
    ]);
    d.kill('SIGTERM');
    await new Promise((resolve) => d.on('close', resolve));

    rows.push(...(await sweep(env, double, home, root, port + 1, 'PostgreSQL')));
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await pg.drop().catch(() => {});
    cleanup();
  }

  // The same sweep on the embedded database (a vault of its own, no DATABASE_URL): what a team
  // without PostgreSQL gets, and what the embedded daemon's memory settings are judged by.
  const embedded = scratchHome();
  try {
    await prepareVault(embedded.env, double);
    rows.push(
      ...(await sweep(
        embedded.env,
        double,
        embedded.home,
        embedded.root,
        28000 + Math.floor(Math.random() * 1000),
        'embedded',
      )),
    );
  } finally {
    embedded.cleanup();
    await double.close();
  }
  return { title: 'Daemon (endpoint on PostgreSQL; sweep on both databases)', rows };
}

/**
 * One daemon at concurrency 32 sweeping 10,000 connections that expire in two minutes, against
 * the Google Ads double answering in 20 ms: refreshes per second (start-up included) against the
 * ideal 32 / 20 ms, platform calls (exactly one per connection), peak RSS and CPU per refresh.
 */
async function sweep(
  env: Record<string, string | undefined>,
  double: Awaited<ReturnType<typeof startGoogleDouble>>,
  home: string,
  root: string,
  port: number,
  database: string,
): Promise<Array<[string, number | string, string, string?]>> {
  const count = Number(process.env.CREDVAULT_BENCH_SWEEP ?? 10_000);
  const client = double.defaultClient!;
  // seedConnections writes each grant as last refreshed 58 minutes ago, expiring in 120 s.
  await seedConnections(
    { env: { ...env }, home, root } as never,
    double as never,
    'bench',
    client.clientId,
    GOOGLE_ADWORDS_SCOPE,
    count,
    120,
  );
  const latency = double.faults.latencyMs;
  double.faults.latencyMs = 20;
  const before = double.refreshAttempts;
  const started = Date.now();
  const sweeper = spawnDaemon(env, port, `/sweep-${database}`);
  let rss = 0;
  let cpu = 0;
  try {
    while (double.refreshAttempts - before < count) {
      await new Promise((r) => setTimeout(r, 100));
      if (sweeper.pid) rss = Math.max(rss, peakRssMb(sweeper.pid));
      if (sweeper.pid) cpu = cpuSeconds(sweeper.pid);
      if (Date.now() - started > 600_000) break;
    }
    const seconds = (Date.now() - started) / 1000;
    // A second more: a refresh sent twice would show here.
    await new Promise((r) => setTimeout(r, 1000));
    const calls = double.refreshAttempts - before;
    if (sweeper.pid) rss = Math.max(rss, peakRssMb(sweeper.pid));
    const rate = count / seconds;
    return [
      [`sweep (${database}): ideal (32 at once × 1 / 20 ms)`, '1600 refreshes/s', '1.00×'],
      [
        `sweep (${database}) of ${count} connections`,
        `${rate.toFixed(0)} refreshes/s`,
        `${(rate / 1600).toFixed(2)}×`,
        database === 'PostgreSQL' ? 'target ≥ 0.80× (start-up included)' : '(start-up included; no target)',
      ],
      [
        `sweep (${database}): platform calls`,
        String(calls),
        calls === count ? 'exact' : 'NOT EXACT',
        `expected ${count}`,
      ],
      [
        `sweep (${database}): daemon peak RSS`,
        `${rss.toFixed(0)} MB`,
        '',
        database === 'PostgreSQL' ? 'target ≤ 200 MB' : '(PostgreSQL in Wasm included; no target)',
      ],
      [
        `sweep (${database}): daemon CPU per refresh`,
        `${((cpu / count) * 1e6).toFixed(0)} µs`,
        '',
        '(start-up included)',
      ],
    ];
  } finally {
    double.faults.latencyMs = latency;
    sweeper.kill('SIGTERM');
    await new Promise((resolve) => sweeper.on('close', resolve));
  }
}
