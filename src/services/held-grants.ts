import type { Db } from '../db/client.js';
import type { AppRecord } from '../db/store/apps.js';
import type { ConnectionRow, ConnectionView } from '../db/store/connections.js';
import * as connectionStore from '../db/store/connections.js';
import * as tokenStore from '../db/store/tokens.js';
import { ConflictError, CredvaultError } from '../errors.js';
import type { AdAccount, ProviderApp } from '../providers/types.js';
import { connectionRef } from '../views.js';
import { type AuditEntry, recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';
import { attachAccounts, destroyGrant } from './grants.js';
import { freshGrant } from './tokens.js';

/**
 * One consent, one grant: a refresh token the vault already holds for an app (recognised by the
 * SHA-256 of the token each grant was stored with, kept when the platform rotates it, or the one an
 * import's file held) is not stored a second time. `connections add` and `import` share these steps:
 * a working grant holding it is joined (refreshed once under its lease first: the given token is never
 * presented again, since where refresh tokens rotate it may be used up, and a reused one can end the
 * whole grant), and one that needs a person is replaced by the new grant of the given token.
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

/** How a message names the grant holding the token. */
export function heldBy(held: HeldGrant): string {
  return `the vault already holds this refresh token (the grant of ${held.connections.map(connectionRef).join(', ')})`;
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
  app?: ProviderApp,
): Promise<tokenStore.GrantRow> {
  const through = held.connections.find((c) => c.status === 'active') ?? held.connections.find(isLive)!;
  try {
    // A person is acting (connections add, import), as `connections refresh --force`: a grant in
    // `error` or cooling down is tried, not answered from its recorded failure.
    const { grant } = await freshGrant(ctx, through, {
      minTtlSeconds: 0,
      forceRefresh: true,
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
): Promise<string[]> {
  const { held } = input;
  const grant = await tokenStore.lock(tx, held.grant.id);
  const current = grant ? await connectionStore.listByGrant(tx, held.grant.id) : [];
  if (!current.some(isLive)) {
    throw new ConflictError(`${heldBy(held)}, but it was revoked or found dead meanwhile; ${input.nothing}`, {
      hint: input.hint,
    });
  }
  const { ids, audit } = await attachAccounts(ctx, tx, {
    app: input.app,
    grantId: held.grant.id,
    accounts: input.accounts,
    name: input.name,
    via: input.via,
  });
  const sharedWith = current.filter((c) => !ids.includes(c.id)).map((c) => c.externalAccountId);
  for (const entry of audit)
    entry.detail = { ...entry.detail, grant: held.grant.id, shared_with: sharedWith };
  await recordAudit(tx, ctx.actor, audit);
  return ids;
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
  // Reconnected since it was read (a connection this adoption named among them): nothing to replace.
  if (!left.length || left.some(isLive)) return [];
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
