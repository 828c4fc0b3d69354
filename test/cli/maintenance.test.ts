import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/db/client.js';
import { maintainTables } from '../../src/db/maintenance.js';
import { GOOGLE_ADWORDS_SCOPE, startGoogleDouble } from '../doubles/index.js';
import { seedConnections, startDaemon } from '../helpers/daemon.js';
import { addAppFor } from '../helpers/flows.js';
import { createVault, DB_KIND, ONCE, type Query } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

/**
 * The planner's statistics and dead rows, which the embedded database (no autovacuum) would never
 * look after, and which a PostgreSQL server looks after only a while after a bulk load.
 */
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function seeded(count: number) {
  const double = await startGoogleDouble();
  cleanups.push(() => double.close());
  const v = await createVault();
  cleanups.push(() => v.destroy());
  const app = await addAppFor(v, 'google_ads', double as never);
  // On PostgreSQL, autovacuum must not get there first during the test (PGlite has none).
  if (DB_KIND === 'postgres') {
    await v.session(async (query) => {
      for (const table of [
        'oauth_tokens_vault',
        'audit_head',
        'credential_access_audit',
        'ad_account_connections',
      ])
        await query(`alter table ${table} set (autovacuum_enabled = false)`);
    });
  }
  // Access tokens valid for two hours: nothing is due, the daemon's sweep finds no work.
  await seedConnections(v, double as never, app.label, app.clientId, GOOGLE_ADWORDS_SCOPE, count, 7200);
  return v;
}

/** What the planner knows of the grants table: rows as of its statistics, and the last manual ANALYZE. */
async function grantStats(query: Query) {
  const [row] = await query<{ rows: number; analyzed: Date | null }>(
    `select c.reltuples::int as rows, s.last_analyze as analyzed
       from pg_class c join pg_stat_user_tables s on s.relid = c.oid where c.relname = 'oauth_tokens_vault'`,
  );
  return row!;
}

/** Until the daemon's /healthz reports a sweep (WAIT_MS at most). */
async function untilFirstSweep(daemon: Awaited<ReturnType<typeof startDaemon>>): Promise<void> {
  await until(
    async () =>
      Boolean((await daemon.get('/healthz')).json<{ last_sweep_at: string | null }>().last_sweep_at),
    { intervalMs: 50 },
  );
}

describe('database maintenance', () => {
  it('gives the planner statistics of a bulk-loaded vault before the daemon first sweeps it', async () => {
    const v = await seeded(400);
    const before = await v.session(grantStats);
    // Never analysed (autovacuum, on PostgreSQL, has not had a minute yet; PGlite has none).
    expect(before.rows).toBeLessThan(0);
    const daemon = await startDaemon(v);
    cleanups.push(() => daemon.stop());
    // The first sweep starts after the maintenance.
    await untilFirstSweep(daemon);
    expect(await daemon.stop()).toBe(0);
    const after = await v.session(grantStats);
    expect(after.rows).toBe(400);
    // On PostgreSQL, a manual ANALYZE (autovacuum's own sets last_autoanalyze); PGlite forgets this
    // counter when it closes, but keeps the statistics.
    if (DB_KIND === 'postgres') expect(after.analyzed).not.toBeNull();
  });

  it('vacuums the embedded database, which has no autovacuum, and only analyses PostgreSQL', async () => {
    const v = await seeded(300);
    const database = await openDatabase({
      url: v.databaseUrl,
      home: v.home,
      lockTimeoutMs: 30_000,
      direct: true,
    });
    try {
      const embedded = database.kind === 'pglite';
      expect(embedded).toBe(DB_KIND === 'pglite');
      // The first pass takes every table that holds rows and has no statistics (on the embedded
      // database, whose counters of dead rows start again at each open, it vacuums them too).
      // The daemon on PostgreSQL first takes the tables its claim reads, the others after.
      const action = embedded ? 'vacuum' : 'analyze';
      expect(await maintainTables(database, embedded, ['oauth_tokens_vault', 'data_keys'])).toEqual([
        { table: 'data_keys', action },
        { table: 'oauth_tokens_vault', action },
      ]);
      const first = await maintainTables(database, embedded);
      expect(first).not.toContainEqual(expect.objectContaining({ table: 'oauth_tokens_vault' }));
      expect(first).toContainEqual({ table: 'audit_head', action });
      expect(await maintainTables(database, embedded)).toEqual([]);
      // Every grant rewritten: 300 rows changed since the first pass, 300 dead rows.
      await database.query("update oauth_tokens_vault set scope = scope || ''");
      const counters = async () => {
        const [row] = await database.query<{ changed: number; dead: number }>(
          "select n_mod_since_analyze as changed, n_dead_tup as dead from pg_stat_user_tables where relname = 'oauth_tokens_vault'",
        );
        return { changed: Number(row!.changed), dead: Number(row!.dead) };
      };
      // Statistics reach the counters within a second or so of the statement (the changes and the
      // dead rows of one statement together).
      await until(async () => (await counters()).changed >= 300, { intervalMs: 100 });
      const { changed, dead } = await counters();
      expect(changed).toBe(300);
      // The first pass vacuumed the embedded database: the update's are its only dead rows. A server's
      // counter also holds the bulk load's (the seeding rewrote each grant it inserted, and the first
      // pass only analysed), less any that page pruning has removed since.
      if (embedded) expect(dead).toBe(300);
      else expect(dead).toBeGreaterThanOrEqual(300);
      const second = await maintainTables(database, embedded);
      if (embedded) {
        expect(second).toEqual([{ table: 'oauth_tokens_vault', action: 'vacuum' }]);
        expect((await counters()).dead).toBe(0);
      } else {
        // Vacuuming is autovacuum's on a server: only the statistics are brought up to date.
        expect(second).toEqual([{ table: 'oauth_tokens_vault', action: 'analyze' }]);
      }
    } finally {
      await database.close();
    }
  });

  it.runIf(DB_KIND === 'postgres')('leaves a table owned by another role to its owner', async () => {
    const v = await seeded(100);
    const role = `credvault_t_other_${process.pid}_${Date.now()}`;
    await v.sql(`create role ${role} login`);
    const url = new URL(v.databaseUrl!);
    url.username = role;
    const database = await openDatabase({ url: url.href, home: v.home, lockTimeoutMs: 30_000, direct: true });
    let after: Awaited<ReturnType<typeof grantStats>>;
    try {
      const steps = await maintainTables(database, false);
      expect(steps).toContainEqual({ table: 'oauth_tokens_vault', action: 'skipped' });
      expect(steps.every((step) => step.action === 'skipped')).toBe(true);
    } finally {
      await database.close();
      after = await v.session(async (query) => {
        await query(`drop role ${role}`);
        return grantStats(query);
      });
    }
    // Nothing was analysed: the owner's pass still finds the grants table without statistics.
    expect(after.rows).toBeLessThan(0);
  });
});

describe('expired OAuth states', () => {
  it.runIf(ONCE)(
    "are purged by the daemon, a removed app's among them, not only when a connect starts",
    async () => {
      const double = await startGoogleDouble();
      cleanups.push(() => double.close());
      const v = await createVault();
      cleanups.push(() => v.destroy());
      for (const label of ['kept', 'gone']) await addAppFor(v, 'google_ads', double as never, { label });
      for (const app of ['kept', 'gone']) {
        const started = await v.cli(['connections', 'start', 'google_ads', '--app', app]);
        expect(started.code, started.stderr).toBe(0);
      }
      // The removed app's state outlives it (bound to no app), pending until it expired two days ago;
      // nobody has started a connect since, which would have purged it.
      expect((await v.cli(['apps', 'remove', 'google_ads/gone'])).code).toBe(0);
      await v.sql("update oauth_states set expires_at = now() - interval '2 days' where app_id is null");
      const states = () =>
        v.sql<{ orphaned: boolean }>(
          'select app_id is null as orphaned from oauth_states order by created_at',
        );
      expect(await states()).toEqual([{ orphaned: false }, { orphaned: true }]);

      const daemon = await startDaemon(v);
      cleanups.push(() => daemon.stop());
      // The first sweep starts after the purge.
      await untilFirstSweep(daemon);
      expect(await daemon.stop()).toBe(0);
      expect(await states()).toEqual([{ orphaned: false }]);
    },
  );
});
