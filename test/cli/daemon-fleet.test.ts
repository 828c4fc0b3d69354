import { chmodSync, copyFileSync, mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GOOGLE_ADWORDS_SCOPE, startGoogleDouble } from '../doubles/index.js';
import { seedConnections, startDaemon } from '../helpers/daemon.js';
import { addAppFor } from '../helpers/flows.js';
import { createVault, DB_KIND, type TestVault } from '../helpers/vault.js';
import { until } from '../helpers/wait.js';

/**
 * Several daemons on several hosts share one PostgreSQL: they split the sweep without a leader and
 * without refreshing anything twice; one that dies mid-sweep leaves leases that lapse, and the
 * others finish. (The embedded database is one process's by design: this is PostgreSQL only.)
 */
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function fleet(count: number) {
  const double = await startGoogleDouble();
  cleanups.push(() => double.close());
  const v = await createVault();
  cleanups.push(() => v.destroy());
  const app = await addAppFor(v, 'google_ads', double as never);
  await seedConnections(v, double as never, app.label, app.clientId, GOOGLE_ADWORDS_SCOPE, count, 120);
  // Every grant was refreshed long ago and expires in two minutes: all are due.
  await v.sql("update oauth_tokens_vault set last_refreshed_at = now() - interval '58 minutes'");
  return { double, v };
}

/** Another host of the fleet: its own CREDVAULT_HOME, holding the vault's master key. */
function host(v: TestVault, name: string): Record<string, string> {
  const home = join(v.root, `host-${name}`);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  copyFileSync(join(v.home, 'master.key'), join(home, 'master.key'));
  chmodSync(join(home, 'master.key'), 0o600);
  return { CREDVAULT_HOME: home };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits (WAIT_MS at most) until the platform has seen `count` refresh requests since `before`. */
async function untilRefreshes(double: { refreshAttempts: number }, before: number, count: number) {
  await until(() => double.refreshAttempts - before >= count);
}

describe.runIf(DB_KIND === 'postgres')('a fleet of daemons on one PostgreSQL', () => {
  it('refreshes 200 expiring connections exactly once between two daemons', async () => {
    const { double, v } = await fleet(200);
    double.faults.latencyMs = 20;
    const before = double.refreshAttempts;
    const args = ['--concurrency', '8', '--refresh-window', '30m'];
    const [a, b] = await Promise.all([
      startDaemon(v, { args, name: 'a', env: host(v, 'a') }),
      startDaemon(v, { args, name: 'b', env: host(v, 'b') }),
    ]);
    cleanups.push(
      () => a.stop(),
      () => b.stop(),
    );
    await untilRefreshes(double, before, 200);
    await sleep(500); // would a double refresh show up late?
    expect(double.refreshAttempts - before).toBe(200);
    // Each grant once: 200 distinct refresh tokens were presented.
    const presented = double
      .tokenRequests('refresh_token')
      .slice(before)
      .map((r) => r.form?.get('refresh_token'));
    expect(new Set(presented).size).toBe(200);
    const rows = await v.sql<{ version: number; lease_owner: string | null }>(
      'select version, lease_owner from oauth_tokens_vault',
    );
    expect(rows.every((r) => r.version === 2 && r.lease_owner === null)).toBe(true);
    // Both daemons took part, and between them refreshed each grant once.
    const by = await v.sql<{ by: string; n: number }>(
      "select detail->>'by' as by, count(*)::int as n from credential_access_audit where action = 'token.refresh' and outcome = 'success' group by 1",
    );
    expect(by.map((r) => r.by).sort()).toEqual(
      [`${hostname()}:${a.child.pid}`, `${hostname()}:${b.child.pid}`].sort(),
    );
    expect(by.reduce((sum, r) => sum + r.n, 0)).toBe(200);
    expect(await a.stop()).toBe(0);
    expect(await b.stop()).toBe(0);
    expect(a.logs()).not.toMatch(/failed unexpectedly/);
  });

  it('lets a second daemon finish the work of one killed mid-sweep, and a restart finds nothing stuck', async () => {
    const { double, v } = await fleet(120);
    double.faults.latencyMs = 100;
    const before = double.refreshAttempts;
    // A short platform deadline makes the lease short (2 × 1 s + 10 s), so the test need not wait long.
    const env = { CREDVAULT_HTTP_TIMEOUT: '1' };
    const a = await startDaemon(v, { args: ['--concurrency', '4'], env, name: 'a' });
    await untilRefreshes(double, before, 30);
    a.child.kill('SIGKILL');
    await a.exited;
    const done = double.refreshAttempts - before;
    expect(done).toBeGreaterThanOrEqual(30);
    expect(done).toBeLessThan(120);
    const b = await startDaemon(v, { args: ['--concurrency', '8', '--interval', '2s'], env, name: 'b' });
    cleanups.push(() => b.stop());
    await until(
      async () => {
        const [row] = await v.sql<{ n: number }>(
          'select count(*)::int as n from oauth_tokens_vault where version < 2',
        );
        return row!.n === 0;
      },
      { intervalMs: 250 },
    );
    const rows = await v.sql<{ version: number; in_flight: string | null }>(
      'select version, refresh_in_flight_since as in_flight from oauth_tokens_vault',
    );
    expect(rows.filter((r) => r.version < 2)).toEqual([]);
    expect(await b.stop()).toBe(0);
    // Restart: every lease is free, nothing is marked in flight, every connection is active.
    const c = await startDaemon(v, { args: ['--concurrency', '8'], env, name: 'c' });
    cleanups.push(() => c.stop());
    await sleep(1000);
    const [stuck] = await v.sql<{ leased: number; in_flight: number; inactive: number }>(`
      select count(*) filter (where lease_expires_at > now())::int as leased,
             count(*) filter (where refresh_in_flight_since is not null)::int as in_flight,
             (select count(*)::int from ad_account_connections where status <> 'active') as inactive
      from oauth_tokens_vault`);
    expect(stuck).toEqual({ leased: 0, in_flight: 0, inactive: 0 });
    expect(await c.stop()).toBe(0);
  });

  it('stopped with SIGTERM mid-sweep, stores what it sent and hands back at once the claims it never sent', async () => {
    const { double, v } = await fleet(60);
    double.faults.latencyMs = 300;
    const before = double.refreshAttempts;
    // Concurrency 4 claims a round ahead: 8 grants claimed, 4 of them waiting for a slot.
    const a = await startDaemon(v, { args: ['--concurrency', '4'], name: 'a' });
    await untilRefreshes(double, before, 6);
    expect(await a.stop()).toBe(0);
    const sent = double.refreshAttempts - before;
    const rows = await v.sql<{ version: number; lease_owner: string | null; in_flight: string | null }>(
      'select version, lease_owner, refresh_in_flight_since as in_flight from oauth_tokens_vault',
    );
    // Every refresh that left was answered and stored; nothing else was touched or left leased.
    expect(rows.filter((r) => r.version === 2)).toHaveLength(sent);
    expect(sent).toBeLessThan(60);
    expect(rows.filter((r) => r.lease_owner !== null || r.in_flight !== null)).toEqual([]);
  });

  it('gives back the claims waiting for a slot at once on SIGTERM, while a stalled refresh still runs', async () => {
    const { double, v } = await fleet(20);
    double.faults.latencyMs = 6_000;
    const before = double.refreshAttempts;
    // Concurrency 2: two refreshes stall at the platform, two more claims wait for a slot.
    const a = await startDaemon(v, { args: ['--concurrency', '2'], name: 'a' });
    await untilRefreshes(double, before, 2);
    const leased = async () =>
      (
        await v.sql<{ n: number }>(
          'select count(*)::int as n from oauth_tokens_vault where lease_owner is not null',
        )
      )[0]!.n;
    expect(await leased()).toBe(4);
    a.child.kill('SIGTERM');
    await sleep(1_000);
    // The two refreshes in flight still hold their leases; the two that were never sent are free.
    expect(await leased()).toBe(2);
    expect(await a.exited).toBe(0);
    expect(double.refreshAttempts - before).toBe(2);
  });
});
