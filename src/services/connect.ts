import { randomUUID } from 'node:crypto';
import type { Slot } from '../crypto/envelope.js';
import type { Secret } from '../crypto/secret.js';
import { type Db, databaseWhere } from '../db/client.js';
import { asReported } from '../db/errors.js';
import type { AppRecord } from '../db/store/apps.js';
import * as appStore from '../db/store/apps.js';
import type { ConnectionView } from '../db/store/connections.js';
import * as connectionStore from '../db/store/connections.js';
import * as stateStore from '../db/store/oauth-states.js';
import * as tokenStore from '../db/store/tokens.js';
import {
  ConflictError,
  CredvaultError,
  InvalidInputError,
  NotFoundError,
  ReauthRequiredError,
  UnavailableError,
} from '../errors.js';
import { MalformedCallbackError, repeatedParameter } from '../oauth/loopback.js';
import { codeChallenge, hashState, newCodeVerifier, newState } from '../oauth/pkce.js';
import { PLATFORMS, type PlatformId } from '../providers/catalog.js';
import { ProviderError } from '../providers/errors.js';
import { providerFor } from '../providers/registry.js';
import type { AdAccount, Provider, ProviderApp, TokenResult } from '../providers/types.js';
import { safeCode } from '../util/redact.js';
import { connectionRef } from '../views.js';
import { resolveApp } from './apps.js';
import { type AuditEntry, recordAudit } from './audit.js';
import { assertNameFree } from './connections.js';
import type { ServiceContext } from './context.js';
import { type DestroyedGrant, openToken, settleDestroyed, storeGrant, tokenSha256 } from './grants.js';
import {
  claimAdoption,
  type DeadGrantRefresh,
  findHeldGrants,
  grantOf,
  type HeldGrant,
  heldBy,
  joinGrantIn,
  keepAnswerOn,
  refreshDeadGrant,
  refreshHeldGrant,
  replaceDeadGrant,
  tokensWrittenOn,
} from './held-grants.js';
import { providerFailure, withDeadline } from './platform-calls.js';
import { decryptedFor, providerApp } from './provider-app.js';
import { untilReachable } from './reachable.js';

/**
 * Connecting ad accounts: a state bound to platform and app (stored hashed, 10 minutes, single use),
 * PKCE where the platform takes it, the code exchange, account discovery, and connections plus tokens
 * stored in one transaction.
 */

export const STATE_LIFETIME_MS = 10 * 60 * 1000;

/** Where a state's PKCE verifier is encrypted (its associated data). */
export function stateSlot(id: string): Slot {
  return { table: 'oauth_states', column: 'code_verifier_enc', rowId: id };
}

export interface AuthorizationStart {
  authorize_url: string;
  state: string;
  redirect_uri: string;
  expires_at: string;
  platform: PlatformId;
  app_id: string;
  app_label: string;
}

/** The app to connect through: the one named, or the platform's only enabled app. */
export async function appForPlatform(db: Db, platform: PlatformId, ref: string | null): Promise<AppRecord> {
  if (ref) {
    const app = await resolveApp(db, ref.includes('/') ? ref : `${platform}/${ref}`).catch(async (error) => {
      if (error instanceof NotFoundError) return resolveApp(db, ref);
      throw error;
    });
    if (app.platform !== platform) {
      throw new InvalidInputError(
        `app ${app.platform}/${app.label} belongs to ${app.platform}, not ${platform}`,
      );
    }
    return app;
  }
  const apps = (await appStore.list(db, platform)).filter((a) => a.enabled);
  if (apps.length === 1) return apps[0]!;
  if (apps.length === 0) {
    throw new NotFoundError(`no enabled ${platform} app`, {
      hint: `Add one with \`credvault apps add ${platform} --label L\`.`,
    });
  }
  throw new InvalidInputError(`${platform} has several apps`, {
    hint: `Say which app (--app; "app" in the admin API): ${apps.map((a) => a.label).join(', ')}.`,
  });
}

/**
 * What the starter asked for, kept with the state for a callback that nobody is at a terminal to
 * answer (the daemon's callback route): which accounts to connect, under what name, and who started.
 */
export interface StateRequest {
  /** Account ids to connect, or 'all' the grant reaches; absent: the only one, else an error. */
  accounts?: string[] | 'all';
  name?: string | null;
  /** The client of the daemon's API that started it (its scope is checked again at the callback). */
  startedBy?: { clientId: string; clientName: string } | null;
}

export async function startAuthorization(
  ctx: ServiceContext,
  platform: PlatformId,
  appRef: string | null,
  redirectUri: string | null,
  request: StateRequest = {},
): Promise<AuthorizationStart> {
  const provider = await providerFor(platform);
  const keyring = await ctx.keyring();
  return ctx.transaction(async (tx) => {
    const app = await appForPlatform(tx, platform, appRef);
    if (request.name) await assertNameFree(tx, platform, request.name, request.accounts);
    const papp = await providerApp(ctx, tx, app, { secrets: false });
    const state = newState();
    const verifier = provider.capabilities.pkce ? newCodeVerifier() : null;
    const id = randomUUID();
    const actualRedirect = redirectUri ?? app.redirectUri;
    const expiresAt = new Date(ctx.now().getTime() + STATE_LIFETIME_MS);
    const dataKeyId = await ctx.vaultDataKeyId();
    await stateStore.purgeExpired(tx);
    await stateStore.insert(tx, {
      id,
      stateHash: hashState(state),
      platform,
      appId: app.id,
      clientId: app.clientId,
      redirectUri: actualRedirect,
      codeVerifierEnc: verifier ? await keyring.encrypt(verifier, stateSlot(id), dataKeyId) : null,
      dataKeyId,
      options: { ...request },
      createdBy: ctx.actor.name,
      expiresAt,
    });
    await recordAudit(tx, ctx.actor, {
      action: 'oauth.start',
      targetType: 'app',
      targetId: app.id,
      outcome: 'success',
      detail: { platform, app: app.label, redirect_uri: actualRedirect, pkce: verifier !== null },
    });
    return {
      authorize_url: provider.authorizationUrl(papp, {
        state,
        redirectUri: actualRedirect,
        codeChallenge: verifier ? await codeChallenge(verifier) : null,
      }),
      state,
      redirect_uri: actualRedirect,
      expires_at: expiresAt.toISOString(),
      platform,
      app_id: app.id,
      app_label: app.label,
    };
  });
}

/** Why `connect` gave up on its own authorization before any callback was taken (abandonAuthorization). */
export type Abandoned = 'wrong state' | 'malformed answer' | 'no answer in time' | 'stopped';

/**
 * Uses up the state of an authorization `connect` gave up on before it took a callback (a wrong or
 * forged answer at its loopback, or a pasted URL of another flow; a malformed answer; no answer in
 * time; a signal; any other failure before the exchange): nobody can complete it later (`connections
 * complete` with that state is refused as already used). A wrong or malformed answer is recorded as
 * the refusal consumeState records (oauth.callback, denied); giving up otherwise as oauth.abandon.
 */
export async function abandonAuthorization(
  ctx: ServiceContext,
  state: string,
  why: Abandoned,
): Promise<void> {
  await ctx.transaction(async (tx) => {
    const row = await stateStore.lockByHash(tx, hashState(state));
    if (!row) return;
    // A callback refused (a wrong state, a repeated parameter) is on record whatever became of the state.
    const refused = why === 'wrong state' || why === 'malformed answer';
    if (!row.usedAt) await stateStore.markUsed(tx, row.id);
    else if (!refused) return;
    await recordAudit(
      tx,
      ctx.actor,
      refused
        ? {
            action: 'oauth.callback',
            targetType: 'oauth_state',
            targetId: row.id,
            outcome: 'denied',
            detail: { problem: why, platform: row.platform, at: 'connect' },
          }
        : {
            action: 'oauth.abandon',
            targetType: 'oauth_state',
            targetId: row.id,
            outcome: 'failure',
            detail: { problem: why, platform: row.platform },
          },
    );
  });
}

interface ConsumedState {
  app: AppRecord;
  /**
   * The app as a provider needs it, secrets decrypted, read with the checks above in the transaction
   * that used the state up (null when not asked for: an `error=` answer exchanges nothing).
   */
  provider: ProviderApp | null;
  platform: PlatformId;
  redirectUri: string;
  codeVerifier: string | null;
  request: StateRequest;
}

type StateProblem =
  | 'unknown state'
  | 'state of another platform'
  | 'state already used'
  | 'state expired'
  | 'app removed'
  | 'app disabled'
  | 'client id changed';

/** What a refused state is told as: the state itself is wrong (exit 2), or its app changed since (3, 7). */
function stateRefusal(problem: StateProblem, app: AppRecord | null) {
  const hint = { hint: 'Start again with `credvault connect`.' };
  const ref = app ? `${app.platform}/${app.label}` : null;
  const started = `the app this authorization was started for${ref ? ` (${ref})` : ''}`;
  switch (problem) {
    case 'unknown state':
      return new InvalidInputError(
        'this authorization was not started by credvault (unknown state); nothing was stored',
        hint,
      );
    case 'state of another platform':
      return new InvalidInputError(
        'this authorization was started for another platform; nothing was stored',
        hint,
      );
    case 'state already used':
      return new InvalidInputError(
        'this authorization was already used (a state is good for one callback); nothing was stored',
        hint,
      );
    case 'state expired':
      return new InvalidInputError(
        `this authorization expired (a state lives ${STATE_LIFETIME_MS / 60_000} minutes); nothing was stored`,
        hint,
      );
    case 'app removed':
      return new NotFoundError(`${started} was removed since; nothing was stored`, {
        hint: 'Start again through another app.',
      });
    case 'app disabled':
      return new ConflictError(`${started} was disabled since; nothing was stored`, {
        hint: `Enable it (\`credvault apps enable ${ref}\`) and start again.`,
      });
    case 'client id changed':
      // The code was issued to the client of the start: the platform takes it from no other, and it
      // is not sent to the platform with another client's credentials.
      return new ConflictError(`${started} has another client id since; nothing was stored`, hint);
  }
}

/**
 * Checks a returned state and uses it up, whatever happens next: a state is good for one callback.
 * Wrong, reused and expired states are refused before anything is exchanged, and so is a state whose
 * app was removed, disabled or given another client id since the start (it is bound to the app as
 * it was then).
 */
async function consumeState(
  ctx: ServiceContext,
  state: string,
  expectPlatform: PlatformId | null,
  quietUnknown: boolean,
  withSecrets: boolean,
): Promise<ConsumedState> {
  const keyring = await ctx.keyring();
  const outcome = await ctx.transaction(async (tx) => {
    const row = await stateStore.lockByHash(tx, hashState(state));
    /** Refuses it (used up too, with `useUp`: the callback it was good for came), audited. */
    const refuse = async (problem: StateProblem, options: { app?: AppRecord; useUp?: boolean } = {}) => {
      const refused = { problem, app: options.app ?? null } as const;
      if (!row && quietUnknown) return refused;
      if (row && options.useUp) await stateStore.markUsed(tx, row.id);
      await recordAudit(tx, ctx.actor, {
        action: 'oauth.callback',
        targetType: 'oauth_state',
        targetId: row?.id ?? null,
        outcome: 'denied',
        detail: { problem },
      });
      return refused;
    };
    if (!row) return refuse('unknown state');
    if (expectPlatform && row.platform !== expectPlatform) return refuse('state of another platform');
    if (row.usedAt) return refuse('state already used');
    if (row.expiresAt.getTime() < Date.now()) return refuse('state expired', { useUp: true });
    // Bound to its app as it was at the start: still there, still enabled, still the client the
    // platform issued the code to. The row is read FOR SHARE and the secrets the exchange sends are
    // read with it: an update or a disable committing after this transaction does not mix another
    // client secret with this client id, nor reach an exchange these checks let through.
    const app = row.appId ? await appStore.getByIdForShare(tx, row.appId) : null;
    if (!app) return refuse('app removed', { useUp: true });
    if (!app.enabled) return refuse('app disabled', { app, useUp: true });
    if (row.clientId !== null && app.clientId !== row.clientId)
      return refuse('client id changed', { app, useUp: true });
    const provider = withSecrets ? await providerApp(ctx, tx, app, { secrets: true }) : null;
    const codeVerifier = row.codeVerifierEnc
      ? (await keyring.decrypt(row.codeVerifierEnc, stateSlot(row.id))).reveal()
      : null;
    await stateStore.markUsed(tx, row.id);
    await recordAudit(tx, ctx.actor, {
      action: 'oauth.callback',
      targetType: 'oauth_state',
      targetId: row.id,
      outcome: 'success',
      detail: { platform: row.platform, app: app.label },
    });
    return {
      app,
      provider,
      platform: row.platform as PlatformId,
      redirectUri: row.redirectUri,
      codeVerifier,
      request: row.options as StateRequest,
    };
  });
  if ('problem' in outcome) throw stateRefusal(outcome.problem, outcome.app);
  return outcome;
}

export interface DiscoveredAccounts {
  accounts: AdAccount[];
  /** Why discovery failed, when it did (the operator may still name accounts with --account). */
  problem: string | null;
  /**
   * The platform gave no usable answer to the listing (5xx, 429, a timeout, no network): trying again
   * later may work (exit 5), where a refusal (exit 2) would not.
   */
  retryable: boolean;
}

/** Picks the accounts to connect among those discovered (the CLI asks, or takes --account). */
export type AccountChooser = (
  found: DiscoveredAccounts,
  platform: PlatformId,
  requested: StateRequest,
) => Promise<AdAccount[]>;

export interface CompleteOptions {
  /** The connection name; null: the one asked for at the start, else the account's. */
  name: string | null;
  choose: AccountChooser;
  /** Refuse a state started for another platform (the callback route names its platform). */
  platform?: PlatformId;
  /**
   * Checked once the state is used up, before the code is exchanged: whether whoever started the flow
   * may still finish it (the daemon's callback checks the client that started it).
   */
  checkStarter?: (request: StateRequest, platform: PlatformId) => Promise<void>;
  /** Leave an unknown state out of the audit log (a public callback: anyone may send one). */
  quietUnknownState?: boolean;
}

/**
 * The accounts asked for when the flow was started, for a callback nobody can be asked at: the ids
 * named, every account with 'all', or the only one the grant reaches.
 */
export const chooseRequested: AccountChooser = async (found, platform, requested) => {
  const { accounts, problem } = found;
  const reachable = accounts.map((a) => `${a.id}${a.name ? ` (${a.name})` : ''}`).join(', ');
  const wanted = Array.isArray(requested.accounts) ? requested.accounts : [];
  if (problem && !wanted.length) {
    throw listingFailed(
      found,
      'Start again in a while (this authorization is used up, and its consent was not kept), or name the accounts in "accounts".',
    );
  }
  if (wanted.length) {
    if (problem) return wanted.map((id) => ({ id, name: null, currency: null, details: {} }));
    const missing = wanted.filter((id) => !accounts.some((a) => a.id === id));
    if (missing.length) {
      throw new InvalidInputError(
        `this grant does not reach account${missing.length > 1 ? 's' : ''} ${missing.join(', ')}; nothing was stored`,
        { hint: reachable ? `It reaches: ${reachable}.` : 'It reaches no ad account.' },
      );
    }
    return accounts.filter((a) => wanted.includes(a.id));
  }
  if (accounts.length === 0)
    throw new InvalidInputError('this grant reaches no ad account; nothing was stored');
  if (requested.accounts === 'all' || accounts.length === 1) return accounts;
  throw new InvalidInputError(
    `this grant reaches several ${PLATFORMS[platform].displayName} accounts (${reachable}); nothing was stored`,
    { hint: 'Start again naming them in "accounts" (or "accounts": "all").' },
  );
};

/**
 * The accounts could not be listed and none were named: nothing is stored, and the tokens the consent
 * gave are dropped (not revoked at the platform, where Google would end the person's whole
 * authorization of the app). A listing the platform gave no usable answer to is its unavailability
 * (exit 5: try again later); one it refused is not (exit 2). `again`: how to try again.
 */
export function listingFailed(found: DiscoveredAccounts, again: string): CredvaultError {
  const message = `could not list the accounts this grant reaches (${found.problem}); nothing was stored`;
  return found.retryable
    ? new UnavailableError(message, { hint: again })
    : new InvalidInputError(message, { hint: again });
}

/** Finishes an authorization from its callback parameters: exchange, discover, choose, store. */
export async function completeAuthorization(
  base: ServiceContext,
  state: string,
  callback: URLSearchParams,
  options: CompleteOptions,
): Promise<Stored> {
  // Neither a code nor an error is no answer from the platform (the sign-in link itself opened, a
  // bookmark): the state is not used up by it.
  if (!callback.get('code') && !callback.get('error')) {
    throw new InvalidInputError(
      'this carries no answer from the platform (no code, no error); nothing was used up',
      {
        hint: 'Open the address the browser was sent back to after allowing access.',
      },
    );
  }
  // Nor is it by an answer with a parameter repeated, which the exchange would refuse once the state
  // is used up (see repeatedParameter): the same flow's answer as the platform sent it still completes.
  const repeated = repeatedParameter(callback);
  if (repeated) {
    throw new MalformedCallbackError(
      repeated,
      'the callback',
      'nothing was used up or stored',
      'Give the address the browser was sent back to, as it is.',
    );
  }
  const consumed = await consumeState(
    base,
    state,
    options.platform ?? null,
    options.quietUnknownState ?? false,
    !callback.get('error'),
  );
  await options.checkStarter?.(consumed.request, consumed.platform);
  // A flow started through the daemon's API finishes in the name of the client that started it (the
  // browser that brings the callback back has no credential of its own).
  const starter = consumed.request.startedBy;
  const ctx = starter ? base.withActor({ ...base.actor, name: starter.clientName }) : base;
  const provider = await providerFor(consumed.platform);
  const name = PLATFORMS[consumed.platform].displayName;
  const error = callback.get('error');
  if (error) {
    const code = safeCode(error);
    await ctx.transaction((tx) =>
      recordAudit(tx, ctx.actor, {
        action: 'oauth.denied',
        targetType: 'app',
        targetId: consumed.app.id,
        outcome: 'denied',
        detail: { platform: consumed.platform, error: code },
      }),
    );
    throw authorizationError(name, code, callback.get('error_description'));
  }
  // The app as it was when the state was used up (not read again: see consumeState).
  const app = consumed.provider!;
  const tokens = await audited(ctx, consumed.app, app, 'oauth.exchange', () =>
    withDeadline(ctx, (signal) =>
      provider.exchangeCode(
        app,
        { callback, state, redirectUri: consumed.redirectUri, codeVerifier: consumed.codeVerifier },
        { signal },
      ),
    ),
  ).catch((e) => {
    throw providerFailure(e, `${failedAt(e, name)} the authorization code`);
  });
  return storeConnections(ctx, provider, app, consumed.app, tokens, options, 'connect', consumed.request);
}

/** "Google Ads refused", or, when it gave no usable answer (timeout, 5xx, 429), "Google Ads could not be asked about". */
function failedAt(error: unknown, platformName: string): string {
  return error instanceof ProviderError && error.retryable
    ? `${platformName} could not be asked about`
    : `${platformName} refused`;
}

/** RFC 6749 §4.1.2.1 errors that say the app's request was wrong, not the person's answer. */
const APP_ERRORS = new Set([
  'invalid_request',
  'unauthorized_client',
  'invalid_scope',
  'unsupported_response_type',
  'invalid_client',
]);

/**
 * What an `error=` at the callback means: the person declined (exit 4), the platform is down for now
 * (server_error, temporarily_unavailable: exit 5), or the app's own request was refused (exit 2, the
 * app's settings to check). The platform's description is shown (Microsoft explains its errors there),
 * printable characters only and cut short.
 */
function authorizationError(platformName: string, code: string, description: string | null) {
  // Control and format characters (a right-to-left override, say) never reach the terminal.
  const said = description ? `: ${description.replace(/[\p{C}\u2028\u2029]/gu, ' ').slice(0, 300)}` : '';
  if (code === 'access_denied')
    return new ReauthRequiredError(`access was denied at ${platformName}; nothing was stored`, {
      hint: 'Run connect again and allow access.',
    });
  const message = `${platformName} answered the authorization with ${code}${said}; nothing was stored`;
  if (code === 'server_error' || code === 'temporarily_unavailable')
    return new UnavailableError(message, { hint: 'Run connect again in a while.' });
  if (APP_ERRORS.has(code))
    return new InvalidInputError(message, {
      hint: "The platform refused the app's request: check its client id, redirect URI and scopes (`credvault apps show APP`).",
    });
  return new ReauthRequiredError(message, { hint: 'Run connect again and allow access.' });
}

/**
 * Runs a platform call that used the app's decrypted secrets and records it, with which were
 * decrypted, whatever the outcome: every decryption leaves a trace, failed exchanges included.
 */

async function audited<T>(
  ctx: ServiceContext,
  app: AppRecord,
  opened: ProviderApp,
  action: string,
  call: () => Promise<T>,
  extra: Record<string, unknown> = {},
): Promise<T> {
  const decrypted = decryptedFor(opened);
  const record = (outcome: 'success' | 'failure', detail: Record<string, unknown>) =>
    ctx.transaction((tx) =>
      recordAudit(tx, ctx.actor, {
        action,
        targetType: 'app',
        targetId: app.id,
        outcome,
        detail: { platform: app.platform, app: app.label, decrypted, ...extra, ...detail },
      }),
    );
  try {
    const result = await call();
    await record('success', {});
    return result;
  } catch (error) {
    await record(
      'failure',
      error instanceof ProviderError ? { kind: error.kind, code: error.platformCode } : {},
    );
    throw error;
  }
}

async function discover(
  ctx: ServiceContext,
  provider: Provider,
  app: ProviderApp,
  accessToken: Secret,
): Promise<DiscoveredAccounts> {
  try {
    return {
      accounts: await withDeadline(ctx, (signal) => provider.discoverAccounts(app, accessToken, { signal })),
      problem: null,
      retryable: false,
    };
  } catch (error) {
    if (error instanceof ProviderError)
      return { accounts: [], problem: error.message, retryable: error.retryable };
    throw error;
  }
}

async function storeConnections(
  ctx: ServiceContext,
  provider: Provider,
  opened: ProviderApp,
  app: AppRecord,
  tokens: TokenResult,
  options: CompleteOptions,
  via: 'connect' | 'adopt',
  requested: StateRequest = {},
  store: {
    refreshTokenSha256?: string;
    /**
     * First in the storing transaction: the connections' ids (and the grants that replaced) when it
     * attached the accounts itself (nothing is stored then), else null.
     */
    before?: (
      tx: Db,
      accounts: AdAccount[],
      name: string | null,
    ) => Promise<{ ids: string[]; destroyed: DestroyedGrant[] } | null>;
    /** More to do in the storing transaction, once the connections are stored. */
    within?: (tx: Db, ids: string[]) => Promise<void>;
  } = {},
): Promise<Stored> {
  const found = await discover(ctx, provider, opened, tokens.accessToken);
  const chosen = await options.choose(found, provider.id, requested);
  if (chosen.length === 0) throw new InvalidInputError('no account was chosen; nothing was stored');
  const name = options.name ?? requested.name ?? null;
  // LinkedIn gives refresh tokens only to Marketing Developer Platform partners (providers.md §3D):
  // any other app's consent is its 60-day access token alone, kept as an import keeps one (nothing
  // refreshes it; status flags it two weeks before it ends). Elsewhere a missing refresh token means
  // the consent went wrong (Google's re-consent without prompt=consent): refused by storeGrant.
  const accessTokenOnly = via === 'connect' && provider.id === 'linkedin_ads' && !tokens.refreshToken;
  let previous: ConnectionView[] = [];
  const { ids, destroyed } = await ctx.transaction(async (tx) => {
    // The accounts connected already, as they were: a reconnect may rename or move them (the CLI says so).
    previous = await connectionStore.listViews(tx, {
      platform: provider.id,
      accounts: chosen.map((a) => a.id),
    });
    const attached = await store.before?.(tx, chosen, name);
    if (attached) return attached;
    const stored = await storeGrant(ctx, tx, {
      app,
      tokens,
      accounts: chosen,
      name,
      via,
      accessTokenOnly,
      refreshTokenSha256: store.refreshTokenSha256,
    });
    await store.within?.(tx, stored.ids);
    return stored;
  });
  // The grants of reconnected accounts, destroyed in that transaction (not revoked at the platform:
  // see attachAccounts): their data keys forgotten, their bytes out of the database's files.
  const warnings = await settleDestroyed(ctx, destroyed);
  if (accessTokenOnly) {
    const ends = tokens.expiresAt ? `ends ${tokens.expiresAt.toISOString()}` : 'has no end LinkedIn said';
    warnings.unshift(
      `${PLATFORMS[provider.id].displayName} gave no refresh token (it gives them only to Marketing Developer Platform partners): the access token ${ends}, and nothing can renew it; connect again before then (\`credvault connect ${provider.id} --account ${chosen.map((a) => a.id).join(' --account ')}\`)`,
    );
  }
  return { connections: await connectionStore.listViews(ctx.db, { ids }), destroyed, warnings, previous };
}

/** The connections a consent (or an adopted token) was stored for, and what that replaced. */
export interface Stored {
  /** The connections of the accounts stored (spec/cli.md's connection list). */
  connections: ConnectionView[];
  /**
   * The grants of accounts connected already, replaced by this one and destroyed here (their tokens
   * were not revoked at the platform: see attachAccounts).
   */
  destroyed: DestroyedGrant[];
  /** What could not be done once the connections were stored (see db/shred.ts). */
  warnings: string[];
  /** Those of the connections that existed before, as they were (a reconnect may rename or move them). */
  previous?: ConnectionView[];
}

/** What `connections add` did with the refresh token it was given. */
export interface Adopted extends Stored {
  /** The vault held the token already, on a working grant: the accounts joined it. */
  joined: boolean;
  /** The other connections (refs) of the grant joined. */
  sharedWith: string[];
  /**
   * The vault held the token on a grant that needed a person: the connections (refs) left on it,
   * whose grant the new one replaced (they stay as they were, with no tokens, until connected again).
   */
  replaced: string[];
  /**
   * The grant joined was stored while the given token was refreshed (an import of it), and the
   * platform rotated the token at that refresh: its answer, the new refresh token, is kept on that grant.
   */
  keptOnJoined: boolean;
  /**
   * The grant replaced held a newer refresh token of the consent than the given one (left there by an
   * import or adoption that failed after refreshing it), and that one was presented: the given one was
   * not sent.
   */
  presentedKept: boolean;
}

/**
 * `connections add`: adopts a refresh token from elsewhere. It is refreshed once first, so only a
 * working one is stored; a rotated refresh token replaces the given one.
 *
 * One consent is one grant: a refresh token the vault holds already for this app (recognised by the
 * SHA-256 of the token each grant was stored with, kept when the platform rotates it) is not stored
 * again. While the grant holding it works, the accounts join that grant, as `--account X --account Y`
 * in one run would have made them share it: revoking any revokes them all. The given token is then
 * never presented to the platform: where refresh tokens rotate (Microsoft, Reddit) the one a person
 * adopted is used up at the first refresh, and presenting it again is refused, or ends the whole
 * grant where the platform treats it as a stolen token. The held grant is refreshed once instead (its
 * current token, under its lease), which proves it works as an adoption's refresh would. A grant
 * holding it that needs a person (the platform refused it, or a revocation it could not be told of
 * is pending) takes no new account: its consent is refreshed (refreshDeadGrant), with the newest
 * token of it the platform has not refused: the given one, or a newer one that grant holds (where an
 * import or adoption refreshed it, the platform rotated it, and what came after failed). The answer is
 * written onto the dead grant at once, so that a failure after it (the account listing, an account the
 * grant does not reach, the storing transaction) loses no working token: the next `connections add` or
 * import of the token presents it. When all goes well, the new grant of the accounts takes what was
 * written, and replaces the dead one (whose tokens are destroyed: one consent, one grant).
 *
 * A token the vault does not hold yet is presented by one process at a time (claimAdoption): another
 * given the same token at once (the same setup run twice, a retry) waits until the first has stored
 * its grant, and joins it rather than presenting the token a second time, which where tokens rotate
 * would be a reuse. The grant stored meanwhile is not refreshed again: its adoption just proved it.
 */
export async function adoptRefreshToken(
  ctx: ServiceContext,
  platform: PlatformId,
  appRef: string,
  refreshToken: Secret,
  options: CompleteOptions,
): Promise<Adopted> {
  const provider = await providerFor(platform);
  const app = await appForPlatform(ctx.db, platform, appRef);
  const sha256 = tokenSha256(refreshToken);
  const { live } = await findHeldGrants(ctx.db, app.id, sha256);
  if (live) return joinHeldGrant(ctx, provider, app, live, options);

  // Presenting the token and storing its grant is one process's at a time: another given the same
  // token at once waits here, then finds the grant stored meanwhile and joins it. A claim that could
  // not be given back (the database failing meanwhile) lapses on its own.
  const claim = await claimAdoption(ctx, app.id, sha256);
  if (claim.live) {
    await claim.release().catch(() => {});
    // Its refresh of a moment ago proved it works: not refreshed again while its token is valid.
    return joinHeldGrant(ctx, provider, app, claim.live, options, { refreshedMeanwhile: true });
  }
  try {
    return await adoptClaimed(ctx, provider, app, refreshToken, sha256, options, claim.held);
  } finally {
    await claim.release().catch(() => {});
  }
}

/**
 * The token presented and its grant stored, under the adoption's claim (adoptRefreshToken): the given
 * one, or, where only grants that need a person hold it (`deadHeld`, found under the claim), the
 * newest of their consent (refreshDeadConsent). A failure once such a refresh rotated the token says
 * where the new one is kept (withKept).
 */
async function adoptClaimed(
  ctx: ServiceContext,
  provider: Provider,
  app: AppRecord,
  refreshToken: Secret,
  sha256: string,
  options: CompleteOptions,
  deadHeld: HeldGrant[],
): Promise<Adopted> {
  if (!deadHeld.length) {
    const { opened, tokens, adopted } = await refreshGivenToken(ctx, provider, app, refreshToken);
    // The platform kept the given token: it still works, and nothing is lost if what follows fails.
    if (tokens.refreshToken!.reveal() === refreshToken.reveal()) {
      await ctx.transaction((tx) => recordAudit(tx, ctx.actor, adopted));
      return storeAdopted(ctx, provider, app, refreshToken, sha256, options, opened, tokens);
    }
    const kept = await keepAdoptedAnswer(ctx, app, tokens, sha256, adopted);
    try {
      return await storeAdopted(ctx, provider, app, refreshToken, sha256, options, opened, tokens, kept);
    } catch (error) {
      throw withKept(ctx, error, app, kept);
    }
  }
  const { opened, tokens, refreshed } = await refreshDeadConsent(ctx, app, deadHeld, refreshToken);
  try {
    return await storeAdopted(ctx, provider, app, refreshToken, sha256, options, opened, tokens, refreshed);
  } catch (error) {
    throw withKept(ctx, error, app, refreshed);
  }
}

/**
 * The accounts listed with the refreshed tokens, the chosen ones stored on a new grant (or on a grant
 * holding the token stored meanwhile: joined), and the grants needing a person that held the token
 * replaced. `refreshed`: the refresh of the dead grant's consent whose answer `kept` is (written on it
 * already, and checked under its lock to be so still when the new grant takes it).
 */
async function storeAdopted(
  ctx: ServiceContext,
  provider: Provider,
  app: AppRecord,
  refreshToken: Secret,
  sha256: string,
  options: CompleteOptions,
  opened: ProviderApp,
  kept: TokenResult,
  refreshed?: Kept,
): Promise<Adopted> {
  // The platform answered with another refresh token: the given one is used up.
  const rotated = kept.refreshToken!.reveal() !== refreshToken.reveal();
  const replaced: string[] = [];
  /** A grant holding the token stored meanwhile (see `before`): joined. */
  let joined: HeldGrant | undefined;
  /** This refresh's answer was written onto it (the platform had rotated the token). */
  let keptOnJoined = false;
  let dead: HeldGrant[] = [];
  const { connections, destroyed, warnings } = await storeConnections(
    ctx,
    provider,
    opened,
    app,
    kept,
    options,
    'adopt',
    {},
    {
      refreshTokenSha256: sha256,
      // Looked for again under the token's lock: a grant holding the token may have been stored
      // since the claim was had, by an import (which stores a file's token without the claim, and
      // without presenting it) or by an adoption whose claim lapsed before it was done. It is joined,
      // as it would have been had it come first: no second grant of one consent. Where the platform
      // rotated the token at this refresh, that grant holds the used-up one, and this refresh's answer
      // is the consent's working token: it is written onto that grant first, as any refresh's answer
      // (keepAnswerOn). When it cannot be (another process is refreshing that grant right now, with
      // the used-up token), the answer is stored on a grant of its own instead: two grants of one
      // consent for a while, rather than a lost token.
      before: async (tx, accounts, name) => {
        await tokenStore.lockTokenSha256(tx, app.id, sha256);
        const now = await findHeldGrants(tx, app.id, sha256);
        dead = now.held;
        if (!now.live) {
          // What the refresh of the dead grant's consent wrote on it, as it left it: else nothing is
          // stored (the tokens stay where they are, for the next try).
          if (refreshed && !(await tokensWrittenOn(ctx, tx, now.held, refreshed.grant))) {
            throw new ConflictError(
              refreshed.ownGrant
                ? 'the refresh token this connections add kept was taken on by another process meanwhile (it waited longer than its turn lasts); nothing was stored'
                : `${refreshed.holder}, which held this refresh token and needs a person, changed while it was refreshed to replace it; nothing was stored`,
              {
                hint: refreshed.ownGrant
                  ? 'Run `credvault connections list`: the other process may have stored the accounts; if not, add the account again (the token kept is used, not the given one).'
                  : 'Run `credvault connections list` to see why, then add the account again.',
              },
            );
          }
          return null;
        }
        // This refresh's answer is the consent's working token only while what it kept first (on a
        // dead grant of the consent, or on a grant of its own) is as it left it. Else another process
        // took it on meanwhile (this one's claim lapsed: a person slow to choose the accounts) and
        // presented it, and the answer here is used up: written over the grant joined, it would
        // replace that process's working token.
        const current =
          rotated && (!refreshed || (await tokensWrittenOn(ctx, tx, now.held, refreshed.grant)));
        if (current) {
          if (!(await keepAnswerOn(ctx, tx, now.live, kept, 'adopt'))) return null;
          keptOnJoined = true;
        }
        joined = now.live;
        const attached = await joinGrantIn(ctx, tx, {
          app,
          held: now.live,
          accounts,
          name,
          via: 'adopt',
          nothing: 'nothing was stored',
          hint: 'Run `credvault connections list` to see why, then add the account again.',
        });
        // The grant of its own where this adoption kept the answer first: the grant joined holds it now.
        if (current && refreshed?.ownGrant) {
          const added = await connectionStore.listViews(tx, { ids: attached.ids });
          await replaceDeadGrant(ctx, tx, refreshed.grant.id, added, 'adopt');
        }
        return attached;
      },
      within: async (tx, ids) => {
        const added = await connectionStore.listViews(tx, { ids });
        for (const { grant } of dead)
          replaced.push(...(await replaceDeadGrant(ctx, tx, grant.id, added, 'adopt')));
      },
    },
  );
  if (joined) {
    const holders = joined.connections.map(connectionRef);
    return {
      connections,
      destroyed,
      warnings,
      joined: true,
      sharedWith: holders.filter((ref) => !connections.some((c) => connectionRef(c) === ref)),
      replaced: [],
      keptOnJoined,
      presentedKept: false,
    };
  }
  return {
    connections,
    destroyed,
    warnings,
    joined: false,
    sharedWith: [],
    replaced,
    keptOnJoined: false,
    presentedKept: refreshed?.presentedHeld ?? false,
  };
}

/**
 * Refreshes the consent of the grants needing a person that hold the given token (refreshDeadGrant,
 * with the stored app): the newest token of it the platform has not refused is presented (the given
 * one, or a newer one such a grant holds), and the answer written onto that grant at once. Returns
 * what was written (tokensWrittenOn), to list the accounts with and to store on the new grant.
 * Audited as an adoption (the app's secrets decrypted) and as that grant's refresh.
 */
async function refreshDeadConsent(
  ctx: ServiceContext,
  app: AppRecord,
  dead: HeldGrant[],
  refreshToken: Secret,
): Promise<{ opened: ProviderApp; tokens: TokenResult; refreshed: Kept }> {
  const opened = await providerApp(ctx, ctx.db, app, { secrets: true });
  // One that kept a working answer of an earlier import or adoption (its last refresh was not
  // refused) before the others, as an import chooses.
  const target = dead.find((h) => h.grant.lastErrorCode !== 'dead_grant') ?? dead[0]!;
  const holder = grantOf(target.connections);
  const hint = 'Run `credvault connections list` to see why, then add the account again.';
  const refreshed = await audited(
    ctx,
    app,
    opened,
    'token.adopt',
    () =>
      refreshDeadGrant(ctx, target, refreshToken, opened, {
        purpose: 'adopt',
        nothing: 'nothing was stored',
        hint,
      }),
    { replacing: target.grant.id },
  ).catch((error) => {
    // A platform's failure is said of the grant replaced; the others say so already.
    if (!(error instanceof CredvaultError) || !(error.cause instanceof ProviderError)) throw error;
    throw new CredvaultError(
      error.code,
      `the vault holds this refresh token on ${holder}, which needs a person, and refreshing it to replace that grant failed: ${error.message.replace(/\.$/, '')}; nothing was stored`,
      { hint: error.hint, cause: error },
    );
  });
  const kept = { ...refreshed, holder };
  const tokens = await tokensWrittenOn(ctx, ctx.db, dead, refreshed.grant);
  if (!tokens) {
    throw withKept(
      ctx,
      new ConflictError(
        `${holder}, which held this refresh token and needs a person, changed while it was refreshed to replace it; nothing was stored`,
        { hint },
      ),
      app,
      kept,
    );
  }
  return { opened, tokens, refreshed: kept };
}

/**
 * A `connections add` that failed after a refresh rotated the token: the token presented is used up,
 * and what the platform gave is kept in the vault, on the dead grant whose consent was refreshed
 * (refreshDeadGrant wrote it at once) or, for a token the vault did not hold, on a grant of its own
 * with no account yet (keepAdoptedAnswer). The error says so, and that adding the token again (or
 * importing it) uses it.
 */
function withKept(ctx: ServiceContext, failure: unknown, app: AppRecord, refreshed: Kept): unknown {
  if (!refreshed.rotated) return failure;
  // A driver's error (a deadlock, a connection gone) as the command would report it, then with the note.
  const error = asReported(failure, databaseWhere(ctx.config));
  if (!error) return failure;
  const which = refreshed.presentedHeld
    ? `the refresh token kept on ${refreshed.holder} when it was refreshed to replace that grant`
    : refreshed.ownGrant
      ? 'the given refresh token when it was refreshed'
      : `the given refresh token when it was refreshed to replace ${refreshed.holder}`;
  const where = refreshed.ownGrant
    ? 'kept in the vault, on a grant with no account yet (nothing is served from it)'
    : 'kept on that grant (nothing is served from it: it still needs a person)';
  return new CredvaultError(
    error.code,
    `${error.message.replace(/\.$/, '')}. ${PLATFORMS[app.platform as PlatformId].displayName} rotated ${which}: that token is used up, and the new one is ${where}; adding this refresh token again (connections add, or an import of it) uses it, and does not send the given one`,
    { hint: error.hint, cause: error },
  );
}

/**
 * Where an adoption's refresh that rotated the token left the platform's answer: on a dead grant of
 * the consent (`holder` names it), or on a grant of its own with no account yet (`ownGrant`).
 */
type Kept = DeadGrantRefresh & { holder: string; ownGrant?: boolean };

/**
 * The answer to the refresh of a token the vault did not hold, where the platform rotated it: written
 * at once onto a grant of its own with no account yet, which holds it as a grant of the consent that
 * needs a person would (found by the given token's SHA-256). Whatever fails after it (the account
 * listing, an account the grant does not reach, the storing transaction, the process), the working
 * token is in the vault, and the next `connections add` (or import) of the given token presents it
 * instead of the used-up one (refreshDeadConsent). When all goes well, the grant of the accounts takes
 * it, and this one is destroyed in the same transaction (replaceDeadGrant). Nothing refreshes or
 * serves it meanwhile: the daemon's sweep and `token get` reach grants through connections. Audited
 * as any grant stored (token.store, with no account).
 */
async function keepAdoptedAnswer(
  ctx: ServiceContext,
  app: AppRecord,
  tokens: TokenResult,
  sha256: string,
  adopted: AuditEntry,
): Promise<Kept> {
  const grantId = randomUUID();
  let grant: tokenStore.GrantRow | null;
  try {
    // Kept trying while the database cannot be reached (a restart, a failover): the answer exists
    // only in this process. A try that committed unseen is found by its grant's id.
    grant = await untilReachable(
      () =>
        ctx.transaction(async (tx) => {
          await recordAudit(tx, ctx.actor, adopted);
          await storeGrant(ctx, tx, {
            app,
            tokens,
            accounts: [],
            name: null,
            via: 'adopt',
            refreshTokenSha256: sha256,
            grantId,
          });
          return tokenStore.get(tx, grantId);
        }),
      () => tokenStore.get(ctx.db, grantId),
    );
  } catch (failure) {
    const error = asReported(failure, databaseWhere(ctx.config));
    if (!error) throw failure;
    throw new CredvaultError(
      error.code,
      `${PLATFORMS[app.platform as PlatformId].displayName} rotated the given refresh token when it was refreshed, and the new one could not be kept: ${error.message.replace(/\.$/, '')}; the given token is used up, and nothing was stored`,
      {
        hint: 'Connect the account again (`credvault connect`) once the vault can be written to.',
        cause: error,
      },
    );
  }
  return { grant: grant!, presentedHeld: false, rotated: true, holder: grantOf([]), ownGrant: true };
}

/**
 * A refresh token given to `connections add`, refreshed once before it is stored, so only a working
 * one is: the app opened for it, and the tokens to store (a refresh token the platform rotated
 * replaces the given one). Audited as an adoption.
 */
async function refreshGivenToken(
  ctx: ServiceContext,
  provider: Provider,
  app: AppRecord,
  refreshToken: Secret,
): Promise<{ opened: ProviderApp; tokens: TokenResult; adopted: AuditEntry }> {
  const opened = await providerApp(ctx, ctx.db, app, { secrets: true });
  const platform = app.platform as PlatformId;
  const entry = (outcome: 'success' | 'failure', detail: Record<string, unknown> = {}): AuditEntry => ({
    action: 'token.adopt',
    targetType: 'app',
    targetId: app.id,
    outcome,
    detail: { platform: app.platform, app: app.label, decrypted: decryptedFor(opened), ...detail },
  });
  let tokens: TokenResult;
  try {
    tokens = await withDeadline(ctx, (signal) => provider.refresh(opened, refreshToken, { signal }));
  } catch (error) {
    await ctx.transaction((tx) =>
      recordAudit(
        tx,
        ctx.actor,
        entry(
          'failure',
          error instanceof ProviderError ? { kind: error.kind, code: error.platformCode } : {},
        ),
      ),
    );
    throw providerFailure(error, `${failedAt(error, PLATFORMS[platform].displayName)} the refresh token`);
  }
  // Its success is recorded by the caller with what it keeps of the answer (keepAdoptedAnswer), so
  // that a record that cannot be written does not cost a rotated refresh token.
  return {
    opened,
    tokens: { ...tokens, refreshToken: tokens.refreshToken ?? refreshToken },
    adopted: entry('success'),
  };
}

/**
 * The accounts join a working grant that holds the given refresh token: it is refreshed once (its
 * own current token, under its lease: the given one is not sent), its accounts listed with the new
 * access token, and the chosen ones attached to it in one transaction. `refreshedMeanwhile`: another
 * adoption stored it while this one waited for its claim, and its refresh then is this one's (it is
 * refreshed only if its access token has expired since).
 */
async function joinHeldGrant(
  ctx: ServiceContext,
  provider: Provider,
  app: AppRecord,
  held: HeldGrant,
  options: CompleteOptions,
  { refreshedMeanwhile = false }: { refreshedMeanwhile?: boolean } = {},
): Promise<Adopted> {
  const holders = held.connections.map(connectionRef);
  // The app as the adoption needs it (enabled: refused before anything else otherwise).
  const opened = await providerApp(ctx, ctx.db, app, { secrets: true });
  const grant = await refreshHeldGrant(ctx, held, 'connections add', 'nothing was stored', {
    force: !refreshedMeanwhile,
  });
  // The held grant's access token, opened here to list the accounts it reaches: recorded with the
  // listing, whatever its outcome.
  const found = await audited(
    ctx,
    app,
    opened,
    'token.adopt',
    async () => {
      const accessToken = await openToken(ctx, grant, 'access');
      if (!accessToken) throw new ReauthRequiredError(`${heldBy(held)}, but it has no access token`);
      return discover(ctx, provider, opened, accessToken);
    },
    {
      joined: held.grant.id,
      // What was opened: the app's secrets (as audited lists them) and the grant's access token.
      decrypted: [...decryptedFor(opened), 'access_token'],
    },
  );
  const chosen = await options.choose(found, provider.id, {});
  if (chosen.length === 0) throw new InvalidInputError('no account was chosen; nothing was stored');
  const { ids, destroyed } = await ctx.transaction((tx) =>
    joinGrantIn(ctx, tx, {
      app,
      held,
      accounts: chosen,
      name: options.name ?? null,
      via: 'adopt',
      nothing: 'nothing was stored',
      hint: 'Run `credvault connections list` to see why, then add the account again.',
    }),
  );
  const warnings = await settleDestroyed(ctx, destroyed);
  const connections = await connectionStore.listViews(ctx.db, { ids });
  return {
    connections,
    destroyed,
    warnings,
    joined: true,
    sharedWith: holders.filter((ref) => !connections.some((c) => connectionRef(c) === ref)),
    replaced: [],
    keptOnJoined: false,
    presentedKept: false,
  };
}
