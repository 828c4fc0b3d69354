import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { AuditChain } from '../../src/daemon/audit-chain.js';
import { RefreshBatcher } from '../../src/daemon/refresh-batcher.js';
import { readHead } from '../../src/db/store/audit.js';
import * as tokenStore from '../../src/db/store/tokens.js';
import type { AuditHead } from '../../src/services/audit.js';
import { openContext, type ServiceContext } from '../../src/services/context.js';
import { grantSlot } from '../../src/services/grants.js';
import { type RefreshResult, writeResults, writeResultsChained } from '../../src/services/tokens.js';
import { GOOGLE_ADWORDS_SCOPE, startGoogleDouble } from '../doubles/index.js';
import { seedConnections } from '../helpers/daemon.js';
import { addAppFor } from '../helpers/flows.js';
import { createVault, DB_KIND, type Query, type TestVault } from '../helpers/vault.js';
import { untilLockWaits } from '../helpers/wait.js';

/**
 * The daemon's one-statement refresh write (tokens and their audit rows after the audit head it wrote
 * last): all of it or nothing, whatever else happened meanwhile. What it writes is what `token get`
 * and `audit verify` then see.
 */
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

/** A vault with three seeded Google Ads connections; `seeded` are their access tokens as issued. */
async function setup(): Promise<{ v: TestVault; seeded: string[] }> {
  const double = await startGoogleDouble();
  cleanups.push(() => double.close());
  const v = await createVault();
  cleanups.push(() => v.destroy());
  const app = await addAppFor(v, 'google_ads', double as never);
  const issued = await seedConnections(
    v,
    double as never,
    app.label,
    app.clientId,
    GOOGLE_ADWORDS_SCOPE,
    3,
    7200,
  );
  // Issued as access token, refresh token, for each grant in turn.
  return { v, seeded: issued.filter((_, i) => i % 2 === 0).sort() };
}

/** Runs `fn` with the vault open in this process (closed before the CLI runs again). */
async function withContext<T>(v: TestVault, fn: (ctx: ServiceContext) => Promise<T>): Promise<T> {
  const ctx = await openContext(resolveConfig({}, { ...v.env } as NodeJS.ProcessEnv), { name: 'daemon' });
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

/** Plain SQL: through a context already open, or a session of the test's. */
const through =
  (ctx: ServiceContext): Query =>
  (text, params) =>
    ctx.database.query(text, params);

/** Claims the three grants and makes their refresh results, new access tokens `fresh-<n>`. */
async function results(ctx: ServiceContext, tag: string): Promise<RefreshResult[]> {
  // Due again and unclaimed (1-hour tokens refreshed 58 minutes ago), as the sweep finds them.
  await ctx.database.query(
    "update oauth_tokens_vault set lease_owner = null, lease_expires_at = null, last_refreshed_at = now() - interval '58 minutes', access_token_expires_at = now() + interval '2 minutes'",
  );
  const claimed = await tokenStore.claimDue(ctx.db, 'test-owner', 60_000, 3 * 3_600_000, {}, 10);
  expect(claimed).toHaveLength(3);
  const keyring = await ctx.keyring();
  return Promise.all(
    claimed.map(async ({ grant }, n) => ({
      grant,
      owner: 'test-owner',
      recovering: false,
      tokens: {
        accessTokenEnc: await keyring.encrypt(
          `${tag}-${n}`,
          grantSlot(grant.id, 'access_token_enc'),
          grant.dataKeyId,
        ),
        tokenType: 'Bearer',
        accessTokenExpiresAt: new Date(Date.now() + 3_600_000),
        refreshTokenExpiresAt: null,
        refreshTokenExpiryFixed: false,
        lastRefreshedAt: new Date(),
      },
      audit: {
        action: 'token.refresh',
        targetType: 'grant',
        targetId: grant.id,
        outcome: 'success' as const,
      },
    })),
  );
}

/** The three connections' ids, for `token get`. */
async function connectionIds(query: Query): Promise<string[]> {
  const rows = await query<{ id: string }>('select id from ad_account_connections order by id');
  expect(rows).toHaveLength(3);
  return rows.map((row) => row.id);
}

/** What `token get` serves for each connection, sorted. */
async function accessTokens(v: TestVault, ids: string[]): Promise<string[]> {
  const tokens: string[] = [];
  for (const id of ids) {
    const got = await v.cli(['token', 'get', id], { secretOutput: true });
    expect(got.code, got.stderr).toBe(0);
    tokens.push(got.stdout.trim());
  }
  return tokens.sort();
}

/** The access tokens as stored (sealed): equal snapshots mean no token was written. */
const sealed = (query: Query) => query('select id, access_token_enc from oauth_tokens_vault order by id');

const auditRows = async (query: Query) =>
  Number((await query<{ n: number }>('select count(*)::int as n from credential_access_audit'))[0]!.n);

describe("the daemon's one-statement refresh write", () => {
  it('writes every token and its audit row after the head it knows, and nothing when the head moved', async () => {
    const { v } = await setup();
    // Known head, then someone else writes to the audit log (a token read is audited): stale.
    const { stale, ids } = await withContext(v, async (ctx) => ({
      stale: (await readHead(ctx.db)) as AuditHead,
      ids: await connectionIds(through(ctx)),
    }));
    const read = await v.cli(['token', 'get', ids[0]!], { secretOutput: true });
    expect(read.code, read.stderr).toBe(0);

    const written = await withContext(v, async (ctx) => {
      const query = through(ctx);
      const before = await sealed(query);
      const rowsBefore = await auditRows(query);
      const refused = await writeResultsChained(ctx, await results(ctx, 'late'), stale);
      expect(refused).toBeNull();
      expect(await sealed(query)).toEqual(before);
      expect(await auditRows(query)).toBe(rowsBefore);

      const head = (await readHead(ctx.db)) as AuditHead;
      const made = await writeResultsChained(ctx, await results(ctx, 'fresh'), head);
      expect(made?.head.lastId).toBe(head.lastId + 3);
      expect(made?.head.rowCount).toBe(head.rowCount + 3);
      expect((await readHead(ctx.db))?.lastHash).toBe(made?.head.lastHash);
      const refreshes = await query(
        "select target_id from credential_access_audit where action = 'token.refresh' and actor = 'daemon'",
      );
      expect(refreshes).toHaveLength(3);
      return made;
    });
    expect(written?.rows.map((row) => row.version)).toEqual([2, 2, 2]);
    expect(await accessTokens(v, ids)).toEqual(['fresh-0', 'fresh-1', 'fresh-2']);
    const verify = await v.json<{ ok: boolean }>(['audit', 'verify']);
    expect(verify.ok).toBe(true);
  });

  it('writes nothing at all when one of the grants changed under it (another refresher won)', async () => {
    const { v } = await setup();
    await withContext(v, async (ctx) => {
      const query = through(ctx);
      const before = await sealed(query);
      const rowsBefore = await auditRows(query);
      const head = (await readHead(ctx.db)) as AuditHead;
      const made = await results(ctx, 'lost');
      // Another refresher wrote the second grant meanwhile (its version moved on).
      await ctx.database.query('update oauth_tokens_vault set version = version + 1 where id = $1', [
        made[1]!.grant.id,
      ]);
      expect(await writeResultsChained(ctx, made, head)).toBeNull();
      expect(await readHead(ctx.db)).toEqual(head);
      expect(await auditRows(query)).toBe(rowsBefore);
      expect(await sealed(query)).toEqual(before);
    });
  });

  it('a refresher whose lease lapsed while another refreshed and wrote: its late answer and its late failure both write nothing', async () => {
    const { v } = await setup();
    await withContext(v, async (ctx) => {
      const query = through(ctx);
      const late = await results(ctx, 'late');
      // Its lease lapses; another refresher takes the grants, writes newer tokens and lets go (as a
      // finished write leaves them: version moved on, no lease).
      await ctx.database.query(
        'update oauth_tokens_vault set version = version + 1, lease_owner = null, lease_expires_at = null',
      );
      const before = await sealed(query);
      // The CLI's path (a transaction with the head locked): nothing written, the answers recorded as discarded.
      const written = await ctx.transaction((tx) => writeResults(ctx, tx, late));
      expect(written.rows).toEqual([null, null, null]);
      expect(await sealed(query)).toEqual(before);
      // A late failure does not mark what the other refresher wrote.
      const marked = await tokenStore.recordFailure(
        ctx.db,
        late[0]!.grant.id,
        'test-owner',
        late[0]!.grant.version,
        {
          code: 'unavailable',
          message: 'late failure',
          cooldownMs: 60_000,
          clearInFlight: true,
        },
      );
      expect(marked).toBe(false);
      const [row] = await query<{ last_error_code: string | null; cooldown_until: Date | null }>(
        'select last_error_code, cooldown_until from oauth_tokens_vault where id = $1',
        [late[0]!.grant.id],
      );
      expect(row).toEqual({ last_error_code: null, cooldown_until: null });
    });
  });

  it('writes nothing from a refresher whose lease lapsed while a re-encryption moved its grants to new keys', async () => {
    const { v, seeded } = await setup();
    // A refresher claims the grants and seals its answers under their data keys, then stalls past
    // its lease (a paused process): the re-encryption takes grants whose lease lapsed.
    const { late, ids, keysBefore } = await withContext(v, async (ctx) => {
      const query = through(ctx);
      const keysBefore = await query<{ data_key_id: string }>('select data_key_id from oauth_tokens_vault');
      const made = await results(ctx, 'late');
      await ctx.database.query(
        "update oauth_tokens_vault set lease_expires_at = now() - interval '1 second'",
      );
      return { late: made, ids: await connectionIds(query), keysBefore };
    });
    const rotated = await v.cli(['key', 'rotate', '--reencrypt', '--json']);
    expect(rotated.code, rotated.stderr).toBe(0);
    await withContext(v, async (ctx) => {
      const query = through(ctx);
      const keysAfter = await query<{ data_key_id: string }>('select data_key_id from oauth_tokens_vault');
      expect(keysAfter.map((k) => k.data_key_id)).not.toContain(keysBefore[0]!.data_key_id);
      const before = await sealed(query);
      const rowsBefore = await auditRows(query);
      // The daemon's one-statement write and the CLI's transaction both refuse it; the CLI's records
      // the discarded answers.
      const chained = await writeResultsChained(ctx, late, (await readHead(ctx.db)) as AuditHead);
      expect(chained).toBeNull();
      expect(await auditRows(query)).toBe(rowsBefore);
      const written = await ctx.transaction((tx) => writeResults(ctx, tx, late));
      expect(written.rows).toEqual([null, null, null]);
      expect(await sealed(query)).toEqual(before);
      const discarded = await query<{ outcome: string; detail: { problem?: string } }>(
        'select outcome, detail from credential_access_audit order by id desc limit 3',
      );
      expect(discarded.map((row) => row.outcome)).toEqual(['failure', 'failure', 'failure']);
      expect(discarded[0]!.detail.problem).toContain('a re-encryption');
      expect(await auditRows(query)).toBe(rowsBefore + 3);
    });
    // Every token still opens: the ones issued and stored before, not the late answers.
    expect(await accessTokens(v, ids)).toEqual(seeded);
  });

  it('does not write again, or record as lost, a group whose statement committed but whose answer was lost', async () => {
    const { v } = await setup();
    const committed: Array<Awaited<ReturnType<typeof writeResultsChained>>> = [];
    const { written, ids, rowsBefore } = await withContext(v, async (ctx) => {
      const rowsBefore = await auditRows(through(ctx));
      const chain = new AuditChain();
      chain.head = await readHead(ctx.db);
      // The statement commits; the connection drops before its answer arrives.
      const batcher = new RefreshBatcher(ctx, chain, {
        writeResults,
        writeResultsChained: async (...args) => {
          committed.push(await writeResultsChained(...args));
          throw new Error('write CONNECTION_CLOSED 127.0.0.1:5432');
        },
      });
      const written = await Promise.all((await results(ctx, 'kept')).map((result) => batcher.write(result)));
      return { written, ids: await connectionIds(through(ctx)), rowsBefore };
    });
    // One group, written by its one statement.
    expect(committed.map((group) => group?.rows.length)).toEqual([3]);
    expect(written.map((row) => row?.version)).toEqual([2, 2, 2]);
    expect(await accessTokens(v, ids)).toEqual(['kept-0', 'kept-1', 'kept-2']);
    const verify = await v.json<{ ok: boolean }>(['audit', 'verify']);
    expect(verify.ok).toBe(true);
    await v.session(async (query) => {
      // One success per refresh, written by the statement; no "lease lost" failure after it.
      const recorded = await query<{ outcome: string }>(
        "select outcome from credential_access_audit where action = 'token.refresh' and actor = 'daemon'",
      );
      expect(recorded.map((row) => row.outcome)).toEqual(['success', 'success', 'success']);
      // The three refreshes, and the three token reads above.
      expect(await auditRows(query)).toBe(rowsBefore + 6);
    });
  });

  it.runIf(DB_KIND === 'postgres')(
    'writes nothing when another transaction changes a grant while the statement waits for its lock',
    async () => {
      const { v } = await setup();
      const other = postgres(v.databaseUrl!, { max: 2, onnotice: () => {} });
      const byOther: Query = async (text, params = []) =>
        (await other.unsafe(text, params as never[])) as unknown as never[];
      try {
        const before = await sealed(byOther);
        const rowsBefore = await auditRows(byOther);
        const outcome = await withContext(v, async (ctx) => {
          const head = (await readHead(ctx.db)) as AuditHead;
          const made = await results(ctx, 'raced');
          // Another refresher holds the second grant's row, mid-write, and commits a newer version
          // while the statement waits for that row.
          const reserved = await other.reserve();
          await reserved`begin`;
          await reserved`update oauth_tokens_vault set version = version + 1 where id = ${made[1]!.grant.id}`;
          const pending = writeResultsChained(ctx, made, head);
          // Until the statement waits for that row's lock.
          const waited = await untilLockWaits(other);
          await reserved`commit`;
          reserved.release();
          return { written: await pending, waited, head, after: await readHead(ctx.db) };
        });
        expect(outcome.waited).toBe(1);
        expect(outcome.written).toBeNull();
        expect(outcome.after).toEqual(outcome.head);
        expect(await auditRows(byOther)).toBe(rowsBefore);
        expect(await sealed(byOther)).toEqual(before);
      } finally {
        await other.end();
      }
    },
  );
});

describe("the sweep's claim", () => {
  it('leaves out the grants whose last answer this process still holds unstored, and claims the others', async () => {
    const { v } = await setup();
    await withContext(v, async (ctx) => {
      await ctx.database.query(
        "update oauth_tokens_vault set last_refreshed_at = now() - interval '58 minutes', access_token_expires_at = now() + interval '2 minutes'",
      );
      const ids = (
        await ctx.database.query<{ id: string }>('select id from oauth_tokens_vault order by id')
      ).map((row) => row.id);
      expect(ids).toHaveLength(3);
      const claimed = await tokenStore.claimDue(
        ctx.db,
        'test-owner',
        60_000,
        3_600_000,
        {},
        10,
        [],
        [ids[1]!],
      );
      expect(claimed.map(({ grant }) => grant.id).sort()).toEqual([ids[0], ids[2]]);
      const leased = await ctx.database.query<{ id: string; lease_owner: string | null }>(
        'select id, lease_owner from oauth_tokens_vault order by id',
      );
      expect(leased.map((row) => row.lease_owner)).toEqual(['test-owner', null, 'test-owner']);
    });
  });
});
