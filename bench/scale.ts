// The commands that read the whole vault, on a vault of 10,000 connections (each with its own grant
// and data key, written straight into the tables like the rotation benchmark's), each against itself
// on the same vault holding one connection: how they grow with the fleet. No targets; these caught
// `key status` (a query per data key) and cli-table3 (quadratic in rows) taking 13–18 s.
import { spawnSync } from 'node:child_process';
import postgres from 'postgres';
import { startGoogleDouble } from '../test/doubles/index.js';
import { BIN, median, prepareVault, ratio, scratchDatabase, scratchHome, timeRun } from './lib.js';
import { seed } from './rotation.js';

const CONNECTIONS = 10_000;

const COMMANDS = [
  ['connections', 'list', '--json'],
  ['connections', 'list'],
  ['status', '--json'],
  ['status'],
  ['key', 'status', '--json'],
  ['key', 'status'],
];

export async function scale() {
  const rows: Array<[string, number, string, string?]> = [];
  const pg = await scratchDatabase();
  if (!pg) return { title: 'Whole-vault commands (skipped: PostgreSQL not reachable)', rows };
  const double = await startGoogleDouble({ accessTokenTtlSeconds: 3600 });
  const { home, env, cleanup } = scratchHome(pg.url);
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  const time = (args: string[], runs: number) =>
    median(Array.from({ length: runs }, () => timeRun([BIN, ...args], env)));
  try {
    await prepareVault(env, double);
    const one = COMMANDS.map((args) => time(args, 5));
    const [app] = await sql<Array<{ id: string }>>`select id from oauth_app_credentials`;
    await seed(sql, home, app!.id, CONNECTIONS - 1);
    await sql`
      insert into ad_account_connections (id, platform, app_id, token_id, external_account_id, account_name, connected_by)
      select gen_random_uuid(), 'google_ads', t.app_id, t.id, (2000000000 + row_number() over ())::text, 'Account ' || row_number() over (), 'bench'
      from oauth_tokens_vault t where not exists (select 1 from ad_account_connections c where c.token_id = t.id)`;
    await sql`vacuum analyze`;
    const [{ n }] = (await sql`select count(*)::int as n from ad_account_connections`) as unknown as [
      { n: number },
    ];
    if (n !== CONNECTIONS) throw new Error(`seeded ${n} connections, not ${CONNECTIONS}`);
    const check = spawnSync(process.execPath, [BIN, 'connections', 'list', '--json'], {
      env,
      encoding: 'utf8',
      maxBuffer: 1 << 30,
    });
    if ((JSON.parse(check.stdout) as unknown[]).length !== CONNECTIONS)
      throw new Error('connections list lost rows');
    COMMANDS.forEach((args, i) => {
      const many = time(args, 3);
      rows.push([`${args.join(' ')} (one connection)`, one[i]!, '1.00×']);
      rows.push([`${args.join(' ')} (${CONNECTIONS.toLocaleString('en')})`, many, ratio(many, one[i]!)]);
    });
  } finally {
    await sql.end();
    await double.close();
    await pg.drop();
    cleanup();
  }
  return {
    title: `Whole-vault commands, ${CONNECTIONS.toLocaleString('en')} connections (PostgreSQL)`,
    rows,
  };
}
