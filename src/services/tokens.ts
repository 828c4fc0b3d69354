import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Secret } from '../crypto/secret.js';
import type { Db } from '../db/client.js';
import { errorMessage } from '../db/errors.js';
import * as appStore from '../db/store/apps.js';
import type { ConnectionRow } from '../db/store/connections.js';
import * as connectionStore from '../db/store/connections.js';
import type { GrantRow } from '../db/store/tokens.js';
import * as tokenStore from '../db/store/tokens.js';
import { CredvaultError, DatabaseError, ReauthRequiredError, UnavailableError } from '../errors.js';
import type { PlatformId } from '../providers/catalog.js';
import { ProviderError, type ProviderFailure } from '../providers/errors.js';
import { providerFor } from '../providers/registry.js';
import type { ProviderApp, TokenResult } from '../providers/types.js';
import { jitter, sleep } from '../util/backoff.js';
import { withDeadline } from '../util/deadline.js';
import { redact } from '../util/redact.js';
import { connectionRef } from '../views.js';
import { type AuditEntry, type AuditHead, chainAfter, lockAuditHead, recordAudit } from './audit.js';
import { resolveConnection } from './connections.js';
import type { ServiceContext } from './context.js';
import { expiryColumns, grantSlot, openToken, refreshTokenExpiry, tokenSha256 } from './grants.js';
import { errorForKind, providerFailure, retryDelayMs } from './platform-calls.js';
import { providerApp } from './provider-app.js';
import { untilReachable, WRITE_PATIENCE_MS } from './reachable.js';

/**
 * Valid access tokens, refreshed at most once per expiry across processes and hosts.
 *
 * A refresher takes a short lease on the grant row (a conditional UPDATE, judged by the database's
 * clock), re-reads the row it got and refreshes only if it still has to. The platform call's budget is
 * shorter than the lease. Everyone else polls the row until its version moves or the lease lapses;
 * inside one process, callers share one promise per grant. The answer, a rotated refresh token
 * included, is written at once with a version check, so a writer whose lease lapsed and was taken
 * over cannot overwrite a newer token. Failures are classified: a dead grant marks the connection
 * `needs_reauth` at once; timeouts, 5xx and 429 are retried with backoff and jitter (honouring
 * Retry-After), counted, and mark `error` at three in a row; the stored refresh token is never erased.
 * After a failure the grant cools down: reads within the cool-down answer from the recorded failure.
 */

export const ERROR_THRESHOLD = 3;
const MAX_ATTEMPTS = 3;
const COOLDOWN_BASE_MS = 30_000;
const COOLDOWN_MAX_MS = 15 * 60_000;

/** The lease outlives the whole platform call (every attempt and wait) with room to write the answer. */
export function leaseMs(httpTimeoutMs: number): number {
  return 2 * httpTimeoutMs + 10_000;
}

/** How long a refresh waits for another process's refresh of the same grant before it gives up. */
function waitForOthersMs(httpTimeoutMs: number): number {
  return 2 * leaseMs(httpTimeoutMs) + 10_000;
}

/**
 * The longest a caller's refresh of a grant may take (freshGrant): waiting for another process's
 * refresh of it until it gives up, then one of its own under a lease.
 */
export function longestRefreshMs(httpTimeoutMs: number): number {
  return waitForOthersMs(httpTimeoutMs) + leaseMs(httpTimeoutMs);
}

/** The least lease a refresh may start on: one whole attempt, and the 5 s kept for writing, with room. */
function leaseToStartMs(httpTimeoutMs: number): number {
  return httpTimeoutMs + 10_000;
}

function cooldownMs(failures: number, retryAfterSeconds: number | null): number {
  const backoff = jitter(Math.min(COOLDOWN_MAX_MS, COOLDOWN_BASE_MS * 2 ** Math.max(0, failures - 1)));
  return Math.max(backoff, (retryAfterSeconds ?? 0) * 1000);
}

export interface ServedToken {
  accessToken: Secret;
  tokenType: string;
  expiresAt: Date | null;
  connection: ConnectionRow;
  refreshed: boolean;
}

export interface TokenRequest {
  /** Refresh first if the token expires within this many seconds. */
  minTtlSeconds: number;
  /** Refresh whatever time is left (`connections refresh`). */
  forceRefresh?: boolean;
  /** Also try a connection in `error` or cooling down (`--force`). */
  bypassCooldown?: boolean;
  /** What the token is for, for the audit log. */
  purpose: string;
  /**
   * The app to refresh with instead of the one stored (secrets opened): an import's, as its file makes
   * it before it is stored. Such a refresh is this caller's own (not shared with others in the
   * process), and a refusal of the app itself (the platform's invalid_client) is not recorded on the
   * grant: it says nothing of the grant, nor of the app as stored.
   */
  app?: ProviderApp;
}

function isFresh(
  grant: Pick<GrantRow, 'accessTokenEnc' | 'accessTokenExpiresAt' | 'lastRefreshedAt'>,
  minTtlMs: number,
): boolean {
  if (!grant.accessTokenEnc) return false;
  if (!grant.accessTokenExpiresAt) return true; // the platform gave no lifetime: valid until refused
  return grant.accessTokenExpiresAt.getTime() - Date.now() > attainableTtlMs(grant, minTtlMs);
}

/**
 * The time left a token must have to serve a caller asking for `minTtlMs`. A min-ttl that no refresh
 * can meet (Google's tokens live 3599 s: `--min-ttl 3600`) asks for the newest token there is: one
 * refreshed within the last minute (within the first half of its life, for tokens that live less
 * than two), rather than a refresh at every call. So does one that only a token a few seconds old
 * meets (`--min-ttl 3595`): taken as asked, it had every caller (a daemon client too) refresh the
 * grant every few seconds.
 */
function attainableTtlMs(
  grant: Pick<GrantRow, 'accessTokenExpiresAt' | 'lastRefreshedAt'>,
  minTtlMs: number,
): number {
  if (!grant.accessTokenExpiresAt || !grant.lastRefreshedAt) return minTtlMs;
  const lifetime = grant.accessTokenExpiresAt.getTime() - grant.lastRefreshedAt.getTime();
  if (lifetime <= 0) return minTtlMs;
  return Math.min(minTtlMs, lifetime - Math.min(60_000, lifetime / 2));
}

/** Refuses connections that need a person before any token can be had. */
function assertUsable(connection: ConnectionRow): string {
  const ref = connectionRef(connection);
  if (connection.status === 'revoked' || !connection.tokenId) {
    throw new ReauthRequiredError(`connection ${ref} was revoked`, {
      hint: `Connect it again with \`credvault connect ${connection.platform}\`.`,
    });
  }
  if (connection.status === 'needs_reauth') {
    throw new ReauthRequiredError(
      `connection ${ref} needs a person to connect it again: ${connection.statusMessage ?? 'the platform refused its refresh token'}`,
      { hint: `Run \`credvault connect ${connection.platform} --account ${connection.externalAccountId}\`.` },
    );
  }
  return connection.tokenId;
}

/**
 * The failure recorded on a grant that is cooling down, as the error its kind calls for. `now` is the
 * database's clock when the grant was read (cool-downs are written by it).
 */
function recordedFailure(grant: GrantRow, connection: ConnectionRow, now: Date): CredvaultError {
  const until = grant.cooldownUntil!;
  const retryAfter = Math.max(1, Math.ceil((until.getTime() - now.getTime()) / 1000));
  const message = `the last refresh of ${connectionRef(connection)} failed at ${grant.lastErrorAt?.toISOString() ?? 'an unknown time'} (${grant.lastErrorMessage ?? 'no detail'}); not calling the platform again before ${until.toISOString()}`;
  const hint = `Wait ${retryAfter}s, or force a refresh with \`credvault connections refresh ${connectionRef(connection)} --force\`.`;
  return errorForKind((grant.lastErrorCode as ProviderFailure | null) ?? 'transient', message, {
    retryAfter,
    hint,
  });
}

/**
 * A refresh the platform just refused, its cool-down recorded until `until`: the contract's error for
 * the failure, whose retryAfter (and hint) is the time left of that cool-down, as the next call's
 * refusal (recordedFailure) says.
 */
function cooledDown(error: ProviderError, connection: ConnectionRow, until: Date): unknown {
  const failure = providerFailure(error, `refreshing ${connectionRef(connection)} failed`);
  if (!(failure instanceof UnavailableError)) return failure;
  const retryAfter = Math.max(1, Math.ceil((until.getTime() - Date.now()) / 1000));
  return new UnavailableError(
    `${failure.message}; not calling the platform again before ${until.toISOString()}`,
    {
      retryAfter,
      hint: `Wait ${retryAfter}s, or force a refresh with \`credvault connections refresh ${connectionRef(connection)} --force\`.`,
      cause: error,
    },
  );
}

/** The one process-wide refresh per grant that concurrent callers share. */
const inflight = new Map<string, Promise<{ grant: GrantRow; refreshed: boolean }>>();

/**
 * The connection's grant with an access token valid for `minTtlSeconds`, refreshed first when it is
 * not (or when `forceRefresh`). Opens nothing and audits only refreshes: the caller serves the token.
 */
export async function freshGrant(
  ctx: ServiceContext,
  connection: ConnectionRow,
  request: TokenRequest,
): Promise<{ grant: GrantRow; refreshed: boolean }> {
  const grantId = assertUsable(connection);
  const minTtlMs = request.minTtlSeconds * 1000;
  const grant = await tokenStore.get(ctx.db, grantId);
  if (!grant) throw new ReauthRequiredError(`connection ${connectionRef(connection)} has no tokens`);
  // A connection in `error` is refused while it cools down, whatever time its token has left (cli.md:
  // exit 4, a person must look). Once the cool-down is over, a caller tries the platform again, as the
  // daemon's sweep does: a platform that was down or rate limiting for a while must not leave every
  // caller without a daemon refused until a person forces a refresh. A refresh that works makes it
  // active again; one that fails counts, and cools down longer.
  if (connection.status === 'error' && !request.bypassCooldown) {
    const current = await tokenStore.getWithClock(ctx.db, grantId);
    if (!current) throw new ReauthRequiredError(`connection ${connectionRef(connection)} has no tokens`);
    const until =
      current.cooldownUntil && current.cooldownUntil > current.dbNow ? current.cooldownUntil : null;
    if (!until) return ensureFresh(ctx, connection, current, minTtlMs, { ...request, forceRefresh: true });
    // The app's own credentials refused (a secret rotated at the platform): connecting again would
    // fail on the same secret; the app is what to fix.
    const app = current.lastErrorCode === 'client' ? await appStore.getById(ctx.db, connection.appId) : null;
    throw new ReauthRequiredError(
      `connection ${connectionRef(connection)} failed to refresh ${connection.consecutiveFailures} times in a row (last: ${connection.statusMessage ?? 'unknown'}); it is tried again after ${until.toISOString()}`,
      {
        hint: app
          ? `The platform refused the app itself: update its client secret (\`credvault apps update ${app.platform}/${app.label} --new-client-secret\`), then \`credvault connections refresh ${connectionRef(connection)} --force\`.`
          : `Try \`credvault connections refresh ${connectionRef(connection)} --force\`, or connect it again.`,
      },
    );
  }
  if (!request.forceRefresh && isFresh(grant, minTtlMs)) return { grant, refreshed: false };
  // An access token stored without a refresh token (a LinkedIn app that is no Marketing Developer
  // Platform partner, by connect or import): nothing can renew it, and it is not dead while it lasts.
  // A refresh asked of it (connections refresh, a min-ttl beyond its end) is refused without marking
  // the connection: needs_reauth would stop serving a token that still works for weeks. Once it has
  // ended, the refresh below finds no refresh token and marks the connection as before.
  const ends = grant.accessTokenExpiresAt;
  if (grant.refreshTokenEnc === null && ends && ends.getTime() > Date.now()) {
    throw new ReauthRequiredError(
      `connection ${connectionRef(connection)} has an access token and no refresh token: nothing can renew it, and it ends at ${ends.toISOString()}${request.forceRefresh ? '' : `, sooner than the ${request.minTtlSeconds} s asked (--min-ttl)`}`,
      {
        hint: `Until then it is served as it is (ask with a smaller --min-ttl). Connect it again before it ends: \`credvault connect ${connection.platform} --account ${connection.externalAccountId}\`.`,
      },
    );
  }
  return ensureFresh(ctx, connection, grant, minTtlMs, request);
}

export async function getValidAccessToken(
  ctx: ServiceContext,
  ref: string,
  request: TokenRequest,
): Promise<ServedToken> {
  const connection = await resolveConnection(ctx.db, ref);
  const { grant: served, refreshed } = await freshOrRefused(ctx, connection, request);
  return ctx.transaction(async (tx) => {
    // Still this connection's grant, read once the audit log's head is this transaction's: a revocation
    // (or a reconnect) writes its own record under that lock before it commits, so one that committed
    // while this process was between its refresh and here (a stall) is seen and not served past, and
    // one still under way is recorded after this serve. A plain read after the head: no lock taken on
    // the grant, so no lock order against the writers that take the grant first (a refresh's write).
    // A grant deleted leaves its connections' token_id null (the foreign key's SET NULL).
    const head = await lockAuditHead(tx);
    const current = await connectionStore.getById(tx, connection.id);
    if (!current || current.status === 'revoked' || current.tokenId === null) {
      throw new ReauthRequiredError(`connection ${connectionRef(connection)} was revoked meanwhile`, {
        hint: `Connect it again with \`credvault connect ${connection.platform}\`.`,
      });
    }
    // Marked meanwhile as needing a person (a revocation the platform could not be told of yet,
    // another process's refused refresh): no longer served, as it would not be from here on.
    if (current.status === 'needs_reauth') assertUsable(current);
    if (current.tokenId !== served.id) {
      throw new UnavailableError(
        `connection ${connectionRef(connection)} was connected again meanwhile; ask for its token again`,
        { retryAfter: 1 },
      );
    }
    const accessToken = await openToken(ctx, served, 'access');
    if (!accessToken)
      throw new ReauthRequiredError(`connection ${connectionRef(connection)} has no access token`);
    // Fail closed: no audit row, no token.
    await recordAudit(
      tx,
      ctx.actor,
      {
        action: 'token.serve',
        targetType: 'connection',
        targetId: connection.id,
        connectionId: connection.id,
        outcome: 'success',
        detail: { purpose: request.purpose, min_ttl: request.minTtlSeconds, refreshed },
      },
      new Date(),
      head,
    );
    return {
      accessToken,
      tokenType: served.tokenType,
      expiresAt: served.accessTokenExpiresAt,
      connection: current,
      refreshed,
    };
  });
}

/**
 * The audit entry of a token asked for and not handed out: the connection needs a person, is cooling
 * down, or its platform is down. Refreshes already audit themselves; this records the request, so
 * `audit list --connection` shows who kept asking for a token it could not have.
 */
export function refusalEntry(
  connection: ConnectionRow,
  error: unknown,
  detail: Record<string, unknown>,
): AuditEntry | null {
  if (!(error instanceof CredvaultError)) return null;
  if (error.code !== 'reauth_required' && error.code !== 'unavailable') return null;
  return refusedServe(connection, 'failure', error.code, detail);
}

/** The `token.serve` row of a token not handed out, with why (`error`). */
export function refusedServe(
  connection: ConnectionRow,
  outcome: 'failure' | 'denied',
  code: string,
  detail: Record<string, unknown>,
): AuditEntry {
  return {
    action: 'token.serve',
    targetType: 'connection',
    targetId: connection.id,
    connectionId: connection.id,
    outcome,
    detail: { ...detail, error: code },
  };
}

async function recordRefusal(
  ctx: ServiceContext,
  connection: ConnectionRow,
  request: TokenRequest,
  error: unknown,
): Promise<void> {
  const entry = refusalEntry(connection, error, { purpose: request.purpose, min_ttl: request.minTtlSeconds });
  if (!entry) return;
  // Nothing is handed out either way: when the row cannot be written, the refusal's own error (what
  // the caller must do) is the one to report, not the audit log's.
  await ctx.transaction((tx) => recordAudit(tx, ctx.actor, entry)).catch(() => {});
}

/** freshGrant, with a refusal put on record before it is thrown (recordRefusal). */
async function freshOrRefused(
  ctx: ServiceContext,
  connection: ConnectionRow,
  request: TokenRequest,
): ReturnType<typeof freshGrant> {
  try {
    return await freshGrant(ctx, connection, request);
  } catch (error) {
    await recordRefusal(ctx, connection, request, error);
    throw error;
  }
}

/** What `connections refresh` did: the connection as it is now, and its access token's end. */
export interface RefreshedConnection {
  connection: ConnectionRow;
  /** This caller's refresh, not one another process made meanwhile. */
  refreshed: boolean;
  expiresAt: Date | null;
}

/**
 * Refreshes a connection now (`connections refresh`, the admin API's refresh route), whatever time
 * its token has left. It hands out no token, so it opens none: the request is on record as
 * `connection.refresh` (the platform call as `token.refresh`), a refusal as any token request's is.
 */
export async function refreshConnection(
  ctx: ServiceContext,
  ref: string,
  force: boolean,
): Promise<RefreshedConnection> {
  const connection = await resolveConnection(ctx.db, ref);
  const request: TokenRequest = {
    minTtlSeconds: 0,
    forceRefresh: true,
    bypassCooldown: force,
    purpose: 'connections refresh',
  };
  const fresh = await freshOrRefused(ctx, connection, request);
  return ctx.transaction(async (tx) => {
    await recordAudit(tx, ctx.actor, {
      action: 'connection.refresh',
      targetType: 'connection',
      targetId: connection.id,
      connectionId: connection.id,
      outcome: 'success',
      detail: { refreshed: fresh.refreshed, force },
    });
    return {
      connection: (await connectionStore.getById(tx, connection.id)) ?? connection,
      refreshed: fresh.refreshed,
      expiresAt: fresh.grant.accessTokenExpiresAt,
    };
  });
}

/**
 * The grant refreshed for this caller, or by someone else since `read` was read: a refresh that
 * finished after the caller asked serves it whatever its min-ttl (asking the platform again would
 * bring a token no longer-lived: a min-ttl beyond what the platform gives is met by the newest token
 * it gave, not by one refresh per caller). `refreshed`: this caller's own refresh (the audit says so).
 */
async function ensureFresh(
  ctx: ServiceContext,
  connection: ConnectionRow,
  read: GrantRow,
  minTtlMs: number,
  request: TokenRequest,
): Promise<{ grant: GrantRow; refreshed: boolean }> {
  // Refreshing with credentials of its own, a caller shares no one's refresh, and no one shares its.
  if (request.app) return refreshLoop(ctx, connection, read, minTtlMs, request);
  // Callers asking the same thing share one refresh; what it brings back must still meet each
  // caller's own min-ttl, unless it is newer than what the caller read.
  const key = `${read.id}:${request.forceRefresh ? 'force' : ''}:${request.bypassCooldown ? 'bypass' : ''}`;
  const shared = inflight.get(key);
  if (shared) {
    const { grant } = await shared;
    if (request.forceRefresh || isFresh(grant, minTtlMs) || grant.version !== read.version)
      return { grant, refreshed: false };
  }
  const pending = refreshLoop(ctx, connection, read, minTtlMs, request).finally(() => inflight.delete(key));
  inflight.set(key, pending);
  return pending;
}

async function refreshLoop(
  ctx: ServiceContext,
  connection: ConnectionRow,
  read: GrantRow,
  minTtlMs: number,
  request: TokenRequest,
): Promise<{ grant: GrantRow; refreshed: boolean }> {
  const grantId = read.id;
  const owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const lease = leaseMs(ctx.config.httpTimeoutMs);
  const giveUpAt = Date.now() + waitForOthersMs(ctx.config.httpTimeoutMs);
  let forced = request.forceRefresh === true;
  for (;;) {
    const row = await tokenStore.getWithClock(ctx.db, grantId);
    if (!row) throw new ReauthRequiredError(`connection ${connectionRef(connection)} was revoked meanwhile`);
    // Someone else's refresh since the caller read the grant is the caller's too.
    if (!forced && (isFresh(row, minTtlMs) || row.version !== read.version))
      return { grant: row, refreshed: false };
    if (!request.bypassCooldown && row.cooldownUntil && row.cooldownUntil > row.dbNow) {
      throw recordedFailure(row, connection, row.dbNow);
    }
    // Before the statement that takes the lease: its end, counted from here, is never later than the
    // database's.
    const leasedAt = Date.now();
    const leased = await tokenStore.tryLease(ctx.db, grantId, owner, lease);
    if (!leased) {
      if (Date.now() > giveUpAt) {
        throw new UnavailableError(
          `another process has held the refresh of ${connectionRef(connection)} for too long`,
          { retryAfter: 5 },
        );
      }
      // Their refresh is ours (not one with an app of the caller's own: it is that app's to prove).
      if ((await waitForOthers(ctx, grantId, row.version, giveUpAt)) && !request.app) forced = false;
      continue;
    }
    if (leased.version !== row.version && !request.app) forced = false;
    if (!forced && (isFresh(leased, minTtlMs) || leased.version !== read.version)) {
      await tokenStore.releaseLease(ctx.db, grantId, owner);
      return { grant: leased, refreshed: false };
    }
    try {
      return {
        grant: await refreshWithLease(ctx, connection, leased, owner, lease, {
          app: request.app,
          leasedAt,
        }),
        refreshed: true,
      };
    } catch (error) {
      if (!(error instanceof LeaseLost)) throw error;
      // Nothing was sent: the lease (and an in-flight mark) go back if still ours; read the grant
      // again (another refresher's answer is ours), and lease again.
      await tokenStore.unclaim(ctx.db, leased, owner);
    }
  }
}

/**
 * Polls until the grant's version moves (true), or its lease lapses by the database's clock, or the
 * caller's time is up (false).
 */
async function waitForOthers(
  ctx: ServiceContext,
  grantId: string,
  version: number,
  giveUpAt: number,
): Promise<boolean> {
  for (let delay = 50; ; delay = Math.min(delay * 2, 400)) {
    await sleep(jitter(delay, 0.5));
    const row = await tokenStore.getWithClock(ctx.db, grantId);
    if (!row || row.version !== version) return true;
    if (!row.leaseExpiresAt || row.leaseExpiresAt <= row.dbNow || Date.now() > giveUpAt) return false;
  }
}

/**
 * Apps as a refresh needs them (secrets opened), kept for a few seconds: a daemon's sweep refreshes
 * many grants of the same app. A changed app is seen within APP_TTL_MS (or at once after SIGHUP).
 */
const APP_TTL_MS = 10_000;
const openApps = new Map<string, { at: number; app: Promise<ProviderApp> }>();

function openApp(ctx: ServiceContext, appId: string): Promise<ProviderApp> {
  const hit = openApps.get(appId);
  if (hit && Date.now() - hit.at < APP_TTL_MS) return hit.app;
  const app = (async () => {
    const record = await appStore.getById(ctx.db, appId);
    if (!record) throw new ReauthRequiredError('the app of this connection was removed');
    return providerApp(ctx, ctx.db, record, { secrets: true });
  })();
  openApps.set(appId, { at: Date.now(), app });
  app.catch(() => openApps.delete(appId));
  return app;
}

export function forgetOpenApps(): void {
  openApps.clear();
}

/**
 * A refresh that did not send its request because its lease was no longer safely its own: lapsed (by
 * the database's clock: another refresher may have taken it and used the refresh token since), or too
 * little of it left for a platform call to end within it (the process stalled: a VM paused, a
 * container frozen). Nothing was sent and nothing is recorded; the caller reads the grant again.
 */
class LeaseLost extends Error {}

/** A refresh not sent because this process still holds the previous one's answer, unstored. */
class AnswerUnstored extends UnavailableError {
  constructor(connection: ConnectionRow) {
    super(
      `the last refresh of ${connectionRef(connection)} is still waiting for the database to store its answer; try again in a few seconds`,
      { retryAfter: 5 },
    );
  }
}

/** The least of its budget a refresh must have left to send its request (a call's shortest deadline). */
const LEASE_TO_SEND_MS = 1_000;

async function refreshWithLease(
  ctx: ServiceContext,
  connection: ConnectionRow,
  grant: GrantRow,
  owner: string,
  lease: number,
  options: {
    /** When (Date.now()) `lease` ms of the lease were left: the lease's end is counted from it. */
    leasedAt?: number;
    claimed?: boolean;
    writer?: ResultWriter;
    stop?: AbortSignal;
    /** Set once the first request has left for the platform. */
    progress?: { sent: boolean };
    /** The app to refresh with instead of the stored one (TokenRequest.app). */
    app?: ProviderApp | undefined;
    /** Told what a failure of the platform's made of the grant (recordRefreshFailure). */
    onFailure?: ((failure: RecordedFailure) => void) | undefined;
  } = {},
): Promise<GrantRow> {
  const platform = grant.platform as PlatformId;
  // The platform call's deadline ends within the lease, counted from when it was taken, not from
  // whenever this gets to send: time spent opening the app and the token (or a stall) is the lease's.
  const budgetEnds = (options.leasedAt ?? Date.now()) + lease - 5_000;
  let tokens: TokenResult;
  let attempts = 0;
  // An attempt that got no answer (timeout, dropped connection) may still have been processed.
  let unanswered = false;
  let presentedTokenSha256: string | undefined;
  let appLabel: string | null = null;
  try {
    const [papp, refreshToken, provider] = await Promise.all([
      options.app ?? openApp(ctx, grant.appId),
      openToken(ctx, grant, 'refresh'),
      providerFor(platform),
    ]);
    appLabel = papp.label;
    if (!refreshToken)
      throw new ProviderError('dead_grant', 'no refresh token is stored for this connection');
    // A grant stored before refresh_token_sha256 existed (migration 0008) has none, so a person
    // re-adding its token would make a second grant of the same consent. The token is open here
    // anyway (and the refresh is audited): its hash goes with the answer, in the same write. The one
    // presented, not the one a rotation brings back: a person re-adding a token has the one they gave
    // credvault (or the platform gave them), which is the token the grant holds until a refresh rotates
    // it; where tokens do not rotate (Google, LinkedIn, Reddit) it is still the one presented. A rotated
    // token was issued to this process just now and has never left it, so nobody could give it back;
    // and grants stored since 0008 keep the hash of the token as given too, not of a rotated one.
    if (grant.refreshTokenSha256 === null) presentedTokenSha256 = tokenSha256(refreshToken);
    const tooLate = () => budgetEnds - Date.now() < LEASE_TO_SEND_MS;
    if (tooLate()) throw new LeaseLost(`too little of the lease on ${connectionRef(connection)} is left`);
    // This process holds the answer of the last refresh, still to be stored: sending the stored
    // refresh token again would present the one that answer replaced.
    if (unstoredAnswers.has(grant.id)) throw new AnswerUnstored(connection);
    // (A claim by the daemon's sweep marked it already.)
    if (!options.claimed && !(await tokenStore.markInFlight(ctx.db, grant.id, owner))) {
      throw new LeaseLost(`the lease on ${connectionRef(connection)} lapsed before its refresh left`);
    }
    // Checked again right before sending: a stall during the mark counts too.
    if (tooLate()) throw new LeaseLost(`too little of the lease on ${connectionRef(connection)} is left`);
    for (;;) {
      attempts += 1;
      if (options.progress) options.progress.sent = true;
      const remaining = budgetEnds - Date.now();
      try {
        tokens = await withDeadline(Math.max(1, Math.min(ctx.config.httpTimeoutMs, remaining)), (signal) =>
          provider.refresh(papp, refreshToken, { signal }, grant.scope),
        );
        break;
      } catch (error) {
        if (error instanceof ProviderError && error.unanswered) unanswered = true;
        if (!(error instanceof ProviderError) || !error.retryable || attempts >= MAX_ATTEMPTS) throw error;
        const wait = retryDelayMs(error, attempts);
        if (Date.now() + wait + 1000 > budgetEnds) throw error;
        // A daemon stopping does not sit out a platform's Retry-After: the failure is recorded now
        // (the platform answered; nothing is in doubt) and the grant is tried again later.
        if (!(await sleep(wait, options.stop))) throw error;
        // Woken later than asked (a stall): a try that could not end within the lease is not made.
        if (budgetEnds - Date.now() < 1000) throw error;
      }
    }
  } catch (error) {
    // Nothing left: nothing to record (the caller reads the grant again).
    if (error instanceof LeaseLost) throw error;
    if (error instanceof AnswerUnstored) {
      await tokenStore.unclaim(ctx.db, grant, owner).catch(() => {});
      throw error;
    }
    if (options.app && error instanceof ProviderError && error.kind === 'client') {
      await recordRefusedApp(ctx, grant, connection.id, owner, error, attempts, unanswered);
    } else {
      const recorded = await recordRefreshFailure(
        ctx,
        grant,
        connection.id,
        owner,
        error,
        attempts,
        unanswered,
      );
      if (recorded) options.onFailure?.({ ...recorded, appLabel });
      // The wait the caller is told is the cool-down just recorded (the longer of the backoff and the
      // platform's Retry-After), not the platform's alone: a caller that came back after the
      // platform's 5 s was refused until the cool-down's end. (The cause keeps the platform's own
      // Retry-After, which the daemon's per-platform pause reads.)
      if (recorded?.recorded && recorded.retryAfter) {
        throw cooledDown(error as ProviderError, connection, recorded.retryAfter);
      }
    }
    throw error instanceof ProviderError
      ? providerFailure(error, `refreshing ${connectionRef(connection)} failed`)
      : error;
  }
  return storeRefreshed(
    ctx,
    connection,
    grant,
    owner,
    tokens,
    attempts,
    platform,
    presentedTokenSha256,
    options.writer ?? writeAlone(ctx),
  );
}

/** A refreshed grant ready to be written: its new ciphertexts and the audit record that goes with it. */
export interface RefreshResult {
  grant: GrantRow;
  owner: string;
  /** The grant's connections had failures or another status to clear. */
  recovering: boolean;
  tokens: tokenStore.RefreshedTokens;
  audit: AuditEntry;
}

/**
 * What a refresh's answer writes on the grant (RefreshResult.tokens): its tokens sealed under the
 * grant's data key, and when the refresh token stops working (refreshTokenExpiry, from the grant's
 * end as read). A response without a refresh token (or scope) keeps the stored one. Every writer of a
 * refresh's answer builds it here: the token service, the refresh of a dead grant's consent an import
 * makes (held-grants), and an adoption's answer kept on a grant stored while it was out.
 */
export async function sealRefreshed(
  ctx: ServiceContext,
  grant: Pick<
    GrantRow,
    'id' | 'platform' | 'dataKeyId' | 'refreshTokenExpiresAt' | 'refreshTokenExpiryFixed'
  >,
  tokens: TokenResult,
): Promise<tokenStore.RefreshedTokens> {
  const keyring = await ctx.keyring();
  const now = new Date();
  return {
    accessTokenEnc: await keyring.encrypt(
      tokens.accessToken,
      grantSlot(grant.id, 'access_token_enc'),
      grant.dataKeyId,
    ),
    ...(tokens.refreshToken
      ? {
          refreshTokenEnc: await keyring.encrypt(
            tokens.refreshToken,
            grantSlot(grant.id, 'refresh_token_enc'),
            grant.dataKeyId,
          ),
        }
      : {}),
    tokenType: tokens.tokenType,
    ...(tokens.scope ? { scope: tokens.scope } : {}),
    accessTokenExpiresAt: tokens.expiresAt,
    ...expiryColumns(
      refreshTokenExpiry(grant.platform as PlatformId, tokens, now, {
        at: grant.refreshTokenExpiresAt,
        fixed: grant.refreshTokenExpiryFixed,
      }),
    ),
    lastRefreshedAt: now,
  };
}

/**
 * Writes refresh results. The token service writes each in its own transaction; the daemon's sweep
 * groups the results that finish together into one (see RefreshBatcher), so the audit chain's head
 * is locked once per group, not once per refresh.
 */
export type ResultWriter = (result: RefreshResult) => Promise<GrantRow | null>;

/**
 * Writes results in one statement with their audit records chained after `known`, the audit head
 * this process wrote last (tokenStore.writeRefreshedChained): the daemon's sweep, when nothing else
 * wrote to the audit log since. Null when that cannot be (another writer moved the head, a result
 * lost its lease, or a connection has a status to clear): nothing is written then, and the caller
 * uses writeResults.
 */
export async function writeResultsChained(
  ctx: ServiceContext,
  results: RefreshResult[],
  known: AuditHead,
): Promise<{ rows: GrantRow[]; head: AuditHead } | null> {
  if (results.some((result) => result.recovering)) return null;
  // The same grant twice (claimed again by this daemon after its own lease lapsed): the statement's
  // count of matching rows would not be the count of grants written.
  if (new Set(results.map((result) => result.grant.id)).size !== results.length) return null;
  const { rows: auditRows, head } = chainAfter(
    ctx.actor,
    results.map((result) => result.audit),
    known,
  );
  const written = await tokenStore.writeRefreshedChained(
    ctx.db,
    results.map((result) => ({
      id: result.grant.id,
      owner: result.owner,
      version: result.grant.version,
      dataKeyId: result.grant.dataKeyId,
      tokens: result.tokens,
    })),
    auditRows,
    known,
    head,
  );
  if (!written) return null;
  return {
    rows: results.map((result) => written.rows.get(result.grant.id)!),
    head: { ...head, rowCount: written.rowCount },
  };
}

/**
 * Writes results in the caller's transaction: version-checked tokens, the connections, then the audit
 * records. `notify`: tell daemons to drop the tokens they hold for these grants (a refresh outside the
 * sweep: `token get`, `connections refresh`); the sweep's own writes do not (see writeRefreshed).
 */
export async function writeResults(
  ctx: ServiceContext,
  tx: Db,
  results: RefreshResult[],
  { notify = false }: { notify?: boolean } = {},
): Promise<{ rows: Array<GrantRow | null>; head: AuditHead | null }> {
  const written = await tokenStore.writeRefreshed(
    tx,
    results.map((result) => ({
      id: result.grant.id,
      owner: result.owner,
      version: result.grant.version,
      dataKeyId: result.grant.dataKeyId,
      tokens: result.tokens,
    })),
    { notify },
  );
  const rows = results.map((result) => written.get(result.grant.id) ?? null);
  for (const [index, result] of results.entries()) {
    // Connections that were fine stay untouched; one that had failures is healthy again.
    if (rows[index] && result.recovering) await connectionStore.reviveByGrant(tx, result.grant.id);
  }
  // Of the answers not written, those whose grant is gone: revoked (or replaced by a reconnect) meanwhile.
  const gone = new Set<string>();
  for (const [index, result] of results.entries())
    if (!rows[index] && !(await tokenStore.get(tx, result.grant.id))) gone.add(result.grant.id);
  // The audit records come last: the chain head is locked only for the end of the transaction.
  const head = await recordAudit(
    tx,
    ctx.actor,
    results.map((result, index) =>
      rows[index]
        ? result.audit
        : {
            ...result.audit,
            outcome: 'failure',
            detail: {
              ...result.audit.detail,
              problem: gone.has(result.grant.id)
                ? 'the grant was revoked (or replaced by a reconnect) while this refresh was out; this answer was discarded'
                : 'the grant changed while this refresh was out (another refresher, or a re-encryption, after its lease lapsed); this answer was discarded',
            },
          },
    ),
  );
  return { rows, head };
}

/**
 * A refresh's answer written by itself (token get, exec, connections refresh). The answer, a rotated
 * refresh token included, exists only in this process until it is written: a write lost with its
 * connection (a failover, a session terminated, a statement or lock timeout) is tried again on a new
 * one, a few times over a few seconds, as the daemon's writes are (RefreshBatcher). A write that
 * committed and whose answer was lost is found stored (a sealed token is unique: a fresh nonce each
 * time) and not written again. The version check still keeps a lapsed writer from a newer token.
 */
const writeAlone =
  (ctx: ServiceContext): ResultWriter =>
  (result) =>
    writeUntilStored(
      ctx,
      result,
      async () =>
        (await ctx.transaction((tx) => writeResults(ctx, tx, [result], { notify: true }))).rows[0] ?? null,
      WRITE_PATIENCE_MS,
    );

/**
 * Refresh answers this process holds and has not yet stored, by grant: no refresh of theirs is sent
 * from this process meanwhile (it would present the refresh token the platform has just replaced).
 */
const unstoredAnswers = new Map<string, number>();

/** The grants whose refresh answers this process holds unstored (a daemon stopping names them). */
export function unstoredGrants(): string[] {
  return [...unstoredAnswers.keys()];
}

/** Marks an answer of `grantId` as held by this process until the function returned is called. */
export function holdUnstored(grantId: string): () => void {
  unstoredAnswers.set(grantId, (unstoredAnswers.get(grantId) ?? 0) + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const left = (unstoredAnswers.get(grantId) ?? 1) - 1;
    if (left > 0) unstoredAnswers.set(grantId, left);
    else unstoredAnswers.delete(grantId);
  };
}

/**
 * Writes a refresh's answer with `write`; while the database cannot be reached or does not answer,
 * tries again (with back-off, up to `patienceMs`), finding one that committed unseen stored (a sealed
 * token is unique: a fresh nonce each time). The version check keeps a writer that waited from
 * overwriting a newer token. Past the patience, the error says what was lost.
 */
export async function writeUntilStored(
  ctx: ServiceContext,
  result: RefreshResult,
  write: () => Promise<GrantRow | null>,
  patienceMs: number,
): Promise<GrantRow | null> {
  const release = holdUnstored(result.grant.id);
  try {
    return await untilReachable(
      write,
      async () => {
        const stored = await tokenStore.get(ctx.db, result.grant.id);
        return stored && stored.accessTokenEnc === result.tokens.accessTokenEnc ? stored : null;
      },
      { patienceMs, giveUp: (failure, cause) => unstoredError(result, failure, cause) },
    );
  } finally {
    release();
  }
}

/** What a refresh whose answer could not be stored lost: a rotated refresh token, or only an access token. */
function unstoredError(result: RefreshResult, failure: string, cause: unknown): CredvaultError {
  const rotated = result.tokens.refreshTokenEnc !== undefined;
  return new DatabaseError(
    rotated
      ? `the platform answered the refresh of grant ${result.grant.id} with a new refresh token, and it could not be stored (${failure}) before giving up: the platform has probably ended the old one, so its connections may need \`credvault connect\` again`
      : `the refresh of grant ${result.grant.id} could not be stored (${failure}); the stored refresh token still works: try again once the database answers`,
    { cause },
  );
}

async function storeRefreshed(
  ctx: ServiceContext,
  connection: ConnectionRow,
  grant: GrantRow,
  owner: string,
  tokens: TokenResult,
  attempts: number,
  platform: PlatformId,
  /** The presented refresh token's SHA-256, for a grant that has none (see refreshWithLease). */
  presentedTokenSha256: string | undefined,
  writer: ResultWriter,
): Promise<GrantRow> {
  const written = await writer({
    grant,
    owner,
    recovering:
      connection.status !== 'active' || connection.consecutiveFailures > 0 || grant.lastErrorCode !== null,
    tokens: {
      ...(await sealRefreshed(ctx, grant, tokens)),
      ...(presentedTokenSha256 ? { presentedTokenSha256 } : {}),
    },
    audit: {
      action: 'token.refresh',
      targetType: 'grant',
      targetId: grant.id,
      // The connection the refresh was for (its grant may serve several): `audit list --connection`.
      connectionId: connection.id,
      outcome: 'success',
      detail: {
        platform,
        attempts,
        rotated: Boolean(tokens.refreshToken),
        // host:pid of the refresher, so a fleet's work can be told apart.
        by: owner.split(':').slice(0, 2).join(':'),
        ...(grant.refreshInFlightSince
          ? { recovered_unrecorded_refresh_from: grant.refreshInFlightSince.toISOString() }
          : {}),
      },
    },
  });
  if (written) return written;
  const row = await tokenStore.get(ctx.db, grant.id);
  if (!row) throw new ReauthRequiredError('the connection was revoked while refreshing');
  if (!isFresh(row, 0)) {
    throw new UnavailableError('another refresher took over this refresh and has not finished it', {
      retryAfter: 2,
    });
  }
  return row;
}

/** The audit entry of a refresh the platform did not answer with tokens. */
function failedRefreshEntry(
  grant: GrantRow,
  connectionId: string,
  error: ProviderError,
  attempts: number,
  problem?: string,
): AuditEntry {
  return {
    action: 'token.refresh',
    targetType: 'grant',
    targetId: grant.id,
    // The connection the refresh was for (its grant may serve several): `audit list --connection`.
    connectionId,
    outcome: 'failure',
    detail: {
      platform: grant.platform,
      kind: error.kind,
      code: error.platformCode,
      status: error.status,
      attempts,
      ...(problem ? { problem } : {}),
    },
  };
}

async function recordRefreshFailure(
  ctx: ServiceContext,
  grant: GrantRow,
  connectionId: string,
  owner: string,
  error: unknown,
  attempts: number,
  unanswered: boolean,
): Promise<RecordedFailure | null> {
  if (!(error instanceof ProviderError)) {
    // Not the platform's answer (a key or database problem): free the lease, record nothing.
    await tokenStore.releaseLease(ctx.db, grant.id, owner).catch(() => {});
    return null;
  }
  const dead = error.kind === 'dead_grant';
  const lost = grant.refreshInFlightSince
    ? `; an earlier refresh, sent at ${grant.refreshInFlightSince.toISOString()}, never recorded its answer: the platform probably rotated the refresh token then`
    : unanswered && attempts > 1
      ? '; an earlier attempt of this refresh got no answer: the platform probably rotated the refresh token then'
      : '';
  const message = `${error.message}${dead ? lost : ''}`.slice(0, 1000);
  const refreshEntry = failedRefreshEntry(grant, connectionId, error, attempts);
  return ctx.transaction(async (tx): Promise<RecordedFailure> => {
    // Counted from what the connections say now, not from before the platform call.
    const current = await connectionStore.listByGrant(tx, grant.id);
    const failures = (current[0]?.consecutiveFailures ?? 0) + 1;
    const status = dead
      ? 'needs_reauth'
      : failures >= ERROR_THRESHOLD
        ? 'error'
        : (current[0]?.status ?? 'active');
    const waitMs = dead ? null : cooldownMs(failures, error.retryAfter);
    const record: RecordedFailure = {
      kind: error.kind,
      httpStatus: error.status,
      platformCode: error.platformCode,
      message,
      connections: current,
      appLabel: null,
      recorded: false,
      status,
      consecutiveFailures: failures,
      retryAfter: waitMs === null ? null : new Date(Date.now() + waitMs),
    };
    const applied = await tokenStore.recordFailure(tx, grant.id, owner, grant.version, {
      code: error.kind,
      message,
      cooldownMs: waitMs,
      // The platform answered, or was never reached (and no earlier answer is missing): nothing is in
      // doubt. A timeout may have been processed, so it stays on record until a refresh succeeds.
      clearInFlight:
        dead || ((error.status !== null || error.unsent) && !unanswered && !grant.refreshInFlightSince),
    });
    if (!applied) {
      await recordAudit(tx, ctx.actor, {
        ...refreshEntry,
        detail: {
          ...refreshEntry.detail,
          problem: 'another process refreshed meanwhile; this failure was not recorded',
        },
      });
      return record;
    }
    await connectionStore.updateByGrant(tx, grant.id, {
      status,
      statusMessage: message,
      consecutiveFailures: failures,
    });
    const entries = [refreshEntry];
    for (const c of current) {
      if (c.status === status) continue;
      entries.push({
        action: 'connection.status',
        targetType: 'connection',
        targetId: c.id,
        connectionId: c.id,
        outcome: 'success',
        detail: { from: c.status, to: status, kind: error.kind },
      });
    }
    await recordAudit(tx, ctx.actor, entries);
    return { ...record, recorded: true };
  });
}

/** What a failed refresh made of a grant, for the daemon's log (recordRefreshFailure). */
export interface RecordedFailure {
  kind: ProviderFailure;
  /** The platform's HTTP status; null when it did not answer (a timeout, a network failure). */
  httpStatus: number | null;
  /** The platform's own error code (`invalid_grant`, `AADSTS70000` …), when it gave one. */
  platformCode: string | null;
  /** The reason as recorded: what `status` and `connections show` say (status_message). */
  message: string;
  /** The grant's connections as they were before this failure (their status among them). */
  connections: ConnectionRow[];
  /** The label of the app it was refreshed with (null: its app could not be opened). */
  appLabel: string | null;
  /** False: another process refreshed the grant meanwhile, and this failure was not recorded. */
  recorded: boolean;
  /** The connections' status now, and their failures in a row. */
  status: string;
  consecutiveFailures: number;
  /** The end of the grant's cool-down (by this host's clock); null: not before a person connects it again. */
  retryAfter: Date | null;
}

/**
 * The platform refused the app a caller refreshed with instead of the stored one (an import's, as its
 * file makes it): the grant is left as it was (no failure counted, no cool-down, its connections'
 * status unchanged; the lease goes and, unless an earlier attempt got no answer, the in-flight mark
 * is what it was before this refresh), and the refusal is on record.
 */
async function recordRefusedApp(
  ctx: ServiceContext,
  grant: GrantRow,
  connectionId: string,
  owner: string,
  error: ProviderError,
  attempts: number,
  unanswered: boolean,
): Promise<void> {
  // One transaction, as recordDeadGrantFailure's: the lease goes back only with the refusal on record
  // (the grant's row, then the audit head, the order every refresh's write takes them in).
  await ctx.transaction(async (tx) => {
    if (unanswered) await tokenStore.releaseLease(tx, grant.id, owner);
    else await tokenStore.unclaim(tx, grant, owner);
    await recordAudit(
      tx,
      ctx.actor,
      failedRefreshEntry(
        grant,
        connectionId,
        error,
        attempts,
        'the platform refused the app as given for this refresh (not the stored one); not recorded on the grant',
      ),
    );
  });
}

export type RefreshOutcome = 'success' | ProviderFailure | 'lease_lost' | 'skipped' | 'internal';

/**
 * Refreshes a grant the daemon claimed (its lease is `owner`'s already): the same path as `token get`,
 * so one refresh per expiry holds whatever mix of daemons and CLI processes runs. Failures are recorded
 * on the grant as usual; the outcome is returned for metrics, never thrown. `connection` is the
 * grant's first connection as read with the claim; `leaseLeftMs`, what is left of the lease (a claim
 * made ahead of time waited for a slot). With less left than one attempt and the write need, the claim
 * is given back instead: a refresh whose lease lapsed mid-call could meet another refresher's.
 */
export async function refreshClaimed(
  ctx: ServiceContext,
  grant: GrantRow,
  connection: ConnectionRow | undefined,
  owner: string,
  {
    writer,
    leaseLeftMs = leaseMs(ctx.config.httpTimeoutMs),
    onInternal,
    onFailure,
    onRateLimited,
    stop,
  }: {
    writer?: ResultWriter;
    leaseLeftMs?: number;
    /** The platform answered 429: how long it asked to be left alone (seconds), when it said. */
    onRateLimited?: (retryAfterSeconds: number | null) => void;
    /**
     * Told of a failure of credvault's own, and whether the grant now waits before it is tried
     * again (and until when).
     */
    onInternal?: (error: unknown, waits: boolean, until: Date | null) => void;
    /** Told what a failure of the platform's made of the grant. */
    onFailure?: (failure: RecordedFailure) => void;
    /** The daemon is stopping: no wait between tries. */
    stop?: AbortSignal;
  } = {},
): Promise<RefreshOutcome> {
  if (
    !connection ||
    connection.status === 'needs_reauth' ||
    connection.status === 'revoked' ||
    leaseLeftMs < leaseToStartMs(ctx.config.httpTimeoutMs)
  ) {
    await tokenStore.unclaim(ctx.db, grant, owner);
    return 'skipped';
  }
  const progress = { sent: false };
  const leasedAt = Date.now();
  try {
    const before = grant.version;
    const after = await refreshWithLease(ctx, connection, grant, owner, leaseLeftMs, {
      leasedAt,
      claimed: true,
      writer,
      progress,
      onFailure,
      ...(stop ? { stop } : {}),
    });
    internalFailures.delete(grant.id);
    return after.version > before ? 'success' : 'lease_lost';
  } catch (error) {
    if (error instanceof LeaseLost) {
      // Nothing was sent: the claim goes back (its in-flight mark with it), to be claimed again.
      await tokenStore.unclaim(ctx.db, grant, owner);
      return 'lease_lost';
    }
    // This process still holds the previous answer, unstored (refreshWithLease gave the claim back):
    // nothing was sent, and nothing is wrong with the grant.
    if (error instanceof AnswerUnstored) return 'skipped';
    const cause = (error as { cause?: unknown })?.cause;
    const failure = cause instanceof ProviderError ? cause : error instanceof ProviderError ? error : null;
    if (failure) {
      if (failure.kind === 'rate_limited') onRateLimited?.(failure.retryAfter ?? null);
      return failure.kind;
    }
    // credvault's own failure (the answer could not be written: an audit log made read-only, say).
    // The grant waits before it is claimed again, longer each time, as a platform failure does:
    // claimed again at once, it would be refreshed at the platform every second and each answer
    // thrown away (a platform that kills a grant whose used refresh token comes back would kill it).
    const failures = (internalFailures.get(grant.id) ?? 0) + 1;
    internalFailures.set(grant.id, failures);
    const forMs = cooldownMs(failures, null);
    const waits = await tokenStore
      .backOff(ctx.db, grant, owner, {
        forMs,
        message: `credvault could not complete the refresh: ${redact(errorMessage(error))}`,
        // The claim marked a refresh in flight; none left (the app could not be opened, say): the
        // mark goes back to what it was, so that `status` does not report an answer in doubt.
        inFlightSince: progress.sent ? undefined : grant.refreshInFlightSince,
      })
      .catch(async () => {
        await tokenStore.releaseLease(ctx.db, grant.id, owner).catch(() => {});
        return false;
      });
    onInternal?.(error, waits, waits ? new Date(Date.now() + forMs) : null);
    return 'internal';
  }
}

/** Consecutive failures of credvault's own (not the platform's) per grant, in this process. */
const internalFailures = new Map<string, number>();

export function refreshOwner(role: string): string {
  return `${hostname()}:${process.pid}:${role}:${randomUUID().slice(0, 8)}`;
}
