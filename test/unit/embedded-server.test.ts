import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EmbeddedServer, serveEmbedded } from '../../src/daemon/embedded.js';
import { postgresOptions } from '../../src/db/client.js';

/**
 * Regression: pglite-socket's own queue let one connection's Bind run against another connection's
 * Parse (PGlite has one session and one unnamed statement), so concurrent parameterized queries got
 * each other's parameters. The daemon's queue keeps each sequence together.
 */
describe('the embedded database served to several connections', () => {
  let home: string;
  let served: EmbeddedServer;
  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'credvault-embedded-'));
    served = await serveEmbedded(home, 5000);
  }, 60_000);
  afterAll(async () => {
    await served?.close();
    rmSync(home, { recursive: true, force: true });
  });

  it('hands the daemon the notifications other connections commit, before their statements return', async () => {
    const own = mkdtempSync(join(tmpdir(), 'credvault-embedded-'));
    const seen: string[] = [];
    const server = await serveEmbedded(own, 5000, {
      channel: 'credvault_changes',
      onPayload: (p) => seen.push(p),
    });
    const sql = postgres({ ...postgresOptions({ socket: server.socketPath }), max: 2, onnotice: () => {} });
    try {
      await sql`select pg_notify('credvault_changes', 'client:1')`;
      expect(seen).toEqual(['client:1']);
      // Committed: delivered at the commit, after a large answer in the same transaction; rolled back:
      // never. Another channel is not ours.
      const long = 'x'.repeat(7000);
      await sql.begin(async (tx) => {
        await tx`select pg_notify('credvault_changes', ${`grant:${long}`})`;
        await tx`select g, repeat('y', 100) from generate_series(1, 2000) g`;
        await tx`select pg_notify('elsewhere', 'no')`;
        expect(seen).toHaveLength(1);
      });
      expect(seen).toEqual(['client:1', `grant:${long}`]);
      await sql
        .begin(async (tx) => {
          await tx`select pg_notify('credvault_changes', 'connection:9')`;
          throw new Error('roll back');
        })
        .catch(() => {});
      await sql`select 1`;
      expect(seen).toHaveLength(2);
    } finally {
      await sql.end();
      await server.close();
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('keeps concurrent parameterized queries and transactions of different connections apart', async () => {
    const clients = [1, 2, 3].map(() =>
      postgres({ ...postgresOptions({ socket: served.socketPath }), max: 4, onnotice: () => {} }),
    );
    try {
      await clients[0]!`create table t (id int primary key, who text)`;
      const work = clients.flatMap((sql, c) =>
        Array.from({ length: 60 }, async (_, i) => {
          const n = c * 1000 + i;
          const [row] = await sql`select ${n}::int as n, ${`client-${c}`}::text as who`;
          expect(row).toEqual({ n, who: `client-${c}` });
          await sql.begin(async (tx) => {
            await tx`insert into t (id, who) values (${n}, ${`client-${c}`})`;
            const [back] = await tx`select who from t where id = ${n}`;
            expect(back!.who).toBe(`client-${c}`);
          });
        }),
      );
      await Promise.all(work);
      const [{ count }] = (await clients[1]!`select count(*)::int as count from t`) as unknown as [
        { count: number },
      ];
      expect(count).toBe(180);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  }, 60_000);
});
