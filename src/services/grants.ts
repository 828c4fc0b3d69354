import { createHash, randomUUID } from 'node:crypto';
import type { Slot } from '../crypto/envelope.js';
import type { Secret } from '../crypto/secret.js';
import type { Db } from '../db/client.js';
import { shred } from '../db/shred.js';
import type { AppRecord } from '../db/store/apps.js';
import * as connectionStore from '../db/store/connections.js';
import * as dataKeys from '../db/store/data-keys.js';
import * as tokenStore from '../db/store/tokens.js';
import { InvalidInputError } from '../errors.js';
import { PLATFORMS, type PlatformId } from '../providers/catalog.js';
import type { AdAccount, TokenResult } from '../providers/types.js';
import { type AuditEntry, recordAudit } from './audit.js';
import { nameTaken } from './connections.js';
import type { ServiceContext } from './context.js';

/**
 * A grant is one consent's tokens: one row of oauth_tokens_vault under its own data key, shared by
 * the connections (ad accounts) that consent reaches. Its own key means revoking destroys it for good.
 */

export function grantSlot(grantId: string, column: 'access_token_enc' | 'refresh_token_enc'): Slot {
  return { table: 'oauth_tokens_vault', column, rowId: grantId };
}

/** When a refresh token stops working, and whether that is the platform's own date. */
export interface RefreshTokenEnd {
  at: Date | null;
  /** The platform gave it: it holds until the platform gives another (a refresh does not move it). */
  fixed: boolean;
}

/**
 * When the refresh token stops working: the platform's absolute date when it gave one (LinkedIn, Google
 * apps in Testing), kept while its answers give none; else the last use plus how long the platform
 * lets a refresh token sit unused.
 */
export function refreshTokenExpiry(
  platform: PlatformId,
  tokens: Pick<TokenResult, 'refreshTokenExpiresAt'>,
  now: Date,
  previous: RefreshTokenEnd | null,
): RefreshTokenEnd {
  const fixedByPlatform = PLATFORMS[platform].capabilities.refresh_token_fixed_expiry;
  if (tokens.refreshTokenExpiresAt) {
    // LinkedIn's end is fixed at the first consent: never move it later on a refresh.
    const keep =
      previous?.fixed && previous.at && fixedByPlatform && previous.at < tokens.refreshTokenExpiresAt;
    return { at: keep ? previous.at : tokens.refreshTokenExpiresAt, fixed: true };
  }
  // An end the platform gave once (a Google app in Testing: 7 days from the consent) is not moved by
  // a refresh whose answer says nothing of it.
  if (previous?.fixed && previous.at) return previous;
  if (fixedByPlatform) return { at: previous?.at ?? null, fixed: previous?.fixed ?? false };
  const idleDays = PLATFORMS[platform].capabilities.refresh_token_idle_days;
  return { at: idleDays ? new Date(now.getTime() + idleDays * 86_400_000) : null, fixed: false };
}

/** A RefreshTokenEnd as the two columns that keep it. */
export function expiryColumns(end: RefreshTokenEnd) {
  return { refreshTokenExpiresAt: end.at, refreshTokenExpiryFixed: end.fixed };
}

export interface StoreGrantInput {
  app: AppRecord;
  /** An imported grant may have no access token yet (the first use refreshes it). */
  tokens: Omit<TokenResult, 'accessToken'> & { accessToken: Secret | null };
  accounts: AdAccount[];
  name: string | null;
  /**
   * What made the grant, for the audit log: a consent (`connect`), an adopted refresh token
   * (`adopt`) or an imported one (`import`).
   */
  via: 'connect' | 'adopt' | 'import';
  /**
   * Accept a grant with an access token and no refresh token (LinkedIn: an imported one, or the
   * consent of an app that is no Marketing Developer Platform partner).
   */
  accessTokenOnly?: boolean;
  /** The grant's id (a new one by default). */
  grantId?: string;
  /** For an import: the SHA-256 of the token the file held (see oauth_tokens_vault). */
  importedTokenSha256?: string;
  /**
   * The SHA-256 of the refresh token as it was given (tokenSha256), when the one stored is not it
   * (`connections add`: the platform may have rotated it at the first refresh). Default: the stored one's.
   */
  refreshTokenSha256?: string;
}

/**
 * A refresh token's SHA-256 (hex), as oauth_tokens_vault.refresh_token_sha256 keeps it: recognises a
 * token the vault holds without opening any grant. Never printed or audited.
 */
export function tokenSha256(token: Secret): string {
  return createHash('sha256').update(token.reveal()).digest('hex');
}

/**
 * Stores a new grant and points its connections at it, in the caller's transaction. An account that
 * was connected before is reconnected (its old grant is destroyed once nothing uses it).
 */
export function severalNamed(): InvalidInputError {
  return new InvalidInputError('--name names one connection, but several accounts were chosen', {
    hint: 'Connect with one --account, or rename the connections afterwards.',
  });
}

export async function storeGrant(
  ctx: ServiceContext,
  tx: Db,
  input: StoreGrantInput,
): Promise<{ ids: string[]; destroyed: DestroyedGrant[] }> {
  const { app, tokens, accounts } = input;
  const platform = app.platform as PlatformId;
  if (!tokens.refreshToken && !(input.accessTokenOnly && tokens.accessToken)) {
    throw new InvalidInputError(`${PLATFORMS[platform].displayName} returned no refresh token`, {
      hint:
        platform === 'linkedin_ads'
          ? 'LinkedIn issues refresh tokens only to Marketing Developer Platform partners; the access token would die in 60 days.'
          : 'Check the app’s scopes and consent settings (Google: access_type=offline; Microsoft: offline_access; Reddit: duration=permanent).',
    });
  }
  if (input.name && accounts.length > 1) throw severalNamed();
  const keyring = await ctx.keyring();
  const now = ctx.now();
  const grantId = input.grantId ?? randomUUID();
  const dataKeyId = randomUUID();
  await keyring.followRotation((await dataKeys.activeVaultKey(tx))?.kekId ?? null);
  const { wrapped } = await keyring.createDataKey(dataKeyId);
  await dataKeys.insert(tx, wrapped, 'grant');
  await tokenStore.insert(tx, {
    id: grantId,
    platform,
    appId: app.id,
    dataKeyId,
    accessTokenEnc: tokens.accessToken
      ? await keyring.encrypt(tokens.accessToken, grantSlot(grantId, 'access_token_enc'), dataKeyId)
      : null,
    refreshTokenEnc: tokens.refreshToken
      ? await keyring.encrypt(tokens.refreshToken, grantSlot(grantId, 'refresh_token_enc'), dataKeyId)
      : null,
    tokenType: tokens.tokenType,
    scope: tokens.scope,
    accessTokenExpiresAt: tokens.expiresAt,
    ...expiryColumns(refreshTokenExpiry(platform, tokens, now, null)),
    // Refreshed just now when it comes with an access token the platform gave (a consent, an
    // adoption, an import's token refreshed to replace a dead grant). An imported refresh token
    // stored as the file gave it (no access token), or a file's access token alone, was last used who
    // knows when: credvault has not refreshed it yet (the daemon's next sweep does, before an idle
    // platform drops it).
    lastRefreshedAt: tokens.accessToken && !input.accessTokenOnly ? now : null,
    importedTokenSha256: input.importedTokenSha256 ?? null,
    refreshTokenSha256:
      input.refreshTokenSha256 ?? (tokens.refreshToken ? tokenSha256(tokens.refreshToken) : null),
  });

  const { ids, audit, destroyed } = await attachAccounts(ctx, tx, { ...input, grantId });
  audit.push({
    action: 'token.store',
    targetType: 'grant',
    targetId: grantId,
    outcome: 'success',
    detail: {
      platform,
      app: app.label,
      accounts: accounts.map((a) => a.id),
      secrets: [
        ...(tokens.accessToken ? ['access_token'] : []),
        ...(tokens.refreshToken ? ['refresh_token'] : []),
      ],
    },
  });
  await recordAudit(tx, ctx.actor, audit);
  return { ids, destroyed };
}

/** A grant a reconnect replaced and destroyed (see attachAccounts, settleDestroyed). */
export interface DestroyedGrant {
  grantId: string;
  dataKeyId: string;
  /** The connections (`platform:account`) that moved off it to the new grant. */
  connections: string[];
}

/**
 * Points the connections of `accounts` at a grant, in the caller's transaction: new accounts become
 * connections, connected ones are reconnected (a grant left with no connection is destroyed, with a
 * `token.destroy` entry). Returns their ids, the audit entries for the caller to record, and the grants
 * destroyed: once the transaction has committed, the caller hands them to settleDestroyed.
 *
 * A destroyed grant is not revoked at the platform: on Google, revoking any token of a user+client
 * authorization revokes the whole authorization, the new grant of this reconnect included (a new
 * consent of the same person to the same client is that same authorization). The old refresh token is
 * destroyed here only; the platform ends it when it ends unused tokens (README, "connect and connections").
 */
export async function attachAccounts(
  ctx: ServiceContext,
  tx: Db,
  input: Pick<StoreGrantInput, 'app' | 'accounts' | 'name' | 'via'> & { grantId: string },
): Promise<{ ids: string[]; audit: AuditEntry[]; destroyed: DestroyedGrant[] }> {
  const { app, accounts, grantId } = input;
  const platform = app.platform as PlatformId;
  const audit: AuditEntry[] = [];
  /** Grants the reconnected accounts were on: their connections' refs. */
  const replaced = new Map<string, string[]>();
  const ids: string[] = [];
  for (const account of accounts) {
    if (input.name) {
      const holder = await connectionStore.getByName(tx, input.name);
      if (holder && !(holder.platform === platform && holder.externalAccountId === account.id))
        throw nameTaken(input.name);
    }
    const existing = await connectionStore.getByAccount(tx, platform, account.id);
    const fields = {
      appId: app.id,
      tokenId: grantId,
      accountName: account.name,
      status: 'active',
      statusMessage: null,
      consecutiveFailures: 0,
      details: { ...account.details, ...(account.currency ? { currency: account.currency } : {}) },
    };
    // An account taken as given (discovery failed) brings no details: keep what was known. How a
    // Google account is reached (directly, or through a manager) is replaced whole, not merged.
    const kept = { ...existing?.details };
    if ('reached' in fields.details || 'login_customer_id' in fields.details) {
      delete kept.reached;
      delete kept.login_customer_id;
    }
    const known = existing ? { ...kept, ...fields.details } : fields.details;
    if (existing) {
      if (existing.tokenId)
        replaced.set(existing.tokenId, [
          ...(replaced.get(existing.tokenId) ?? []),
          `${platform}:${account.id}`,
        ]);
      await connectionStore.update(tx, existing.id, {
        ...fields,
        details: known,
        accountName: account.name ?? existing.accountName,
        ...(input.name ? { name: input.name } : {}),
      });
      ids.push(existing.id);
      audit.push({
        action: 'connection.reconnect',
        targetType: 'connection',
        targetId: existing.id,
        connectionId: existing.id,
        outcome: 'success',
        detail: {
          platform,
          account: account.id,
          app: app.label,
          via: input.via,
          previous_status: existing.status,
          ...(input.name && existing.name !== input.name ? { renamed_from: existing.name } : {}),
        },
      });
    } else {
      const id = randomUUID();
      await connectionStore.insert(tx, {
        id,
        platform,
        externalAccountId: account.id,
        name: input.name,
        connectedBy: ctx.actor.name,
        ...fields,
      });
      ids.push(id);
      audit.push({
        action: 'connection.create',
        targetType: 'connection',
        targetId: id,
        connectionId: id,
        outcome: 'success',
        detail: { platform, account: account.id, app: app.label, via: input.via },
      });
    }
  }
  const destroyed: DestroyedGrant[] = [];
  for (const [old, refs] of replaced) {
    if (old === grantId || (await connectionStore.countByGrant(tx, old)) > 0) continue;
    // Not revoked at the platform: see above (it would end the new grant too, on Google).
    const dataKeyId = await destroyGrant(tx, old);
    if (!dataKeyId) continue;
    destroyed.push({ grantId: old, dataKeyId, connections: refs });
    audit.push({
      action: 'token.destroy',
      targetType: 'grant',
      targetId: old,
      outcome: 'success',
      detail: { platform, via: input.via, reason: 'reconnected', replaced_by: grantId, connections: refs },
    });
  }
  return { ids, audit, destroyed };
}

/**
 * Once the transaction that destroyed grants has committed: their data keys are forgotten and what
 * they leave in the database's files removed (db/shred.ts), as a revocation does. Resolves warnings
 * for what could not be done (the action itself is done by then).
 */
export async function settleDestroyed(ctx: ServiceContext, destroyed: DestroyedGrant[]): Promise<string[]> {
  if (!destroyed.length) return [];
  const keyring = await ctx.keyring();
  for (const grant of destroyed) keyring.forget(grant.dataKeyId);
  const leftover = await shred(ctx.database, ['oauth_tokens_vault', 'data_keys']);
  return leftover ? [leftover] : [];
}

/**
 * Deletes a grant's tokens and its data key: what they protected cannot be read again. Resolves the
 * data key's id (null: there was no such grant).
 */
export async function destroyGrant(tx: Db, grantId: string): Promise<string | null> {
  const grant = await tokenStore.get(tx, grantId);
  if (!grant) return null;
  await connectionStore.updateByGrant(tx, grantId, { tokenId: null });
  await tokenStore.remove(tx, grantId);
  await dataKeys.destroy(tx, grant.dataKeyId);
  return grant.dataKeyId;
}

/** One of a grant's tokens, decrypted: the one place a grant's secrets are opened. Callers audit. */
export async function openToken(
  ctx: ServiceContext,
  grant: Pick<tokenStore.GrantRow, 'id' | 'accessTokenEnc' | 'refreshTokenEnc'>,
  which: 'access' | 'refresh',
): Promise<Secret | null> {
  const keyring = await ctx.keyring();
  return which === 'access'
    ? keyring.decryptOptional(grant.accessTokenEnc, grantSlot(grant.id, 'access_token_enc'))
    : keyring.decryptOptional(grant.refreshTokenEnc, grantSlot(grant.id, 'refresh_token_enc'));
}
