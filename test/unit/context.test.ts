import { describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import type { Database, Db } from '../../src/db/client.js';
import { ServiceContext } from '../../src/services/context.js';

/**
 * The transaction lookup's bookkeeping, on a stand-in database whose transactions may overlap (the
 * embedded database's cannot, so test/cli/context.test.ts covers this on PostgreSQL only): one
 * transaction ending, or failing, never takes another's handle away.
 */
const tick = () => new Promise((r) => setTimeout(r, 2));

function standIn(): Database {
  let made = 0;
  const handle = (name: string): Db =>
    ({
      name,
      async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
        const tx = handle(`${name}/tx${++made}`);
        await tick();
        return fn(tx);
      },
    }) as unknown as Db;
  return { db: handle('root') } as unknown as Database;
}

describe('ServiceContext.transaction', () => {
  it('keeps each overlapping transaction its own handle, through failures, in this context and its children', async () => {
    const ctx = new ServiceContext(standIn(), {} as Config, { name: 'test' }, null);
    const child = ctx.withActor({ name: 'client' });
    const root = ctx.database.db;
    const seen: string[] = [];
    const holds = (c: ServiceContext, label: string, tx: Db) => async () => {
      await tick();
      expect(c.db, label).toBe(tx);
      seen.push(label);
    };
    let release!: () => void;
    const mayEnd = new Promise<void>((r) => (release = r));
    const long = ctx.transaction(async (tx) => {
      await holds(ctx, 'long', tx)();
      await mayEnd;
      await holds(ctx, 'long, after the others ended', tx)();
    });
    await tick();
    await expect(
      ctx.transaction(async (tx) => {
        await holds(ctx, 'failing', tx)();
        throw new Error('refused');
      }),
    ).rejects.toThrow('refused');
    await ctx.transaction(async (tx) => {
      await holds(ctx, 'short', tx)();
      await ctx.transaction(async (inner) => holds(ctx, 'nested', inner)());
      expect(ctx.db).toBe(tx);
    });
    await child.transaction(async (tx) => holds(child, 'child', tx)());
    expect(child.db).toBe(root);
    release();
    await long;
    expect(seen).toEqual(['long', 'failing', 'short', 'nested', 'child', 'long, after the others ended']);
    expect(ctx.db).toBe(root);
    // And again, after every transaction ended and the lookup was switched off.
    await ctx.transaction(async (tx) => holds(ctx, 'again', tx)());
    expect(ctx.db).toBe(root);
  });
});
