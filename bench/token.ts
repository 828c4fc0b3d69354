// `credvault token get` on a valid token against bare `node -e 0`, median wall time, on PostgreSQL
// and on the embedded database. The token comes from the Google Ads double, adopted once.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startGoogleDouble } from '../test/doubles/index.js';
import { BIN, medianRun, prepareVault, ratio, scratchDatabase, scratchHome } from './lib.js';

/** Runs `measure` while a daemon serves the vault (token get then takes its fast path). */
async function withDaemon<T>(env: Record<string, string | undefined>, measure: () => T): Promise<T> {
  const daemon = spawn(
    process.execPath,
    [BIN, 'daemon', '--listen', `unix:${env.CREDVAULT_HOME}/bench.sock`],
    {
      env: env as NodeJS.ProcessEnv,
    },
  );
  try {
    for (let i = 0; i < 300 && !existsSync(`${env.CREDVAULT_HOME}/run/daemon.json`); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    return measure();
  } finally {
    daemon.kill('SIGTERM');
    await new Promise((resolve) => daemon.on('close', resolve));
  }
}

export async function token({ runs = 15 } = {}) {
  const rows: Array<[string, number, string, string?]> = [];
  const double = await startGoogleDouble({ accessTokenTtlSeconds: 3600 });
  const { home, cleanup } = scratchHome();
  const base = { PATH: process.env.PATH, HOME: home, NO_COLOR: '1' };
  try {
    const bare = medianRun(['-e', '0'], base, runs);
    rows.push(['node -e 0 (baseline)', bare, '1.00×']);
    const pg = await scratchDatabase();
    if (pg) {
      const env = { ...base, CREDVAULT_HOME: `${home}-pg`, DATABASE_URL: pg.url };
      await prepareVault(env, double);
      const value = medianRun([BIN, 'token', 'get', 'bench'], env, runs);
      rows.push(['token get, valid token (PostgreSQL)', value, ratio(value, bare), '≤ 1.5×']);
      const viaDaemon = await withDaemon(env, () => medianRun([BIN, 'token', 'get', 'bench'], env, runs));
      rows.push(['token get, daemon running (PostgreSQL)', viaDaemon, ratio(viaDaemon, bare), '(fast path)']);
      await pg.drop();
    }
    const env = { ...base, CREDVAULT_HOME: `${home}-embedded` };
    await prepareVault(env, double);
    const value = medianRun([BIN, 'token', 'get', 'bench'], env, Math.min(runs, 7), 1);
    rows.push(['token get, valid token (embedded)', value, ratio(value, bare), '(no target)']);
    const viaDaemon = await withDaemon(env, () => medianRun([BIN, 'token', 'get', 'bench'], env, runs));
    rows.push(['token get, daemon running (embedded)', viaDaemon, ratio(viaDaemon, bare), '(fast path)']);
  } finally {
    cleanup();
    await double.close();
  }
  return { title: '`credvault token get` (median wall time)', rows };
}
