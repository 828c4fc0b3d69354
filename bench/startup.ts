// Cold start of `credvault --version` and `credvault platforms list --json` against bare `node -e 0`,
// median of several runs each, on PostgreSQL and on the embedded database.
import { spawnSync } from 'node:child_process';
import { BIN, medianRun, ratio, scratchDatabase, scratchHome } from './lib.js';

export async function startup({ runs = 15 } = {}) {
  const rows = [];
  const { home, cleanup } = scratchHome();
  const baseEnv = { PATH: process.env.PATH, HOME: home, CREDVAULT_HOME: home, NO_COLOR: '1' };
  try {
    const bare = medianRun(['-e', '0'], baseEnv, runs);
    rows.push(['node -e 0 (baseline)', bare, '1.00×']);
    const version = medianRun([BIN, '--version'], baseEnv, runs);
    rows.push(['credvault --version', version, ratio(version, bare), '≤ 1.3×']);

    const pg = await scratchDatabase();
    if (pg) {
      const env = { ...baseEnv, DATABASE_URL: pg.url };
      const init = spawnSync(process.execPath, [BIN, 'init', '--json'], { env, encoding: 'utf8' });
      if (init.status !== 0) throw new Error(init.stderr);
      const list = medianRun([BIN, 'platforms', 'list', '--json'], env, runs);
      rows.push(['platforms list --json (PostgreSQL)', list, ratio(list, bare), '≤ 1.5×']);
      await pg.drop();
    }
    const embeddedHome = `${home}-embedded`;
    const env = { ...baseEnv, CREDVAULT_HOME: embeddedHome };
    const init = spawnSync(process.execPath, [BIN, 'init', '--json'], { env, encoding: 'utf8' });
    if (init.status !== 0) throw new Error(init.stderr);
    const embedded = medianRun([BIN, 'platforms', 'list', '--json'], env, Math.min(runs, 7), 1);
    rows.push(['platforms list --json (embedded)', embedded, ratio(embedded, bare), '(no target)']);
  } finally {
    cleanup();
  }
  return { title: 'Cold start (median wall time)', rows };
}
