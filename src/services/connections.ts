import type { Db } from '../db/client.js';
import { isUniqueViolation } from '../db/errors.js';
import type { ConnectionRow, ConnectionView } from '../db/store/connections.js';
import * as store from '../db/store/connections.js';
import { ConflictError, InvalidInputError, NotFoundError, quoted } from '../errors.js';
import { isPlatformId, type PlatformId } from '../providers/catalog.js';
import { isUuid } from './apps.js';
import { recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';

export type { ConnectionRow, ConnectionView };

/**
 * How the status message of a connection whose revocation the platform could not be told of yet
 * begins (revoke.ts): its tokens are kept, no longer served, for `connections revoke` to try again.
 */
export const REVOCATION_REQUESTED = 'revocation requested';

export const CONNECTION_STATUSES = ['active', 'needs_reauth', 'error', 'revoked'] as const;
export type ConnectionStatus = (typeof CONNECTION_STATUSES)[number];

/** Account ids as each platform writes them: Google without dashes, LinkedIn without the URN prefix. */
export function normalizeAccountId(platform: string, id: string): string {
  const trimmed = id.trim();
  if (platform === 'google_ads') return trimmed.replace(/-/g, '');
  if (platform === 'linkedin_ads') return trimmed.replace(/^urn:li:sponsoredAccount:/, '');
  return trimmed;
}

/** CONN ref: an id, `platform:external_account_id` (kebab platform accepted), or a connection's name. */
export async function resolveConnection(db: Db, ref: string): Promise<ConnectionRow> {
  const trimmed = ref.trim();
  if (!trimmed) {
    throw new InvalidInputError('no connection was named', {
      hint: 'Name it by its name, its id, or PLATFORM:ACCOUNT (`credvault connections list` shows them).',
    });
  }
  if (isUuid(trimmed)) {
    const row = await store.getById(db, trimmed.toLowerCase());
    if (row) return row;
  }
  const colon = trimmed.indexOf(':');
  if (colon > 0) {
    const platform = trimmed.slice(0, colon).toLowerCase().replace(/-/g, '_');
    if (isPlatformId(platform)) {
      const row = await store.getByAccount(
        db,
        platform,
        normalizeAccountId(platform, trimmed.slice(colon + 1)),
      );
      if (row) return row;
    }
  }
  const byName = await store.getByName(db, trimmed);
  if (byName) return byName;
  throw new NotFoundError(`no connection ${quoted(trimmed)}`, {
    hint: 'Give an id, platform:account_id (e.g. google_ads:1234567890) or a name; see `credvault connections list`.',
  });
}

export async function connectionView(db: Db, ref: string): Promise<ConnectionView> {
  const row = await resolveConnection(db, ref);
  return (await store.view(db, row.id))!;
}

export async function listConnections(
  ctx: ServiceContext,
  filter: { platform?: PlatformId; status?: ConnectionStatus; ids?: string[] },
): Promise<ConnectionView[]> {
  return store.listViews(ctx.db, filter);
}

export async function countConnections(ctx: ServiceContext): Promise<number> {
  return store.countAll(ctx.db);
}

export function parseStatus(value: string): ConnectionStatus {
  if ((CONNECTION_STATUSES as readonly string[]).includes(value)) return value as ConnectionStatus;
  throw new InvalidInputError(`unknown status ${quoted(value)}`, {
    hint: `Valid: ${CONNECTION_STATUSES.join(', ')}.`,
  });
}

export const CONNECTION_NAME = /^[A-Za-z][A-Za-z0-9._-]{0,62}$/;

/** Names are refs too: they must not look like an id or a `platform:account` ref. */
export function parseConnectionName(name: string): string {
  const trimmed = name.trim();
  if (isUuid(trimmed)) {
    throw new InvalidInputError(
      `connection name ${quoted(name)} has the shape of a connection id, which a name must not have: it would be read as one`,
      { hint: 'Choose a name that is not a UUID, for example with a word in front of it.' },
    );
  }
  if (!CONNECTION_NAME.test(trimmed)) {
    throw new InvalidInputError(
      `connection name ${quoted(name)} must start with a letter and use only letters, digits, ".", "_" and "-" (at most 63)`,
    );
  }
  return trimmed;
}

export async function renameConnection(
  ctx: ServiceContext,
  ref: string,
  name: string,
): Promise<ConnectionView> {
  const newName = parseConnectionName(name);
  try {
    return await ctx.transaction(async (tx) => {
      const row = await resolveConnection(tx, ref);
      if (row.name === newName) return (await store.view(tx, row.id))!;
      const taken = await store.getByName(tx, newName);
      if (taken) throw nameTaken(newName);
      await store.update(tx, row.id, { name: newName });
      await recordAudit(tx, ctx.actor, {
        action: 'connection.rename',
        targetType: 'connection',
        targetId: row.id,
        connectionId: row.id,
        outcome: 'success',
        detail: { from: row.name, to: newName },
      });
      return (await store.view(tx, row.id))!;
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw nameTaken(newName);
    throw error;
  }
}

/**
 * What is wrong with an account id (normalized), in words that do not repeat it (an import's file may
 * hold a secret where the id should be), or undefined when it is one: a Google Ads customer id is 10
 * digits; Microsoft Advertising's account and customer ids are numbers (an account also has a
 * *number*, letters and digits like F149ABCD, which the API does not take); a LinkedIn ad account id
 * is a number (`urn:li:sponsoredAccount:123` is normalized to it); a Reddit ad account id is a
 * Reddit id, `a2_` and base-36 letters and digits (providers.md; `t2_…` where the Conversions API
 * shows the account's user id instead). Every platform's is checked: a refresh token pasted where the
 * id goes would otherwise be stored in the clear as the connection's account and shown everywhere.
 */
export function accountIdProblem(
  platform: string,
  id: string,
  kind: 'account' | 'customer' = 'account',
): string | undefined {
  if (platform === 'google_ads') {
    return /^\d{10}$/.test(id) ? undefined : 'is not a Google Ads customer id (10 digits, dashes allowed)';
  }
  if (platform === 'microsoft_ads') {
    if (/^\d{1,19}$/.test(id)) return undefined;
    const what = `is not a Microsoft Advertising ${kind} id (digits only, the ${kind === 'account' ? 'aid' : 'cid'}= of the web UI's address)`;
    const numbers = id.split(/[;|]/);
    return kind === 'account' && numbers.every((part) => /^(?=.*[A-Za-z])[A-Za-z0-9]{6,10}$/.test(part))
      ? `${what}: it looks like the account number (letters and digits, like F149ABCD), which the API does not take`
      : what;
  }
  if (platform === 'linkedin_ads') {
    return /^\d{1,19}$/.test(id)
      ? undefined
      : 'is not a LinkedIn ad account id (digits, or urn:li:sponsoredAccount: and digits)';
  }
  if (platform === 'reddit_ads') {
    // Reddit's ids are base 36; the case is not checked, a person may have typed it in capitals.
    return /^[at]2_[a-z0-9]{1,20}$/i.test(id)
      ? undefined
      : 'is not a Reddit Ads ad account id (a2_ and letters and digits, like a2_abc123, as the Ads Manager shows it)';
  }
  return undefined;
}

/**
 * Account ids a person asked for, as the platform writes them; one that is not an id of the platform
 * (see accountIdProblem) is refused here rather than after someone consented.
 */
export function parseAccountIds(platform: PlatformId, ids: string[]): string[] {
  const normalized = ids.map((id) => {
    const account = normalizeAccountId(platform, id);
    const problem = accountIdProblem(platform, account);
    if (problem) throw new InvalidInputError(`${quoted(id)} ${problem}`);
    return account;
  });
  return [...new Set(normalized)];
}

/**
 * Refuses, before anyone consents, a connection name that could only fail once the grant is stored:
 * held by a connection of another platform, or of an account other than those asked for (a name
 * held by this platform's connection may be its reconnection, when the accounts are not named).
 */
export async function assertNameFree(
  db: Db,
  platform: PlatformId,
  name: string,
  accounts?: string[] | 'all',
): Promise<void> {
  const holder = await store.getByName(db, name);
  if (!holder) return;
  const elsewhere =
    holder.platform !== platform || (Array.isArray(accounts) && !accounts.includes(holder.externalAccountId));
  if (elsewhere) throw nameTaken(name);
}

export function nameTaken(name: string): ConflictError {
  return new ConflictError(`a connection named ${quoted(name)} already exists`, {
    hint: 'Pick another name.',
  });
}
