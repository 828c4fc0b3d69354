import { index, jsonb, pgTable, text, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { oauthAppCredentials } from './apps.js';
import { ts } from './columns.js';
import { dataKeys } from './data-keys.js';
import { platforms } from './platforms.js';

/**
 * Pending authorizations. Only the SHA-256 of `state` is kept; the PKCE verifier is encrypted.
 * A state lives 10 minutes and is used once (`used_at`). It is bound to its platform and app: to the
 * app's row (null once the app is removed, so that its callback is refused as such rather than as a
 * state nobody made) and to the client id the code will have been issued to.
 */
export const oauthStates = pgTable(
  'oauth_states',
  {
    id: uuid('id').primaryKey(),
    stateHash: text('state_hash').notNull(),
    platform: text('platform')
      .notNull()
      .references(() => platforms.id),
    appId: uuid('app_id').references(() => oauthAppCredentials.id, { onDelete: 'set null' }),
    // Null only in a state an older credvault started (it does not know the column): a fleet being
    // upgraded runs both, and an older one must still be able to start a flow. Such a state is bound
    // to its app's row alone.
    clientId: text('client_id'),
    redirectUri: text('redirect_uri').notNull(),
    codeVerifierEnc: text('code_verifier_enc'),
    dataKeyId: uuid('data_key_id')
      .notNull()
      .references(() => dataKeys.id),
    options: jsonb('options').$type<Record<string, unknown>>().notNull().default({}),
    createdBy: text('created_by').notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
    expiresAt: ts('expires_at').notNull(),
    usedAt: ts('used_at'),
  },
  (t) => [
    uniqueIndex('oauth_states_state_hash_uq').on(t.stateHash),
    index('oauth_states_expires_idx').on(t.expiresAt),
    index('oauth_states_data_key_idx').on(t.dataKeyId),
  ],
);
