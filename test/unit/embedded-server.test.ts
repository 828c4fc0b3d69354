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
