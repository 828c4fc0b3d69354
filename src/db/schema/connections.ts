import { index, integer, jsonb, pgTable, text, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { oauthAppCredentials } from './apps.js';
import { ts } from './columns.js';
import { platforms } from './platforms.js';
import { oauthTokensVault } from './tokens.js';

/** One ad account reached through one app. Its tokens live in `oauth_tokens_vault` (`token_id`). */
export const adAccountConnections = pgTable(
  'ad_account_connections',
  {
    id: uuid('id').primaryKey(),
    platform: text('platform')
      .notNull()
      .references(() => platforms.id),
    appId: uuid('app_id')
      .notNull()
      .references(() => oauthAppCredentials.id),
    tokenId: uuid('token_id').references(() => oauthTokensVault.id, { onDelete: 'set null' }),
    externalAccountId: text('external_account_id').notNull(),
    accountName: text('account_name'),
    name: text('name'),
    /** active | needs_reauth | error | revoked */
    status: text('status').notNull().default('active'),
    statusMessage: text('status_message'),
    consecutiveFailures: integer('consecutive_failures').notNull().default(0),
    /** Platform extras of the account: Microsoft's customer id, Google's login customer id, currency… */
    details: jsonb('details').$type<Record<string, string>>().notNull().default({}),
    connectedBy: text('connected_by').notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('ad_account_connections_platform_account_uq').on(t.platform, t.externalAccountId),
    uniqueIndex('ad_account_connections_name_uq').on(t.name),
    index('ad_account_connections_platform_status_idx').on(t.platform, t.status),
    index('ad_account_connections_status_idx').on(t.status),
    index('ad_account_connections_token_idx').on(t.tokenId),
    index('ad_account_connections_app_idx').on(t.appId),
  ],
);
