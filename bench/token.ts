// `credvault token get` on a valid token against bare `node -e 0`, median wall time, on PostgreSQL
// and on the embedded database. The token comes from the Google Ads double, adopted once.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startGoogleDouble } from '../test/doubles/index.js';
import { BIN, medianRuns, prepareVault, ratio, scratchDatabase, scratchHome } from './lib.js';

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
    // Each figure is taken in turn with bare node (see medianRuns), and compared with that baseline.
    const withBare = (env: NodeJS.ProcessEnv, n = runs, warmup = 2) =>
      medianRuns(
        [
          { args: ['-e', '0'], env: base },
          { args: [BIN, 'token', 'get', 'bench'], env },
        ],
        n,
        warmup,
      ) as [number, number];
    const pg = await scratchDatabase();
    // The first baseline is shown; each figure's ratio is to its own.
    const baseline = (bare: number) => {
      if (!rows.length) rows.push(['node -e 0 (baseline)', bare, '1.00×']);
    };
    if (pg) {
      const env = { ...base, CREDVAULT_HOME: `${home}-pg`, DATABASE_URL: pg.url };
      await prepareVault(env, double);
      const [bare, value] = withBare(env);
      baseline(bare);
      rows.push(['token get, valid token (PostgreSQL)', value, ratio(value, bare), '≤ 1.5×']);
      const [bareD, viaDaemon] = await withDaemon(env, () => withBare(env));
      rows.push([
        'token get, daemon running (PostgreSQL)',
        viaDaemon,
        ratio(viaDaemon, bareD),
        '(fast path)',
      ]);
      await pg.drop();
    }
    const env = { ...base, CREDVAULT_HOME: `${home}-embedded` };
    await prepareVault(env, double);
    const [bare, value] = withBare(env, Math.min(runs, 7), 1);
    baseline(bare);
    rows.push(['token get, valid token (embedded)', value, ratio(value, bare), '(no target)']);
    const [bareD, viaDaemon] = await withDaemon(env, () => withBare(env));
    rows.push(['token get, daemon running (embedded)', viaDaemon, ratio(viaDaemon, bareD), '(fast path)']);
  } finally {
    cleanup();
    await double.close();
  }
  return { title: '`credvault token get` (median wall time, each taken in turn with its baseline)', rows };
}
