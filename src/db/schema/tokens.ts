import { boolean, index, integer, pgTable, text, uuid } from 'drizzle-orm/pg-core';
import { oauthAppCredentials } from './apps.js';
import { ts } from './columns.js';
import { dataKeys } from './data-keys.js';
import { platforms } from './platforms.js';

/**
 * One row per OAuth grant (one consent): its tokens, encrypted under the grant's own data key, and
 * the refresh bookkeeping. Several connections may share a grant (one consent reaching several ad
 * accounts), so that a rotating refresh token is used once, whichever account asked.
 *
 * `version` grows by one on every write of the tokens; a writer only writes if the version it read
 * is still current and it still holds the lease (`lease_owner`, `lease_expires_at`).
 */
export const oauthTokensVault = pgTable(
  'oauth_tokens_vault',
  {
    id: uuid('id').primaryKey(),
    platform: text('platform')
      .notNull()
      .references(() => platforms.id),
    appId: uuid('app_id')
      .notNull()
      .references(() => oauthAppCredentials.id),
    dataKeyId: uuid('data_key_id')
      .notNull()
      .references(() => dataKeys.id),
    accessTokenEnc: text('access_token_enc'),
    refreshTokenEnc: text('refresh_token_enc'),
    tokenType: text('token_type').notNull().default('Bearer'),
    scope: text('scope'),
    accessTokenExpiresAt: ts('access_token_expires_at'),
    refreshTokenExpiresAt: ts('refresh_token_expires_at'),
    /**
     * refresh_token_expires_at is the platform's own end (LinkedIn's 365 days, a Google app in
     * Testing): it holds until the platform gives another. Otherwise it is credvault's estimate from
     * the platform's idle limit, moved on by every refresh.
     */
    refreshTokenExpiryFixed: boolean('refresh_token_expiry_fixed').notNull().default(false),
    lastRefreshedAt: ts('last_refreshed_at'),
    version: integer('version').notNull().default(1),
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: ts('lease_expires_at'),
    /** Set when a refresh was sent and its outcome was never recorded (the process died or lost the lease). */
    refreshInFlightSince: ts('refresh_in_flight_since'),
    cooldownUntil: ts('cooldown_until'),
    lastErrorCode: text('last_error_code'),
    lastErrorMessage: text('last_error_message'),
    lastErrorAt: ts('last_error_at'),
    /**
     * SHA-256 of the token an import stored (never the token): the same file imported again is
     * recognised even after the platform rotated the refresh token, so a stale copy never replaces it.
     */
    importedTokenSha256: text('imported_token_sha256'),
    /**
     * SHA-256 of the refresh token the grant was stored with (a consent's, one `connections add` was
     * given, an import's; never the token), kept when the platform rotates it: a refresh token the
     * vault already holds is recognised, and joins this grant rather than making a second one, without
     * being presented to the platform again (a rotated-away one would be refused, or end the grant).
     * Unsalted, as client tokens' hashes are: refresh tokens are long random strings, so it confirms
     * only a token one already has, and it goes with the row when the grant is destroyed. A grant
     * stored before this column has none until its next refresh, which records the token it presented
     * (services/tokens.ts, refreshWithLease).
     */
    refreshTokenSha256: text('refresh_token_sha256'),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    index('oauth_tokens_vault_access_expiry_idx').on(t.accessTokenExpiresAt),
    index('oauth_tokens_vault_refresh_expiry_idx').on(t.refreshTokenExpiresAt),
    index('oauth_tokens_vault_app_idx').on(t.appId),
    // Destroying a grant's data key checks the foreign key here; re-encryption selects by it.
    index('oauth_tokens_vault_data_key_idx').on(t.dataKeyId),
  ],
);
