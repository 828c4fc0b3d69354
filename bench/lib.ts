// Shared pieces of the benchmarks: spawning the built binary, medians, a scratch database.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

export const BIN = fileURLToPath(new URL('../bin/credvault', import.meta.url));

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Wall time of one process run, in milliseconds. */
export function timeRun(args: string[], env: NodeJS.ProcessEnv): number {
  const start = process.hrtime.bigint();
  const result = spawnSync(process.execPath, args, { env, encoding: 'utf8', maxBuffer: 1 << 30 });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (result.status !== 0) throw new Error(`${args.join(' ')} failed: ${result.stderr}`);
  return ms;
}

/**
 * Median wall times of several commands run in turn (a, b, c, a, b, c, …), so that the machine's
 * drift during the measurement (on a shared virtual machine, tens of percent within minutes) touches
 * each of them alike: a baseline measured before or after the others would not be comparable.
 */
export function medianRuns(
  commands: Array<{ args: string[]; env: NodeJS.ProcessEnv }>,
  runs = 15,
  warmup = 2,
): number[] {
  const times = commands.map(() => [] as number[]);
  for (let i = 0; i < warmup + runs; i++) {
    commands.forEach(({ args, env }, c) => {
      const ms = timeRun(args, env);
      if (i >= warmup) times[c]!.push(ms);
    });
  }
  return times.map(median);
}

export function machine() {
  const cpu = cpus();
  return `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
}

/**
 * A scratch folder: `home` is the vault's data folder inside it, and `env` the environment of a
 * credvault process on that vault (and on `databaseUrl`, when given).
 */
export function scratchHome(databaseUrl?: string) {
  const root = mkdtempSync(join(tmpdir(), 'credvault-bench-'));
  const home = join(root, 'home');
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    HOME: root,
    CREDVAULT_HOME: home,
    NO_COLOR: '1',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
  };
  return { root, home, env, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** A fresh PostgreSQL database for a benchmark, or null when none is reachable. */
export async function scratchDatabase() {
  const base =
    process.env.CREDVAULT_BENCH_DATABASE_URL ??
    process.env.CREDVAULT_TEST_DATABASE_URL ??
    'postgres://postgres@127.0.0.1:5432/postgres';
  const name = `credvault_bench_${process.pid}_${Date.now()}`;
  const admin = postgres(base, { max: 1, onnotice: () => {}, connect_timeout: 3 });
  try {
    await admin.unsafe(`create database ${name}`);
  } catch (error) {
    await admin.end().catch(() => {});
    console.log(
      `  (PostgreSQL not reachable at ${base.replace(/:[^:@/]*@/, '@')}: ${(error as { code?: string }).code ?? (error as Error).message}; PostgreSQL figures skipped)`,
    );
    return null;
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

export function ratio(value: number, baseline: number): string {
  return `${(value / baseline).toFixed(2)}×`;
}

/** Runs credvault without blocking this process (which may also serve a platform double). */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv | Record<string, string | undefined>,
  input = '',
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: env as NodeJS.ProcessEnv });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.stdin.end(input);
    child.on('close', (code) =>
      code === 0 ? resolve(stdout) : reject(new Error(`credvault ${args.join(' ')}: ${stderr}`)),
    );
  });
}

/** A vault with an app pointed at a Google Ads double and one connection, `bench`, adopted from it. */
export async function prepareVault(
  env: NodeJS.ProcessEnv | Record<string, string | undefined>,
  double: {
    defaultClient: { clientId: string; clientSecret: string | null } | null;
    endpoints: { authorize: string; token: string; revoke: string | null };
    url: string;
    issueGrant(o: { clientId: string; scope: string }): { refreshToken: string };
  },
): Promise<void> {
  await runCli(['init', '--json'], env);
  const client = double.defaultClient!;
  const app = {
    label: 'bench',
    client_id: client.clientId,
    client_secret: client.clientSecret,
    authorize_url: double.endpoints.authorize,
    token_url: double.endpoints.token,
    revoke_url: double.endpoints.revoke,
    api_base_url: double.url,
  };
  await runCli(['apps', 'add', 'google_ads', '--from-file', '-', '--json'], env, JSON.stringify(app));
  const grant = double.issueGrant({
    clientId: client.clientId,
    scope: 'https://www.googleapis.com/auth/adwords',
  });
  await runCli(
    [
      'connections',
      'add',
      'google_ads',
      '--app',
      'bench',
      '--account',
      '1234567890',
      '--name',
      'bench',
      '--refresh-token-file',
      '-',
    ],
    env,
    grant.refreshToken,
  );
}
