import { randomUUID } from 'node:crypto';
import type { Slot } from '../crypto/envelope.js';
import { Secret } from '../crypto/secret.js';
import type { Db } from '../db/client.js';
import { isUniqueViolation } from '../db/errors.js';
import { shred } from '../db/shred.js';
import type { AppRecord } from '../db/store/apps.js';
import * as store from '../db/store/apps.js';
import * as connectionStore from '../db/store/connections.js';
import * as tokenStore from '../db/store/tokens.js';
import { ConflictError, InvalidInputError, NotFoundError, quoted } from '../errors.js';
import { PLATFORMS, type PlatformId, parsePlatform } from '../providers/catalog.js';
import { providerFor } from '../providers/registry.js';
import { isLoopbackHost, quotableUrl } from '../util/net.js';
import { connectionRef } from '../views.js';
import { recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';
import type { RevokeReport } from './revoke.js';

export type { AppRecord };

/** App fields as they arrive from a file, flags or an HTTP body, before validation. */
export interface RawAppFields {
  label?: unknown;
  client_id?: unknown;
  client_secret?: unknown;
  redirect_uri?: unknown;
  scopes?: unknown;
  developer_token?: unknown;
  login_customer_id?: unknown;
  user_agent?: unknown;
  api_version?: unknown;
  authorize_url?: unknown;
  token_url?: unknown;
  revoke_url?: unknown;
  api_base_url?: unknown;
  /** The platform the fields were written for (an app file may say so): checked, never stored. */
  platform?: unknown;
}

export const APP_FILE_FIELDS: ReadonlyArray<keyof RawAppFields> = [
  'label',
  'client_id',
  'client_secret',
  'redirect_uri',
  'scopes',
  'developer_token',
  'login_customer_id',
  'user_agent',
  'api_version',
  'authorize_url',
  'token_url',
  'revoke_url',
  'api_base_url',
  'platform',
];

/** Validated app fields. `undefined` = not given (update leaves it), `null` = cleared. */
export interface AppFields {
  label?: string;
  clientId?: string;
  clientSecret?: Secret | null;
  developerToken?: Secret | null;
  redirectUri?: string;
  scopes?: string[];
  loginCustomerId?: string | null;
  userAgent?: string | null;
  apiVersion?: string | null;
  authorizeUrl?: string | null;
  tokenUrl?: string | null;
  revokeUrl?: string | null;
  apiBaseUrl?: string | null;
  /** The platform the fields were written for: the app's must be the same. */
  platform?: PlatformId;
}

export const APP_LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function text(value: unknown, field: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new InvalidInputError(`${field} must be a string`);
  const trimmed = value.trim();
  // A control character (a NUL, a line break in a header value such as user_agent) would fail later,
  // at the database or at every platform call: refused here, naming the field (not the value). What
  // else a header cannot carry is refused by checkHeaderFields.
  if (/\p{Cc}/u.test(trimmed))
    throw new InvalidInputError(
      `${field} contains a control character (a line break, a tab, a NUL…); remove it`,
    );
  return trimmed === '' ? undefined : trimmed;
}

function secretField(value: unknown, field: string): Secret | undefined {
  if (value instanceof Secret) return value.reveal() === '' ? undefined : value;
  const plain = text(value, field);
  return plain === undefined ? undefined : new Secret(plain);
}

/**
 * What is wrong with a value sent as an HTTP header's (Reddit's user agent, a developer token), in
 * words that do not repeat it: fetch sends only bytes, and refuses a character beyond U+00FF (an en
 * dash, an emoji) at every call, while one from U+0080 to U+00FF (é) goes out as a raw Latin-1 byte
 * that the platform does not read as written. Only printable ASCII is sent as it is written.
 */
export function headerValueProblem(value: string): string | undefined {
  return /^[\x20-\x7e]*$/.test(value)
    ? undefined
    : 'holds a character that cannot be sent in an HTTP header (only printable ASCII can: no accented letter, typographic dash or quote, or emoji)';
}

/** The fields sent in a header: refused here, naming the field (never the value), rather than at every platform call. */
function checkHeaderFields(fields: AppFields): void {
  for (const [field, value] of [
    ['user_agent', fields.userAgent],
    ['developer_token', fields.developerToken?.reveal()],
  ] as const) {
    const problem = value ? headerValueProblem(value) : undefined;
    if (problem) {
      throw new InvalidInputError(`${field} ${problem}`, {
        hint: `Write ${field} with printable ASCII characters only; nothing was changed.`,
      });
    }
  }
}

/** Endpoints must be https, except on a loopback host (local doubles, sandboxes behind a tunnel). */
function endpoint(value: unknown, field: string): string | undefined {
  const raw = text(value, field);
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InvalidInputError(`${field} is not a URL: ${quoted(quotableUrl(raw))}`);
  }
  if (url.username || url.password) throw new InvalidInputError(`${field} must not carry credentials`);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname))) {
    throw new InvalidInputError(
      `${field} must be an https:// URL (http:// only for a loopback host): ${quoted(raw)}`,
    );
  }
  return raw;
}

function redirect(value: unknown): string | undefined {
  const raw = text(value, 'redirect_uri');
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InvalidInputError(`redirect_uri is not a URL: ${quoted(quotableUrl(raw))}`);
  }
  if (url.username || url.password) throw new InvalidInputError('redirect_uri must not carry credentials');
  if (url.hash) throw new InvalidInputError('redirect_uri must not have a #fragment');
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname))) {
    throw new InvalidInputError(`redirect_uri must be https:// or a loopback http:// URL: ${quoted(raw)}`);
  }
  return raw;
}

function scopeList(value: unknown): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  const items = Array.isArray(value) ? value : typeof value === 'string' ? value.split(/[\s,]+/) : null;
  if (!items || items.some((s) => typeof s !== 'string')) {
    throw new InvalidInputError('scopes must be a list of strings (or one space-separated string)');
  }
  const scopes = (items as string[]).map((s) => text(s, 'scopes')).filter((s): s is string => !!s);
  return scopes.length ? [...new Set(scopes)] : undefined;
}

function customerId(value: unknown): string | undefined {
  const raw = typeof value === 'number' ? String(value) : text(value, 'login_customer_id');
  if (raw === undefined) return undefined;
  const digits = raw.replace(/-/g, '');
  if (!/^\d{10}$/.test(digits)) {
    throw new InvalidInputError(
      `login_customer_id must be a 10-digit Google Ads customer id, like 123-456-7890 (got ${quoted(raw)})`,
    );
  }
  return digits;
}

/** Validates raw fields once; what comes out is typed and trusted. */
export function parseAppFields(raw: RawAppFields): AppFields {
  const fields: AppFields = {};
  // What every app must have cannot be cleared: an empty value is a mistake, said so (not ignored).
  for (const field of ['label', 'client_id', 'redirect_uri'] as const) {
    const value = raw[field];
    if (value === null || (typeof value === 'string' && value.trim() === '')) {
      throw new InvalidInputError(`${field} cannot be empty: every app has one`);
    }
  }
  const label = text(raw.label, 'label');
  if (label !== undefined) {
    if (!APP_LABEL.test(label) || isUuid(label)) {
      throw new InvalidInputError(
        `label ${quoted(label)} must start with a letter or digit and use only letters, digits, ".", "_" and "-" (at most 63)`,
      );
    }
    fields.label = label;
  }
  const set = <K extends keyof AppFields>(key: K, value: AppFields[K] | undefined) => {
    if (value !== undefined) fields[key] = value;
  };
  // The optional settings are cleared by null in a file or an empty flag (`--token-url ''`): back
  // to the platform's default, without removing the app and connecting every account again.
  const cleared = (value: unknown) => value === null || (typeof value === 'string' && value.trim() === '');
  const clearable = <K extends keyof AppFields>(
    key: K,
    value: unknown,
    parse: (v: unknown) => AppFields[K] | undefined,
  ) => set(key, cleared(value) ? (null as AppFields[K]) : parse(value));
  set('clientId', text(raw.client_id, 'client_id'));
  set('clientSecret', secretField(raw.client_secret, 'client_secret'));
  set('developerToken', secretField(raw.developer_token, 'developer_token'));
  set('redirectUri', redirect(raw.redirect_uri));
  set('scopes', scopeList(raw.scopes));
  clearable('loginCustomerId', raw.login_customer_id, customerId);
  clearable('userAgent', raw.user_agent, (v) => text(v, 'user_agent'));
  clearable('apiVersion', raw.api_version, (v) => {
    const version = text(v, 'api_version');
    if (version !== undefined && !/^[A-Za-z0-9._-]{1,32}$/.test(version)) {
      throw new InvalidInputError(
        `api_version ${quoted(version)} is not a version string like v26 or 202601`,
      );
    }
    return version;
  });
  clearable('authorizeUrl', raw.authorize_url, (v) => endpoint(v, 'authorize_url'));
  clearable('tokenUrl', raw.token_url, (v) => endpoint(v, 'token_url'));
  clearable('revokeUrl', raw.revoke_url, (v) => endpoint(v, 'revoke_url'));
  clearable('apiBaseUrl', raw.api_base_url, (v) => endpoint(v, 'api_base_url'));
  const platform = text(raw.platform, 'platform');
  if (platform !== undefined) fields.platform = parsePlatform(platform);
  checkHeaderFields(fields);
  return fields;
}

/** The inputs an app's errors ask for, by their field names. */
export const APP_INPUTS = ['label', 'client_id', 'redirect_uri', 'client_secret', 'developer_token'] as const;
export type AppInput = (typeof APP_INPUTS)[number];

/**
 * How a caller's user gives each input an error asks for, completing "Give …" (the admin API names its
 * body's fields; the command line its flags, file fields and prompts).
 */
export type AppInputNames = Record<AppInput, string>;

const COMMAND_LINE_NAMES: AppInputNames = {
  label: '--label',
  client_id: '--client-id, or client_id in --from-file',
  redirect_uri: '--redirect-uri (for example http://localhost:8080/callback), or redirect_uri in --from-file',
  client_secret: 'it in --from-file (client_secret), or run in a terminal to be prompted',
  developer_token: 'it in --from-file (developer_token), or run in a terminal to be prompted',
};

/** What an app of this platform must have; missing pieces are exit 2 naming the input. */
function checkComplete(
  platform: PlatformId,
  fields: AppFields,
  hasClientSecret: boolean,
  hasDeveloperToken: boolean,
  names: AppInputNames = COMMAND_LINE_NAMES,
) {
  const info = PLATFORMS[platform];
  if (!fields.label) throw new InvalidInputError('an app needs a label', { hint: `Give ${names.label}.` });
  if (!fields.clientId) {
    throw new InvalidInputError('an app needs a client id', { hint: `Give ${names.client_id}.` });
  }
  if (!fields.redirectUri) {
    throw new InvalidInputError(`${info.displayName} needs the exact redirect URI registered with the app`, {
      hint: `Give ${names.redirect_uri}.`,
    });
  }
  // Microsoft public (native) clients have no secret; every other platform authenticates the client.
  if (!hasClientSecret && platform !== 'microsoft_ads') {
    throw new InvalidInputError(`${info.displayName} apps need a client secret`, {
      hint: `Give ${names.client_secret}.`,
    });
  }
  if (info.capabilities.developer_token === 'required' && !hasDeveloperToken) {
    throw new InvalidInputError(`${info.displayName} apps need a developer token`, {
      hint: `Give ${names.developer_token}.`,
    });
  }
  if (info.capabilities.developer_token === 'none' && hasDeveloperToken) {
    throw new InvalidInputError(`${info.displayName} has no developer token; remove developer_token`);
  }
  if (platform !== 'google_ads' && fields.loginCustomerId) {
    throw new InvalidInputError('login_customer_id is a Google Ads setting');
  }
}

function withDefaults(platform: PlatformId, fields: AppFields): AppFields {
  const defaults = PLATFORMS[platform].defaults;
  return {
    ...fields,
    redirectUri: fields.redirectUri ?? defaults.redirectUri ?? undefined,
    scopes: fields.scopes ?? defaults.scopes,
    userAgent:
      fields.userAgent ??
      // Reddit throttles generic user agents; this one names the app as Reddit asks.
      (platform === 'reddit_ads' ? `credvault:${fields.clientId}:v1 (credvault app ${fields.label})` : null),
  };
}

/** Fields written for one platform (a file that says `"platform"`) are not given to another's app. */
function checkPlatform(platform: PlatformId, input: AppFields): void {
  if (input.platform !== undefined && input.platform !== platform) {
    throw new InvalidInputError(`these app fields are for ${input.platform}, and the app is ${platform}`, {
      hint: `Give them to a ${input.platform} app, or correct the "platform" field.`,
    });
  }
}

/** Checks a new app before its secrets are asked for, assuming the required ones will be given. */
export function checkNewApp(platform: PlatformId, input: AppFields): void {
  checkPlatform(platform, input);
  const fields = withDefaults(platform, input);
  const tokenRequired = PLATFORMS[platform].capabilities.developer_token === 'required';
  checkComplete(platform, fields, true, Boolean(fields.developerToken) || tokenRequired);
}

export function secretSlot(appId: string, column: 'client_secret_enc' | 'developer_token_enc'): Slot {
  return { table: 'oauth_app_credentials', column, rowId: appId };
}

/** A new app; `names` says how the caller's user gives what an error asks for (the command line's flags unless given). */
export async function addApp(
  ctx: ServiceContext,
  platform: PlatformId,
  input: AppFields,
  names: AppInputNames = COMMAND_LINE_NAMES,
): Promise<AppRecord> {
  checkPlatform(platform, input);
  // Again here: a secret asked for at a prompt or read from standard input did not go through parseAppFields.
  checkHeaderFields(input);
  const fields = withDefaults(platform, input);
  checkComplete(platform, fields, Boolean(fields.clientSecret), Boolean(fields.developerToken), names);
  const keyring = await ctx.keyring();
  const id = randomUUID();
  try {
    return await ctx.transaction(async (tx) => {
      const dataKeyId = await ctx.vaultDataKeyId();
      if ((await store.findByLabel(tx, fields.label!, platform)).length)
        throw duplicateLabel(platform, fields.label!, names);
      await store.insert(tx, {
        id,
        platform,
        label: fields.label!,
        clientId: fields.clientId!,
        clientSecretEnc: fields.clientSecret
          ? await keyring.encrypt(fields.clientSecret, secretSlot(id, 'client_secret_enc'), dataKeyId)
          : null,
        developerTokenEnc: fields.developerToken
          ? await keyring.encrypt(fields.developerToken, secretSlot(id, 'developer_token_enc'), dataKeyId)
          : null,
        dataKeyId,
        redirectUri: fields.redirectUri!,
        scopes: fields.scopes ?? [],
        loginCustomerId: fields.loginCustomerId ?? null,
        userAgent: fields.userAgent ?? null,
        apiVersion: fields.apiVersion ?? null,
        authorizeUrl: fields.authorizeUrl ?? null,
        tokenUrl: fields.tokenUrl ?? null,
        revokeUrl: fields.revokeUrl ?? null,
        apiBaseUrl: fields.apiBaseUrl ?? null,
        createdBy: ctx.actor.name,
      });
      await recordAudit(tx, ctx.actor, {
        action: 'app.create',
        targetType: 'app',
        targetId: id,
        outcome: 'success',
        detail: {
          platform,
          label: fields.label,
          client_secret: fields.clientSecret ? 'set' : 'none',
          developer_token: fields.developerToken ? 'set' : 'none',
        },
      });
      return (await store.getById(tx, id))!;
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw duplicateLabel(platform, fields.label!, names);
    throw error;
  }
}

function duplicateLabel(
  platform: string,
  label: string,
  names: AppInputNames = COMMAND_LINE_NAMES,
): ConflictError {
  return new ConflictError(`an app labelled ${quoted(label)} already exists for ${platform}`, {
    hint: `Give another ${names.label}, or change the existing one with \`credvault apps update ${platform}/${label}\`.`,
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return UUID.test(value);
}

/** APP ref: an id, a label, or `platform/label` when a label is used on several platforms. */
export async function resolveApp(db: Db, ref: string): Promise<AppRecord> {
  const trimmed = ref.trim();
  if (isUuid(trimmed)) {
    const app = await store.getById(db, trimmed.toLowerCase());
    if (!app) throw new NotFoundError(`no app with id ${trimmed}`, { hint: 'See `credvault apps list`.' });
    return app;
  }
  const slash = trimmed.indexOf('/');
  const matches =
    slash > 0
      ? await store.findByLabel(db, trimmed.slice(slash + 1), parsePlatform(trimmed.slice(0, slash)))
      : await store.findByLabel(db, trimmed);
  if (matches.length === 1) return matches[0]!;
  if (matches.length === 0)
    throw new NotFoundError(`no app ${quoted(trimmed)}`, { hint: 'See `credvault apps list`.' });
  throw new InvalidInputError(`the label ${quoted(trimmed)} is used on several platforms`, {
    hint: `Say which: ${matches.map((a) => `${a.platform}/${a.label}`).join(', ')}.`,
  });
}

export async function listApps(ctx: ServiceContext, platform?: PlatformId): Promise<AppRecord[]> {
  return store.list(ctx.db, platform);
}

export async function showApp(ctx: ServiceContext, ref: string): Promise<AppRecord> {
  return resolveApp(ctx.db, ref);
}

export async function updateApp(
  ctx: ServiceContext,
  ref: string,
  input: AppFields,
  options: { force?: boolean } = {},
): Promise<AppRecord> {
  checkHeaderFields(input);
  const keyring = Object.keys(input).some((k) => k === 'clientSecret' || k === 'developerToken')
    ? await ctx.keyring()
    : null;
  try {
    return await ctx.transaction(async (tx) => {
      const app = await resolveApp(tx, ref);
      const platform = app.platform as PlatformId;
      checkPlatform(platform, input);
      const merged: AppFields = { ...app, ...input, platform };
      const hasSecret = input.clientSecret !== undefined ? input.clientSecret !== null : app.hasClientSecret;
      const hasToken =
        input.developerToken !== undefined ? input.developerToken !== null : app.hasDeveloperToken;
      checkComplete(platform, merged, hasSecret, hasToken);
      if (
        input.label &&
        input.label !== app.label &&
        (await store.findByLabel(tx, input.label, platform)).length
      ) {
        throw duplicateLabel(platform, input.label);
      }
      const changes: Partial<store.NewAppRow> = { updatedAt: ctx.now() };
      const changed: string[] = [];
      const plain = [
        ['label', 'label'],
        ['clientId', 'client_id'],
        ['redirectUri', 'redirect_uri'],
        ['scopes', 'scopes'],
        ['loginCustomerId', 'login_customer_id'],
        ['userAgent', 'user_agent'],
        ['apiVersion', 'api_version'],
        ['authorizeUrl', 'authorize_url'],
        ['tokenUrl', 'token_url'],
        ['revokeUrl', 'revoke_url'],
        ['apiBaseUrl', 'api_base_url'],
      ] as const;
      for (const [key, name] of plain) {
        if (input[key] !== undefined && JSON.stringify(input[key]) !== JSON.stringify(app[key])) {
          (changes as Record<string, unknown>)[key] = input[key];
          changed.push(name);
        }
      }
      // A grant belongs to the client it was issued to: the platform refuses its refresh token with
      // any other client id, so every connection would fail at its next refresh.
      if (changes.clientId !== undefined && !options.force) {
        if ((await connectionStore.oneConnectionPerGrantOfApp(tx, app.id)).length) {
          throw new ConflictError(
            `connections of app ${platform}/${app.label} hold tokens issued to client id ${app.clientId}: the platform refuses them from another client`,
            {
              hint: 'Add the new client as an app of its own (`credvault apps add`) and connect the accounts through it; or give --force to change it anyway (each connection will need `credvault connect` again).',
            },
          );
        }
      }
      if (keyring && (input.clientSecret !== undefined || input.developerToken !== undefined)) {
        const dataKeyId = await ctx.vaultDataKeyId();
        changes.dataKeyId = dataKeyId;
        // Secrets under the app's old data key are re-sealed under the current one, or they would no
        // longer open once the row names the new key.
        const current = (await store.getEncryptedSecrets(tx, app.id))!;
        const reseal = async (
          value: Secret | null | undefined,
          stored: string | null,
          column: 'client_secret_enc' | 'developer_token_enc',
        ) => {
          const slot = secretSlot(app.id, column);
          if (value === null) return null;
          if (value !== undefined) return keyring.encrypt(value, slot, dataKeyId);
          if (stored === null) return null;
          return keyring.encrypt(await keyring.decrypt(stored, slot), slot, dataKeyId);
        };
        changes.clientSecretEnc = await reseal(
          input.clientSecret,
          current.clientSecretEnc,
          'client_secret_enc',
        );
        changes.developerTokenEnc = await reseal(
          input.developerToken,
          current.developerTokenEnc,
          'developer_token_enc',
        );
        if (input.clientSecret !== undefined) changed.push('client_secret');
        if (input.developerToken !== undefined) changed.push('developer_token');
      }
      if (changed.length === 0) return app;
      await store.update(tx, app.id, changes);
      await recordAudit(tx, ctx.actor, {
        action: 'app.update',
        targetType: 'app',
        targetId: app.id,
        outcome: 'success',
        detail: { platform, label: input.label ?? app.label, changed },
      });
      return (await store.getById(tx, app.id))!;
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw duplicateLabel('this platform', input.label ?? ref);
    throw error;
  }
}

export async function setAppEnabled(ctx: ServiceContext, ref: string, enabled: boolean): Promise<AppRecord> {
  return ctx.transaction(async (tx) => {
    const app = await resolveApp(tx, ref);
    if (app.enabled === enabled) return app;
    await store.update(tx, app.id, { enabled, updatedAt: ctx.now() });
    await recordAudit(tx, ctx.actor, {
      action: enabled ? 'app.enable' : 'app.disable',
      targetType: 'app',
      targetId: app.id,
      outcome: 'success',
      detail: { platform: app.platform, label: app.label },
    });
    return (await store.getById(tx, app.id))!;
  });
}

/**
 * Removes an app. Connections holding tokens through it make that a conflict, unless `force`: then
 * each of their grants is revoked first (at the platform where it can be, and destroyed here), one
 * revocation at a time, and the app goes with its connection rows in one transaction. Interrupted, it
 * can simply be run again.
 */
export async function removeApp(
  ctx: ServiceContext,
  ref: string,
  force: boolean,
): Promise<{ app: AppRecord; revocations: RevokeReport[]; warnings: string[] }> {
  const app = await resolveApp(ctx.db, ref);
  const holding = await connectionStore.oneConnectionPerGrantOfApp(ctx.db, app.id);
  if (holding.length && !force) {
    // What blocks the removal: connections still holding tokens (a consent the platform may still
    // honour). Revoked ones hold none, and are removed with the app.
    const holders = (await connectionStore.listHoldingOfApp(ctx.db, app.id)).map(connectionRef);
    const n = holders.length;
    const named = n > 5 ? `${holders.slice(0, 5).join(', ')} and ${n - 5} more` : holders.join(', ');
    throw new ConflictError(
      `app ${app.platform}/${app.label} is used by ${n} connection${n === 1 ? '' : 's'} that still ${n === 1 ? 'holds' : 'hold'} tokens: ${named}`,
      {
        hint: `Revoke ${n === 1 ? 'it' : 'them'} first (\`credvault connections revoke CONN\`; revoked connections are removed with the app), or give --force to revoke ${n === 1 ? 'it' : 'them'} and remove the app.`,
      },
    );
  }
  const revocations: RevokeReport[] = [];
  let kept = 0;
  if (holding.length) {
    const { revokeConnection } = await import('./revoke.js');
    for (const connectionId of holding)
      revocations.push(await revokeConnection(ctx, connectionId, { force: true, shred: false }));
  }
  const removedApp = await ctx.transaction(async (tx) => {
    const current = await resolveApp(tx, app.id);
    // A connection made through the app since the check above (connect, the daemon's API) holds
    // tokens nobody revoked: its rows would go with the app's, its consent left live.
    if ((await connectionStore.oneConnectionPerGrantOfApp(tx, current.id)).length) {
      throw new ConflictError(
        `a connection was made through app ${current.platform}/${current.label} while it was being removed; nothing was removed`,
        { hint: 'Run the command again.' },
      );
    }
    const removed = await store.countConnections(tx, current.id);
    // What a `connections add` that did not finish kept (a grant with no account): it goes with the
    // app, the platform not told (nothing revokes a grant no connection holds).
    const [keptRow] = await tokenStore.countUnattached(tx, current.id);
    kept = keptRow?.n ?? 0;
    await connectionStore.removeAllOfApp(tx, current.id);
    await store.remove(tx, current.id);
    await recordAudit(tx, ctx.actor, {
      action: 'app.remove',
      targetType: 'app',
      targetId: current.id,
      outcome: 'success',
      detail: {
        platform: current.platform,
        label: current.label,
        connections_removed: removed,
        revoked: holding.length,
        ...(kept ? { kept_tokens_destroyed: kept } : {}),
      },
    });
    return current;
  });
  // The revoked grants' secrets and the app's own, out of the database's files too.
  const leftover = await shred(ctx.database, ['oauth_tokens_vault', 'data_keys', 'oauth_app_credentials']);
  const warnings = leftover ? [leftover] : [];
  if (kept) {
    const platform = removedApp.platform as PlatformId;
    const { consentPage } = await providerFor(platform);
    warnings.push(
      `${kept} refresh token${kept === 1 ? '' : 's'} that a connections add which did not finish kept (with no account) went with the app, and ${PLATFORMS[platform].displayName} was not told: ${kept === 1 ? 'its consent stays' : 'their consents stay'} listed there until removed at ${consentPage}`,
    );
  }
  return { app: removedApp, revocations, warnings };
}
