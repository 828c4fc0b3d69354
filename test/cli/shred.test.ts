import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type AllDoubles, startAllDoubles } from '../doubles/index.js';
import { addAppFor, connectViaDouble } from '../helpers/flows.js';
import { createVault, DB_KIND, type TestVault } from '../helpers/vault.js';

/**
 * "Revoking … destroys the connection's secrets (and its data key): nothing readable stays behind"
 * (security.md), in the database's files as well as in its tables: a DELETE leaves the row in its
 * page and in the write-ahead log, and ANALYZE keeps samples of a column's values. With master.key
 * in the same folder, a copy of the data folder would still give the revoked refresh token (or, after
 * a rotation, open the data keys with the key rotated away).
 */

let doubles: AllDoubles;
beforeAll(async () => {
  doubles = await startAllDoubles();
});
afterAll(() => doubles.close());

const vaults: TestVault[] = [];
afterEach(async () => {
  await Promise.all(vaults.splice(0).map((v) => v.destroy()));
});

/** A vault with one Microsoft Advertising connection (no revocation endpoint: only the local copy goes). */
async function connected(): Promise<TestVault> {
  const v = await createVault();
  vaults.push(v);
  await addAppFor(v, 'microsoft_ads', doubles.microsoft as never);
  const run = await connectViaDouble(v, 'microsoft_ads', ['--account', '987', '--name', 'msa']);
  expect(run.result.code, run.result.stderr).toBe(0);
  return v;
}

/**
 * A connected vault and its grant's secrets (the two tokens' ciphertexts, its wrapped data key), found
 * in the embedded database's files: the tests look for the right thing before they destroy it.
 */
async function connectedInFiles(): Promise<{ v: TestVault; destroyed: string[] }> {
  const v = await connected();
  const { grant } = await storedSecrets(v);
  const destroyed = [grant.access, grant.refresh, grant.wrapped];
  await v.cli(['connections', 'list']);
  expect(inFiles(v, destroyed)).toEqual(destroyed);
  return { v, destroyed };
}

/** The strings stored for secrets: the grants' ciphertexts and every wrapped data key. */
async function storedSecrets(v: TestVault) {
  return v.session(async (query) => {
    const [grant] = await query<{ access: string; refresh: string; wrapped: string }>(
      `select t.access_token_enc as access, t.refresh_token_enc as refresh, k.wrapped_key as wrapped
         from oauth_tokens_vault t join data_keys k on k.id = t.data_key_id`,
    );
    const keys = await query<{ wrapped: string }>('select wrapped_key as wrapped from data_keys');
    return { grant: grant!, wrappedKeys: keys.map((k) => k.wrapped) };
  });
}

/** Which of `values` some file of the embedded database's data folder still holds. */
function inFiles(v: TestVault, values: string[]): string[] {
  const files = v.rawDatabaseFiles();
  expect(files.length).toBeGreaterThan(0);
  return values.filter((value) => files.some((file) => file.includes(Buffer.from(value))));
}

/**
 * After an ANALYZE: the columns holding secrets that pg_statistic (via pg_stats) keeps rows for, and
 * how many rows it keeps for the other columns of the grants' table.
 */
/**
 * The columns that hold a secret other than as an `_enc` ciphertext: wrapped data keys, and the
 * hashes by which a state, a client's token and a grant's refresh token are recognised.
 */
const OTHER_SECRET_COLUMNS = [
  'wrapped_key',
  'state_hash',
  'token_hash',
  'refresh_token_sha256',
  'imported_token_sha256',
];

async function sampledColumns(v: TestVault): Promise<{ secret: string[]; otherGrantColumns: number }> {
  return v.session(async (query) => {
    await query('analyze');
    const rows = await query<{ column: string }>(
      `select tablename || '.' || attname as column from pg_stats
        where schemaname = current_schema()
          and (attname like '%\\_enc' or attname in (${OTHER_SECRET_COLUMNS.map((c) => `'${c}'`).join(', ')})) order by 1`,
    );
    const [others] = await query<{ n: number }>(
      "select count(*)::int as n from pg_stats where schemaname = current_schema() and tablename = 'oauth_tokens_vault'",
    );
    return { secret: rows.map((row) => row.column), otherGrantColumns: others!.n };
  });
}

describe('what a revocation or a rotation destroys', () => {
  it.runIf(DB_KIND === 'pglite')(
    'is in no file of the embedded database after `connections revoke`',
    async () => {
      const { v, destroyed } = await connectedInFiles();

      const revoked = await v.cli(['connections', 'revoke', 'msa']);
      expect(revoked.code, revoked.stderr).toBe(0);
      expect(revoked.stderr).not.toContain('warning: the');
      expect(await v.sql('select 1 from oauth_tokens_vault')).toHaveLength(0);
      expect(inFiles(v, destroyed)).toEqual([]);
    },
  );

  it.runIf(DB_KIND === 'pglite')(
    'is in no file of the embedded database after a reconnect replaced the grant, which is on record and said',
    async () => {
      const { v, destroyed } = await connectedInFiles();
      const [old] = await v.sql<{ id: string }>('select id from oauth_tokens_vault');

      // The same account connected again: its connection moves to the new grant, the old one goes.
      const again = await connectViaDouble(v, 'microsoft_ads', ['--account', '987'], { json: false });
      expect(again.result.code, again.result.stderr).toBe(0);
      expect(again.result.stderr).not.toContain('warning: the');
      const grants = await v.sql<{ id: string }>('select id from oauth_tokens_vault');
      expect(grants).toHaveLength(1);
      expect(grants[0]!.id).not.toBe(old!.id);
      expect(inFiles(v, destroyed)).toEqual([]);
      // On record in the reconnect's transaction (no secret in it), and said to the operator.
      const entries = await v.sql<{ action: string; target_id: string; detail: Record<string, unknown> }>(
        "select action, target_id, detail from credential_access_audit where action in ('connection.reconnect', 'token.destroy') order by id",
      );
      expect(entries.map((e) => e.action)).toEqual(['connection.reconnect', 'token.destroy']);
      expect(entries[1]).toMatchObject({
        target_id: old!.id,
        detail: {
          platform: 'microsoft_ads',
          via: 'connect',
          reason: 'reconnected',
          replaced_by: grants[0]!.id,
          connections: ['microsoft_ads:987'],
        },
      });
      expect(again.result.stderr).toContain(
        'the previous tokens of microsoft_ads:987 were destroyed here (the new grant replaces them); they were not revoked at the platform',
      );
    },
  );

  it.runIf(DB_KIND === 'pglite')(
    'in a vault made before ANALYZE stopped sampling those columns: after a revocation, none in any file',
    async () => {
      const v = await connected();
      const { grant } = await storedSecrets(v);
      const destroyed = [grant.refresh, grant.wrapped];
      // As an older vault is: statistics taken of the secret columns, then migration 0006 (which
      // drops them from pg_statistic, leaving its dead rows in the catalog's pages).
      const columns = [
        ['data_keys', 'wrapped_key'],
        ['oauth_tokens_vault', 'refresh_token_enc'],
      ];
      const sampled = await v.session(async (query) => {
        for (const [table, column] of columns) {
          await query(`alter table ${table} alter column ${column} set statistics -1`);
          await query(`analyze ${table}`);
        }
        const rows = await query(
          "select 1 from pg_stats where attname in ('wrapped_key', 'refresh_token_enc')",
        );
        for (const [table, column] of columns) {
          await query(`alter table ${table} alter column ${column} set statistics 0`);
          await query(`alter table ${table} alter column ${column} set data type text`);
        }
        return rows;
      });
      expect(sampled).toHaveLength(2);
      const revoked = await v.cli(['connections', 'revoke', 'msa']);
      expect(revoked.code, revoked.stderr).toBe(0);
      expect(inFiles(v, destroyed)).toEqual([]);
    },
  );

  it.runIf(DB_KIND === 'pglite')(
    'leaves no data key wrapped under the old key in any file after `key rotate`',
    async () => {
      const v = await connected();
      const { wrappedKeys } = await storedSecrets(v);
      expect(wrappedKeys.length).toBeGreaterThan(1);
      expect(inFiles(v, wrappedKeys)).toEqual(wrappedKeys);

      const rotated = await v.cli(['key', 'rotate', '--json']);
      expect(rotated.code, rotated.stderr).toBe(0);
      const after = await storedSecrets(v);
      expect(after.wrappedKeys).toHaveLength(wrappedKeys.length);
      expect(after.wrappedKeys.filter((k) => wrappedKeys.includes(k))).toEqual([]);
      expect(inFiles(v, wrappedKeys)).toEqual([]);
      // The vault still opens under the new key.
      const token = await v.cli(['token', 'get', 'msa'], { secretOutput: true });
      expect(token.code, token.stderr).toBe(0);
    },
  );

  it.runIf(DB_KIND === 'postgres')(
    'vacuums the tables on a PostgreSQL server after `connections revoke`',
    async () => {
      const v = await connected();
      const vacuumed = () =>
        v.sql<{ table: string }>(
          `select relname as table from pg_stat_user_tables
            where relname in ('oauth_tokens_vault', 'data_keys') and last_vacuum is not null order by 1`,
        );
      expect(await vacuumed()).toEqual([]);
      const revoked = await v.cli(['connections', 'revoke', 'msa']);
      expect(revoked.code, revoked.stderr).toBe(0);
      expect((await vacuumed()).map((row) => row.table)).toEqual(['data_keys', 'oauth_tokens_vault']);
    },
  );

  it('keeps no statistics samples of the columns that hold secrets or their hashes', async () => {
    const v = await connected();
    // A client, so that its token hash is there to be sampled.
    expect((await v.cli(['clients', 'create', 'ci', '--role', 'reader', '--all'])).code).toBe(0);
    const held = await v.sql<Record<string, number>>(
      `select (select count(*)::int from oauth_states where state_hash is not null) as state_hash,
              (select count(*)::int from api_clients where token_hash is not null) as token_hash,
              (select count(*)::int from oauth_tokens_vault where refresh_token_sha256 is not null) as refresh_token_sha256`,
    );
    // The test looks at columns that hold something (an empty column has nothing to sample).
    expect(held[0]).toEqual({ state_hash: 1, token_hash: 1, refresh_token_sha256: 1 });
    const sampled = await sampledColumns(v);
    expect(sampled.secret).toEqual([]);
    // The same ANALYZE keeps statistics of the other columns: the query above would see them.
    expect(sampled.otherGrantColumns).toBeGreaterThan(0);
  });
});
