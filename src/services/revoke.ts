import { databaseWhere } from '../db/client.js';
import { asReported } from '../db/errors.js';
import { shred } from '../db/shred.js';
import * as appStore from '../db/store/apps.js';
import type { ConnectionRow, ConnectionView } from '../db/store/connections.js';
import * as connectionStore from '../db/store/connections.js';
import * as tokenStore from '../db/store/tokens.js';
import { CredvaultError } from '../errors.js';
import type { PlatformId } from '../providers/catalog.js';
import { ProviderError } from '../providers/errors.js';
import { providerFor } from '../providers/registry.js';
import { sleep } from '../util/backoff.js';
import { connectionRef } from '../views.js';
import { type AuditEntry, recordAudit } from './audit.js';
import { REVOCATION_REQUESTED, resolveConnection } from './connections.js';
import type { ServiceContext } from './context.js';
import { destroyGrant, openToken } from './grants.js';
import { errorForKind, retryDelayMs, withDeadline } from './platform-calls.js';
import { providerApp } from './provider-app.js';

export interface RevokeReport {
  /** Every connection that shared the grant: revoking one consent revokes them all. */
  connections: ConnectionView[];
  /** `revoked` at the platform, `no_endpoint` (Microsoft), `failed` (the platform could not be told), `already` revoked. */
  platform: 'revoked' | 'no_endpoint' | 'failed' | 'already';
  message: string | null;
  /** Where a person removes the app's access by hand when the platform was not told. */
  consent_page: string | null;
  /** What could not be done after the revocation committed (see db/shred.ts), for the operator. */
  warnings: string[];
}

/** Tries at the platform: a timeout, 5xx or 429 is tried again, at most this often in all. */
const REVOKE_ATTEMPTS = 3;
/** The longest wait between tries (a 429's Retry-After beyond it ends the tries). */
const REVOKE_MAX_WAIT_MS = 10_000;

/**
 * Revokes at the platform where it has an endpoint, then destroys the grant's secrets and its data key:
 * nothing readable stays behind, in the tables or in the database's files (db/shred.ts; `shred:
 * false` leaves that to a caller revoking several). A platform that refused is reported with the page where a person
 * removes the access. A platform that could not be reached (after a few tries) keeps the tokens, the
 * means to tell it later, but the connection is no longer served (needs_reauth), unless `force`
 * destroys them anyway (an app being removed).
 */
export async function revokeConnection(
  ctx: ServiceContext,
  ref: string,
  options: { force?: boolean; shred?: boolean } = {},
): Promise<RevokeReport> {
  const connection = await resolveConnection(ctx.db, ref);
  const grantId = connection.tokenId;
  if (!grantId) return alreadyRevoked(ctx, connection.id);
  // Revocations of one grant in this process (a daemon asked twice at once) take turns: the second
  // one, looking again once the first is done, finds it revoked and says so, as a repeat does, without
  // telling the platform again with a grant that is gone.
  const busy = revoking.get(grantId);
  if (busy) {
    await busy;
    return revokeConnection(ctx, ref, options);
  }
  const work = revokeGrant(ctx, connection, grantId, options);
  const settled = work.then(
    () => {},
    () => {},
  );
  revoking.set(grantId, settled);
  try {
    return await work;
  } finally {
    if (revoking.get(grantId) === settled) revoking.delete(grantId);
  }
}

/** The revocations of grants in flight in this process, by grant id (see revokeConnection). */
const revoking = new Map<string, Promise<void>>();

/** What a revocation of a connection whose grant is already gone answers: nothing left to do. */
async function alreadyRevoked(ctx: ServiceContext, connectionId: string): Promise<RevokeReport> {
  return {
    connections: [(await connectionStore.view(ctx.db, connectionId))!],
    platform: 'already',
    message: 'this connection was already revoked',
    consent_page: null,
    warnings: [],
  };
}

async function revokeGrant(
  ctx: ServiceContext,
  connection: ConnectionRow,
  grantId: string,
  options: { force?: boolean; shred?: boolean },
): Promise<RevokeReport> {
  const platform = connection.platform as PlatformId;
  const provider = await providerFor(platform);
  const grant = await tokenStore.get(ctx.db, grantId);
  // Revoked (by another process) since the connection was read: the answer a repeat gets.
  if (!grant) return alreadyRevoked(ctx, connection.id);
  let outcome: RevokeReport['platform'] = 'no_endpoint';
  let message: string | null = null;
  if (provider.capabilities.revocation_endpoint) {
    const app = await appStore.getById(ctx.db, grant.appId);
    try {
      if (!app) throw new ProviderError('client', 'the app of this connection was removed');
      const papp = await providerApp(ctx, ctx.db, { ...app, enabled: true }, { secrets: true });
      const [refreshToken, accessToken] = await Promise.all([
        openToken(ctx, grant, 'refresh'),
        openToken(ctx, grant, 'access'),
      ]);
      for (let attempt = 1; ; attempt++) {
        try {
          outcome = await withDeadline(ctx, (signal) =>
            provider.revoke(papp, { refreshToken, accessToken }, { signal }),
          );
          break;
        } catch (error) {
          if (!(error instanceof ProviderError) || !error.retryable || attempt >= REVOKE_ATTEMPTS)
            throw error;
          const wait = retryDelayMs(error, attempt);
          if (wait > REVOKE_MAX_WAIT_MS) throw error;
          await sleep(wait);
        }
      }
    } catch (error) {
      if (!(error instanceof ProviderError)) throw error;
      if (error.retryable && !options.force) {
        // Kept for a later try at the platform, but no longer served or refreshed: whoever revokes
        // means the connection to stop working now. On record, with the decryptions it took.
        const held = grantId;
        await ctx.transaction(async (tx) => {
          // Locked first, as the final transaction below does: an account joining meanwhile is read here.
          await tokenStore.lock(tx, held);
          const current = await connectionStore.listByGrant(tx, held);
          await connectionStore.updateByGrant(tx, held, {
            status: 'needs_reauth',
            statusMessage: `${REVOCATION_REQUESTED}; ${provider.info.displayName} could not be told yet: run \`credvault connections revoke\` again`,
          });
          await recordAudit(
            tx,
            ctx.actor,
            current.map((c) => ({
              action: 'connection.revoke',
              targetType: 'connection',
              targetId: c.id,
              connectionId: c.id,
              outcome: 'failure' as const,
              detail: {
                platform,
                account: c.externalAccountId,
                at_platform: 'unreachable',
                requested_for: connection.id,
              },
            })),
          );
        });
        throw errorForKind(
          error.kind,
          `${provider.info.displayName} could not be told to revoke ${connectionRef(connection)} (${error.message}); its tokens are kept here to try again, and no longer served`,
          {
            retryAfter: error.retryAfter,
            cause: error,
            hint: `The tokens are kept so that the platform can still be told: run \`credvault connections revoke ${connectionRef(connection)}\` again later, or give --force to destroy them here now and remove the access at ${provider.consentPage}.`,
          },
        );
      }
      outcome = 'failed';
      message = error.message;
    }
  }
  if (outcome === 'no_endpoint') {
    message = `${provider.info.displayName} has no revocation endpoint; the refresh token was destroyed here`;
  }
  const revoked = await ctx
    .transaction(async (tx) => {
      // The grant is locked before its connections are read: an account joining it (joinGrantIn locks
      // it too) either committed first, and is read and revoked with the others, or waits and then
      // finds the grant gone. Read without the lock, a join committing between that read and the
      // grant's DELETE would be left active with no tokens (the foreign key's SET NULL) and no record.
      // Gone once locked: another process revoked it meanwhile, and this revocation has nothing left
      // to do (null).
      if (!(await tokenStore.lock(tx, grantId))) return null;
      // Who shares the grant is read again here: a connection reconnected to a new grant meanwhile
      // keeps its new tokens and is not revoked.
      const current = await connectionStore.listByGrant(tx, grantId);
      const entries: AuditEntry[] = current.map((c) => ({
        action: 'connection.revoke',
        targetType: 'connection',
        targetId: c.id,
        connectionId: c.id,
        outcome: 'success',
        detail: {
          platform,
          account: c.externalAccountId,
          at_platform: outcome,
          requested_for: connection.id,
        },
      }));
      await connectionStore.updateByGrant(tx, grantId, {
        status: 'revoked',
        statusMessage: outcome === 'revoked' ? 'revoked' : `revoked here; ${message}`,
      });
      await destroyGrant(tx, grantId);
      await recordAudit(tx, ctx.actor, entries);
      return current.map((c) => c.id);
    })
    .catch((failure: unknown) => {
      // The platform has ended the grant; only forgetting it here failed (the database went away):
      // said, so that whoever reads the error knows what is already done and what is left.
      const error = outcome === 'revoked' ? asReported(failure, databaseWhere(ctx.config)) : null;
      if (!error) throw failure;
      throw new CredvaultError(
        error.code,
        `${error.message.replace(/\.$/, '')}; ${provider.info.displayName} has already revoked the grant of ${connectionRef(connection)}, which is not yet destroyed here`,
        {
          hint: `Run \`credvault connections revoke ${connectionRef(connection)}\` again once the database answers: it destroys the tokens here (the platform has nothing left to revoke).`,
          cause: error,
        },
      );
    });
  if (!revoked) return alreadyRevoked(ctx, connection.id);
  (await ctx.keyring()).forget(grant.dataKeyId);
  const leftover =
    options.shred === false ? null : await shred(ctx.database, ['oauth_tokens_vault', 'data_keys']);
  return {
    connections: await connectionStore.listViews(ctx.db, { ids: revoked }),
    platform: outcome,
    message,
    consent_page: outcome === 'revoked' ? null : provider.consentPage,
    warnings: leftover ? [leftover] : [],
  };
}
