import type { Secret } from '../crypto/secret.js';
import type { Db } from '../db/client.js';
import * as adoptionLeases from '../db/store/adoption-leases.js';
import type { AppRecord } from '../db/store/apps.js';
import type { ConnectionRow, ConnectionView } from '../db/store/connections.js';
import * as connectionStore from '../db/store/connections.js';
import * as tokenStore from '../db/store/tokens.js';
import { ConflictError, CredvaultError, UnavailableError } from '../errors.js';
import { PLATFORMS, type PlatformId } from '../providers/catalog.js';
import { ProviderError } from '../providers/errors.js';
import { providerFor } from '../providers/registry.js';
import type { AdAccount, ProviderApp, TokenResult } from '../providers/types.js';
import { jitter, sleep } from '../util/backoff.js';
import { connectionRef } from '../views.js';
import { type AuditEntry, recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';
import { attachAccounts, type DestroyedGrant, destroyGrant, openToken } from './grants.js';
import { providerFailure, withDeadline } from './platform-calls.js';
import { decryptedFor } from './provider-app.js';
import {
  freshGrant,
  leaseMs,
  type RefreshResult,
  refreshOwner,
  sealRefreshed,
  writeResults,
} from './tokens.js';

/**
 * One consent, one grant: a refresh token the vault already holds for an app (recognised by the
 * SHA-256 of the token each grant was stored with, kept when the platform rotates it, or the one an
 * import's file held) is not stored a second time. `connections add` and `import` share these steps:
 * a working grant holding it is joined (refreshed once under its lease first: the given token is never
 * presented again, since where refresh tokens rotate it may be used up, and a reused one can end the
 * whole grant), and one that needs a person is replaced by a new grant of its consent, refreshed with
 * the newest token of it the platform has not refused (refreshDeadGrant: the given one, or a newer one
 * an earlier such refresh left on the dead grant). Two
 * processes about to present a token no working grant holds (connections add; an import replacing a
 * dead grant) take turns (claimAdoption): the second finds the grant the first stored, and joins it.
 */

/** A grant of the app that holds the given refresh token, and the connections on it. */
export interface HeldGrant {
  grant: tokenStore.GrantRow;
  connections: ConnectionRow[];
}

/** A connection whose grant still works, or may (refreshes failing for now): one to join. */
export function isLive(connection: ConnectionRow): boolean {
  return connection.status === 'active' || connection.status === 'error';
}

/**
 * The app's grants that hold the refresh token of this SHA-256 (tokenSha256; oldest first), and the
 * one to join: the first whose connections include a live one. Never reveals the token or its hash.
 */
export async function findHeldGrants(
  db: Db,
  appId: string,
  sha256: string,
): Promise<{ held: HeldGrant[]; live: HeldGrant | undefined }> {
  const held: HeldGrant[] = [];
  for (const grant of await tokenStore.listByTokenSha256(db, appId, sha256))
    held.push({ grant, connections: await connectionStore.listByGrant(db, grant.id) });
  return { held, live: held.find((h) => h.connections.some(isLive)) };
}

/**
 * How a message names a grant holding the token: by its connections; one with none is where a
 * `connections add` that did not finish kept the platform's answer (keepAdoptedAnswer, in connect.ts).
 */
export function grantOf(connections: ConnectionRow[]): string {
  return connections.length
    ? `the grant of ${connections.map(connectionRef).join(', ')}`
    : 'the grant that a `connections add` of it which did not finish left with no account';
}

/** How a message names the grant holding the token. */
export function heldBy(held: HeldGrant): string {
  return `the vault already holds this refresh token (${grantOf(held.connections)})`;
}

/** An adoption of a refresh token claimed by this process (claimAdoption). */
export interface AdoptionClaim {
  /** The app's grants holding the token, looked for once the claim was had (findHeldGrants). */
  held: HeldGrant[];
  /** The one to join, stored since the caller first looked (by whoever held the claim before). */
  live: HeldGrant | undefined;
  /**
   * Makes the claim last `forMs` from now (one lease by default), for a holder with more than one
   * lease's work to do under it (an import with several platforms to ask); false when it had lapsed
   * already (another process may have adopted the token meanwhile).
   */
  renew(forMs?: number): Promise<boolean>;
  /** Gives the claim back; it lapses on its own otherwise. */
  release(): Promise<void>;
}

/**
 * Claims the adoption of a refresh token the vault does not hold yet, for as long as presenting it to
 * the platform and storing the grant it brings may take: another process given the same token waits
 * here until that grant is stored, and finds it in `live` (it joins it, and the token is presented to
 * the platform once). Without the claim, both present it before either stores anything, and where
 * refresh tokens rotate (Microsoft) the second presentation is a reuse, which can end the whole grant.
 * `connections add` claims a token no working grant holds; an import claims the file's token where it
 * refreshes it to replace a dead grant (`command` names the one to run again in a give-up's hint).
 *
 * A lease row (adoption_leases), not an advisory lock, because it is held across platform calls:
 * - pg_advisory_xact_lock would keep a transaction open across them, and everything the adoption
 *   reads and audits meanwhile would run in it (ServiceContext routes it there): a failed refresh's
 *   audit row rolled back with it, and, through the daemon that holds the embedded database, its one
 *   session taken from every other command and from the daemon's own token serving for that long.
 * - pg_advisory_lock (session level) would keep one of the pool's few connections (4 for a command)
 *   out of use, needs unlocking on that same connection, and its waiters queue in the server with no
 *   deadline of their own; through the daemon's socket every command shares PGlite's one session,
 *   where an advisory lock is re-entrant: it would exclude nobody.
 * - The embedded database opened directly is one process at a time anyway (its file lock).
 * The lease holds no connection and no transaction; it is judged by the database's clock and lapses
 * on its own (leaseMs: the refresh's and the account listing's deadlines, and the write), so a dead
 * holder delays others at most that long; waiters poll (50 ms doubling to 400 ms), hold nothing while
 * they do, and give up after one lease and a margin (UnavailableError, exit 5: to run again). The
 * storing transaction still takes the token's lock and looks again (a holder that overran its lease,
 * an import, which stores a token it does not present without a claim). A holder with more than one
 * lease's work (an import asking several platforms) renews it before each step for as long as that
 * step may take (`renew`), rather than taking one long enough for all of them at first: that is how
 * long a dead holder would keep everyone waiting.
 */
export async function claimAdoption(
  ctx: ServiceContext,
  appId: string,
  sha256: string,
  { command = 'connections add' }: { command?: 'connections add' | 'import' } = {},
): Promise<AdoptionClaim> {
  const owner = refreshOwner(command === 'import' ? 'import' : 'adopt');
  const lease = leaseMs(ctx.config.httpTimeoutMs);
  const giveUpAt = Date.now() + lease + 10_000;
  let delay = 50;
  while (!(await adoptionLeases.tryTake(ctx.db, appId, sha256, owner, lease))) {
    if (Date.now() > giveUpAt) {
      throw new UnavailableError('another process has been adopting this refresh token for too long', {
        retryAfter: 5,
        hint: `Run \`credvault ${command}\` again in a while: the vault may hold the token by then.`,
      });
    }
    await sleep(jitter(delay, 0.5));
    delay = Math.min(delay * 2, 400);
  }
  const release = () => adoptionLeases.release(ctx.db, appId, sha256, owner);
  const renew = (forMs = lease) => adoptionLeases.renew(ctx.db, appId, sha256, owner, forMs);
  try {
    return { ...(await findHeldGrants(ctx.db, appId, sha256)), renew, release };
  } catch (error) {
    await release().catch(() => {});
    throw error;
  }
}

/**
 * Refreshes the held grant once (its own current token, under its lease: never the given one), which
 * proves it works as an adoption's refresh would, and returns it as refreshed. Opens nothing and
 * audits only the refresh (freshGrant): a caller that reads its access token opens it and records
 * that. A failure is the refresh's own (a dead grant is marked so, as any refresh does), said of the
 * held grant; `nothing` ends the message. `app`: the app to refresh with instead of the stored one
 * (an import's, as its file makes it; see TokenRequest.app).
 */
export async function refreshHeldGrant(
  ctx: ServiceContext,
  held: HeldGrant,
  purpose: string,
  nothing: string,
  { force = true, app }: { force?: boolean; app?: ProviderApp } = {},
): Promise<tokenStore.GrantRow> {
  const through = held.connections.find((c) => c.status === 'active') ?? held.connections.find(isLive)!;
  try {
    // A person is acting (connections add, import), as `connections refresh --force`: a grant in
    // `error` or cooling down is tried, not answered from its recorded failure. Not `force`: a grant
    // refreshed since the caller first looked (see claimAdoption) was proven to work by that refresh,
    // and is refreshed again only if its access token has expired (or it has none).
    const { grant } = await freshGrant(ctx, through, {
      minTtlSeconds: 0,
      forceRefresh: force,
      bypassCooldown: true,
      purpose,
      ...(app ? { app } : {}),
    });
    return grant;
  } catch (error) {
    if (!(error instanceof CredvaultError)) throw error;
    throw new CredvaultError(
      error.code,
      `${heldBy(held)}, and ${error.message.replace(/\.$/, '')}; ${nothing}`,
      { hint: error.hint, cause: error },
    );
  }
}

/** What refreshing the consent of a grant that needs a person brought (refreshDeadGrant). */
export interface DeadGrantRefresh {
  /** The grant as written, the platform's answer on it. */
  grant: tokenStore.GrantRow;
  /** The token presented was the newer one the grant held, not the given one (which was not sent). */
  presentedHeld: boolean;
  /** The platform answered with another refresh token: the one presented is used up where tokens rotate. */
  rotated: boolean;
}

/**
 * Refreshes the consent that a grant needing a person holds, so that only a working token replaces it
 * (an import's second pass, or `connections add`, moves what this writes to the new grant of the
 * accounts: tokensWrittenOn). Under the grant's lease, one attempt, with the app given (as the
 * import's file makes it; the stored one for `connections add`). The token presented is the newest of
 * that consent that the platform has not refused: the grant's own when it differs from the given one
 * and its last refresh was not refused (a refresh like this one, whose import or adoption then
 * failed, left its answer there), else the given one.
 *
 * The platform's answer is written onto the grant at once, as every refresh's is, a rotated refresh
 * token included: whatever fails after it (another platform's call, the account listing, the storing
 * transaction, the process), the answer is in the vault, and the next import of the file or
 * `connections add` of the token finds it there and presents it. The grant's connections keep their
 * status: nothing is served from it meanwhile. A refusal of the token presented is recorded on the
 * grant (the next try presents the given one); any other failure only in the audit log (an answer that
 * never came leaves the grant's refresh marked in doubt, as any refresh's does). `purpose`: who asks
 * (the audit entry's `via`), and how messages name the given token (the file's, or the given one).
 */
export async function refreshDeadGrant(
  ctx: ServiceContext,
  dead: HeldGrant,
  given: Secret,
  app: ProviderApp,
  input: { purpose: 'import' | 'adopt'; nothing: string; hint: string },
): Promise<DeadGrantRefresh> {
  const platform = dead.grant.platform as PlatformId;
  const name = PLATFORMS[platform].displayName;
  const givenToken = input.purpose === 'import' ? "the file's token" : 'the given token';
  const changed = () =>
    new ConflictError(
      `${heldBy(dead)}, needing a person, and it was revoked, replaced or connected again meanwhile; ${input.nothing}`,
      { hint: input.hint },
    );
  const owner = refreshOwner(input.purpose);
  const leased = await tokenStore.tryLease(ctx.db, dead.grant.id, owner, leaseMs(ctx.config.httpTimeoutMs));
  if (!leased) {
    if (!(await tokenStore.get(ctx.db, dead.grant.id))) throw changed();
    throw new ConflictError(
      `${heldBy(dead)}, needing a person, and another process is refreshing it right now; ${input.nothing}`,
      { hint: input.hint },
    );
  }
  /** The lease is given back on the way out, unless a write (the answer, or the failure) let it go. */
  let holding = true;
  try {
    if ((await connectionStore.listByGrant(ctx.db, leased.id)).some(isLive)) throw changed();
    const stored = await openToken(ctx, leased, 'refresh');
    const presentedHeld =
      stored !== null && stored.reveal() !== given.reveal() && leased.lastErrorCode !== 'dead_grant';
    const presented = presentedHeld ? stored : given;
    const provider = await providerFor(platform);
    const entry = (outcome: 'success' | 'failure', detail: Record<string, unknown>): AuditEntry => ({
      action: 'token.refresh',
      targetType: 'grant',
      targetId: leased.id,
      connectionId: dead.connections[0]?.id ?? null,
      outcome,
      detail: {
        platform,
        via: input.purpose,
        attempts: 1,
        // Which token was sent: the one given (the file's), or the newer one the grant held.
        token: presentedHeld ? 'held' : 'given',
        decrypted: decryptedFor(app),
        ...detail,
      },
    });
    // Not sent once the lease has lapsed (a stall): another process may hold the grant by now.
    if (!(await tokenStore.markInFlight(ctx.db, leased.id, owner))) {
      throw new ConflictError(
        `${heldBy(dead)}, needing a person, and this process lost its lease on it before its refresh left; ${input.nothing}`,
        { hint: input.hint },
      );
    }
    let tokens: TokenResult;
    try {
      tokens = await withDeadline(ctx, (signal) =>
        provider.refresh(app, presented, { signal }, leased.scope),
      );
    } catch (error) {
      if (!(error instanceof ProviderError)) throw error;
      holding = false;
      // A grant with no account (what a `connections add` that did not finish kept) whose token the
      // platform refuses holds nothing of use: it goes (the given token, presented to the platform
      // before it, was rotated away then).
      const drop = error.kind === 'dead_grant' && dead.connections.length === 0;
      await recordDeadGrantFailure(ctx, leased, owner, error, entry, drop);
      const unanswered = error.unanswered;
      const what = presentedHeld
        ? `the newer refresh token that grant holds (${input.purpose === 'import' ? "the file's" : 'the given one'} was not sent)`
        : 'the refresh token';
      const doubt =
        unanswered && PLATFORMS[platform].capabilities.refresh_token_rotation
          ? ` (no answer came: if ${name} took the refresh, ${presentedHeld ? 'that token' : givenToken} is used up)`
          : '';
      const dropped = drop
        ? ` (it was kept when an earlier connections add of the given one failed after ${name} rotated that one away; it is dropped from the vault: connect the account again with \`credvault connect\`)`
        : '';
      throw providerFailure(
        error,
        `${error.retryable ? `${name} could not be asked about` : `${name} refused`} ${what}${doubt}${dropped}`,
      );
    }
    const rotated = tokens.refreshToken !== null && tokens.refreshToken.reveal() !== presented.reveal();
    const result: RefreshResult = {
      grant: leased,
      owner,
      // Its connections keep their status: it still needs a person, and nothing is served from it.
      recovering: false,
      // The token presented, when the answer carries none: it is the one that works.
      tokens: await sealRefreshed(ctx, leased, { ...tokens, refreshToken: tokens.refreshToken ?? presented }),
      audit: entry('success', { rotated }),
    };
    const {
      rows: [written],
    } = await ctx.transaction((tx) => writeResults(ctx, tx, [result]));
    holding = !written;
    if (!written) {
      // Only when the lease lapsed and another process wrote the grant, or it was revoked meanwhile.
      throw new ConflictError(
        `${heldBy(dead)}, needing a person, and it changed while it was refreshed: what ${name} answered could not be kept${rotated ? `, and ${presentedHeld ? 'the token it held' : givenToken} is used up` : ''}; ${input.nothing}`,
        { hint: input.hint },
      );
    }
    return { grant: written, presentedHeld, rotated };
  } finally {
    if (holding) await tokenStore.releaseLease(ctx.db, leased.id, owner).catch(() => {});
  }
}

/**
 * The tokens that a refresh of a dead grant's consent wrote onto it (refreshDeadGrant), read under its
 * lock in the caller's transaction: none when the grant is not among `dead` or not as that refresh left
 * it (gone, written since, or someone's refresh of it under way). The caller then stores nothing, and
 * the tokens stay where they are. Read as the new grant of the accounts stores them: the platform's own
 * end of the refresh token, when it gave one (else the new grant's is reckoned from now).
 */
export async function tokensWrittenOn(
  ctx: ServiceContext,
  tx: Db,
  dead: HeldGrant[],
  written: tokenStore.GrantRow,
): Promise<TokenResult | undefined> {
  if (!dead.some((h) => h.grant.id === written.id)) return undefined;
  const row = await tokenStore.lock(tx, written.id);
  if (!row || row.version !== written.version || row.leaseOwner !== null) return undefined;
  const [accessToken, refreshToken] = await Promise.all([
    openToken(ctx, row, 'access'),
    openToken(ctx, row, 'refresh'),
  ]);
  if (!accessToken || !refreshToken) return undefined;
  return {
    accessToken,
    refreshToken,
    tokenType: row.tokenType,
    expiresAt: row.accessTokenExpiresAt,
    refreshTokenExpiresAt: row.refreshTokenExpiryFixed ? row.refreshTokenExpiresAt : null,
    scope: row.scope,
  };
}

/**
 * A failed refresh of a dead grant's consent: a refusal of the token presented is recorded on the
 * grant (its connections need a person already); any other failure leaves the grant as it was, the
 * in-flight mark kept when no answer came (the platform may have taken it). A refused grant with no
 * account (`drop`: what a `connections add` that did not finish kept) is destroyed instead. On record
 * either way.
 */
async function recordDeadGrantFailure(
  ctx: ServiceContext,
  leased: tokenStore.GrantRow,
  owner: string,
  error: ProviderError,
  entry: (outcome: 'failure', detail: Record<string, unknown>) => AuditEntry,
  drop: boolean,
): Promise<void> {
  const failure = entry('failure', { kind: error.kind, code: error.platformCode, status: error.status });
  await ctx.transaction(async (tx) => {
    if (drop) {
      await destroyGrant(tx, leased.id);
      await recordAudit(tx, ctx.actor, [
        failure,
        {
          action: 'token.destroy',
          targetType: 'grant',
          targetId: leased.id,
          outcome: 'success',
          detail: { platform: leased.platform, kept_by: 'adopt', reason: 'refused' },
        },
      ]);
      return;
    }
    if (error.kind === 'dead_grant') {
      await tokenStore.recordFailure(tx, leased.id, owner, leased.version, {
        code: error.kind,
        message: error.message.slice(0, 1000),
        cooldownMs: null,
        clearInFlight: true,
      });
    } else if (error.unanswered) {
      await tokenStore.releaseLease(tx, leased.id, owner);
    } else {
      await tokenStore.unclaim(tx, leased, owner);
    }
    await recordAudit(tx, ctx.actor, failure);
  });
}

/**
 * Writes the answer to an adoption's refresh of the given token onto a grant holding that token that
 * was stored while the refresh was out (by an import, which stores a file's token without presenting
 * it and without the adoption's claim), in the caller's transaction, which joins the grant next: where
 * the platform rotated the token, the grant holds the one this refresh used up, and the answer is the
 * consent's only working token. Written as any refresh's answer is, at once and version-checked
 * (writeResults): the grant locked, seen live still, and its refresh lease taken here (the write
 * clears it); its connections made active if they were not; audited as a refresh (token.refresh,
 * `via`). Null, with nothing written, when the grant went or needs a person meanwhile, or another
 * process is refreshing it right now (with the used-up token: the caller then stores the answer on a
 * grant of its own rather than lose it).
 */
export async function keepAnswerOn(
  ctx: ServiceContext,
  tx: Db,
  held: HeldGrant,
  tokens: TokenResult,
  via: 'adopt',
): Promise<tokenStore.GrantRow | null> {
  const locked = await tokenStore.lock(tx, held.grant.id);
  const current = locked ? await connectionStore.listByGrant(tx, locked.id) : [];
  if (!locked || !current.some(isLive)) return null;
  const owner = refreshOwner(via);
  const leased = await tokenStore.tryLease(tx, locked.id, owner, leaseMs(ctx.config.httpTimeoutMs));
  if (!leased) return null;
  const through = current.find((c) => c.status === 'active') ?? current.find(isLive)!;
  const result: RefreshResult = {
    grant: leased,
    owner,
    recovering:
      current.some((c) => c.status !== 'active' || c.consecutiveFailures > 0) ||
      leased.lastErrorCode !== null,
    tokens: await sealRefreshed(ctx, leased, tokens),
    audit: {
      action: 'token.refresh',
      targetType: 'grant',
      targetId: leased.id,
      connectionId: through.id,
      outcome: 'success',
      detail: {
        platform: leased.platform,
        via,
        attempts: 1,
        rotated: true,
        // Not this grant's own token that was sent: the one it was stored with, given to the adoption.
        token: 'given',
        by: owner.split(':').slice(0, 2).join(':'),
      },
    },
  };
  const {
    rows: [written],
  } = await writeResults(ctx, tx, [result], { notify: true });
  return written ?? null;
}

/**
 * Attaches the accounts to the held grant in the caller's transaction, once it is locked and seen to
 * work still (a revocation meanwhile waits for this transaction, or came first: then nothing joins
 * it). Records the connections' audit entries with the grant joined and the accounts it is shared
 * with; returns their ids.
 */
export async function joinGrantIn(
  ctx: ServiceContext,
  tx: Db,
  input: {
    app: AppRecord;
    held: HeldGrant;
    accounts: AdAccount[];
    name: string | null;
    via: 'adopt' | 'import';
    nothing: string;
    hint: string;
  },
): Promise<{ ids: string[]; destroyed: DestroyedGrant[] }> {
  const { held } = input;
  const grant = await tokenStore.lock(tx, held.grant.id);
  const current = grant ? await connectionStore.listByGrant(tx, held.grant.id) : [];
  if (!current.some(isLive)) {
    throw new ConflictError(`${heldBy(held)}, but it was revoked or found dead meanwhile; ${input.nothing}`, {
      hint: input.hint,
    });
  }
  const { ids, audit, destroyed } = await attachAccounts(ctx, tx, {
    app: input.app,
    grantId: held.grant.id,
    accounts: input.accounts,
    name: input.name,
    via: input.via,
  });
  const sharedWith = current.filter((c) => !ids.includes(c.id)).map((c) => c.externalAccountId);
  for (const entry of audit)
    if (entry.action !== 'token.destroy')
      entry.detail = { ...entry.detail, grant: held.grant.id, shared_with: sharedWith };
  await recordAudit(tx, ctx.actor, audit);
  return { ids, destroyed };
}

const AGAIN = {
  adopt: 'adopted again for HOLDERS (connections add)',
  import: 'imported again for HOLDERS (import)',
} as const;

/**
 * Destroys a grant that needed a person and held the refresh token a new grant now holds, in the
 * caller's transaction: the connections left on it keep their status, with no tokens, and say why.
 * Returns their refs.
 */
export async function replaceDeadGrant(
  ctx: ServiceContext,
  tx: Db,
  grantId: string,
  added: ConnectionView[],
  via: 'adopt' | 'import',
): Promise<string[]> {
  const left = await connectionStore.listByGrant(tx, grantId);
  if (left.some(isLive)) return [];
  if (!left.length) {
    // Reconnected since it was read (the accounts of its connections were among this adoption's, and
    // the grant went with the last of them: attachAccounts), nothing to replace. Else it is the answer
    // a `connections add` that did not finish kept, on a grant with no account: the new grant holds
    // it now (one consent, one grant).
    const grant = await tokenStore.get(tx, grantId);
    if (!grant) return [];
    await destroyGrant(tx, grantId);
    await recordAudit(tx, ctx.actor, {
      action: 'token.destroy',
      targetType: 'grant',
      targetId: grantId,
      outcome: 'success',
      detail: { platform: grant.platform, via, kept_by: 'adopt', replaced_by: added[0]?.tokenId ?? null },
    });
    return [];
  }
  const holders = added.map(connectionRef).join(', ');
  const audit: AuditEntry[] = [];
  for (const connection of left) {
    await connectionStore.update(tx, connection.id, {
      statusMessage: `its refresh token was ${AGAIN[via].replace('HOLDERS', holders)}, whose grant holds it now; connect this account again to use it`,
    });
    audit.push({
      action: 'connection.update',
      targetType: 'connection',
      targetId: connection.id,
      connectionId: connection.id,
      outcome: 'success',
      detail: {
        platform: connection.platform,
        account: connection.externalAccountId,
        via,
        grant: grantId,
        tokens: 'destroyed',
        replaced_by: added[0]?.tokenId ?? null,
        status: connection.status,
      },
    });
  }
  await destroyGrant(tx, grantId);
  await recordAudit(tx, ctx.actor, audit);
  return left.map(connectionRef);
}
