import { afterEach, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import type { Db } from '../../src/db/client.js';
import { openContext } from '../../src/services/context.js';
import { createVault, DB_KIND } from '../helpers/vault.js';

/**
 * `ctx.db` is the transaction while one runs (what the keyring reads through, for one: on the embedded
 * database a read beside the transaction would wait for it forever), and the database outside. The
 * lookup is switched off between transactions; it must come back whole for the next one.
 */
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('the service context', () => {
  it('gives each transaction its own handle across awaits, nested ones included, round after round', async () => {
    const v = await createVault();
    cleanups.push(() => v.destroy());
    const ctx = await openContext(resolveConfig({}, { ...v.env } as NodeJS.ProcessEnv));
    cleanups.push(() => ctx.close());
    const outside = ctx.db;
    expect(outside).toBe(ctx.database.db);

    for (let round = 0; round < 3; round++) {
      const seen: string[] = [];
      const inside = (name: string, tx: Db) => async () => {
        await tick();
        expect(ctx.db, name).toBe(tx);
        await ctx.db.execute('select 1');
        await Promise.resolve().then(() => expect(ctx.db, name).toBe(tx));
        seen.push(name);
      };
      await ctx.transaction(async (a) => {
        await inside('a', a)();
        await ctx.transaction(async (savepoint) => {
          expect(savepoint).not.toBe(a);
          await inside('savepoint', savepoint)();
        });
        expect(ctx.db).toBe(a);
        await inside('a again', a)();
      });
      expect(ctx.db).toBe(outside);
      if (DB_KIND === 'postgres') {
        // Two at once on PostgreSQL (the embedded database has one connection): one ending does not
        // take the other's handle away.
        let releaseSlow!: () => void;
        let slowStarted!: () => void;
        const slowMayFinish = new Promise<void>((r) => (releaseSlow = r));
        const started = new Promise<void>((r) => (slowStarted = r));
        const slow = ctx.transaction(async (s) => {
          await inside('slow', s)();
          slowStarted();
          await slowMayFinish;
          await inside('slow after quick', s)();
        });
        await started;
        await ctx.transaction(async (q) => inside('quick', q)());
        releaseSlow();
        await slow;
        expect(seen).toEqual(['a', 'savepoint', 'a again', 'slow', 'quick', 'slow after quick']);
      } else {
        expect(seen).toEqual(['a', 'savepoint', 'a again']);
      }
      expect(ctx.db).toBe(outside);
      await tick();
      expect(ctx.db).toBe(outside);
    }
  });
});
