// `credvault token get` on a valid token against bare `node -e 0`, median wall time, on PostgreSQL
// and on the embedded database. The token comes from the Google Ads double, adopted once.
import { startGoogleDouble } from '../test/doubles/index.js';
import { BIN, medianRun, prepareVault, ratio, scratchDatabase, scratchHome } from './lib.js';

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
      await pg.drop();
    }
    const env = { ...base, CREDVAULT_HOME: `${home}-embedded` };
    await prepareVault(env, double);
    const value = medianRun([BIN, 'token', 'get', 'bench'], env, Math.min(runs, 7), 1);
    rows.push(['token get, valid token (embedded)', value, ratio(value, bare), '(no target)']);
  } finally {
    cleanup();
    await double.close();
  }
  return { title: '`credvault token get` (median wall time)', rows };
}
