// Cold start of `credvault --version` and `credvault platforms list --json` against bare `node -e 0`,
// median of several runs each, taken in turn with the baseline, on PostgreSQL and on the embedded
// database.
import { BIN, medianRuns, ratio, runCli, scratchDatabase, scratchHome } from './lib.js';

export async function startup({ runs = 15 } = {}) {
  const rows = [];
  const { home, cleanup } = scratchHome();
  const baseEnv = { PATH: process.env.PATH, HOME: home, CREDVAULT_HOME: home, NO_COLOR: '1' };
  try {
    const pg = await scratchDatabase();
    const pgEnv = pg ? { ...baseEnv, DATABASE_URL: pg.url } : null;
    if (pgEnv) await runCli(['init', '--json'], pgEnv);
    const [bare, version, list] = medianRuns(
      [
        { args: ['-e', '0'], env: baseEnv },
        { args: [BIN, '--version'], env: baseEnv },
        ...(pgEnv ? [{ args: [BIN, 'platforms', 'list', '--json'], env: pgEnv }] : []),
      ],
      runs,
    );
    rows.push(['node -e 0 (baseline)', bare!, '1.00×']);
    rows.push(['credvault --version', version!, ratio(version!, bare!), '≤ 1.3×']);
    if (pg) {
      rows.push(['platforms list --json (PostgreSQL)', list!, ratio(list!, bare!), '≤ 1.5×']);
      await pg.drop();
    }
    const embeddedEnv = { ...baseEnv, CREDVAULT_HOME: `${home}-embedded` };
    await runCli(['init', '--json'], embeddedEnv);
    const [bareAgain, embedded] = medianRuns(
      [
        { args: ['-e', '0'], env: baseEnv },
        { args: [BIN, 'platforms', 'list', '--json'], env: embeddedEnv },
      ],
      Math.min(runs, 7),
      1,
    );
    rows.push(['platforms list --json (embedded)', embedded!, ratio(embedded!, bareAgain!), '(no target)']);
  } finally {
    cleanup();
  }
  return { title: 'Cold start (median wall time, each taken in turn with its baseline)', rows };
}
