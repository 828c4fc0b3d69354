import { sql } from 'drizzle-orm';
import { boolean, index, jsonb, pgTable, text, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { ts } from './columns.js';
import { dataKeys } from './data-keys.js';
import { platforms } from './platforms.js';

/** OAuth applications registered with a platform. Secrets are envelope-encrypted (`*_enc`). */
export const oauthAppCredentials = pgTable(
  'oauth_app_credentials',
  {
    id: uuid('id').primaryKey(),
    platform: text('platform')
      .notNull()
      .references(() => platforms.id),
    label: text('label').notNull(),
    clientId: text('client_id').notNull(),
    clientSecretEnc: text('client_secret_enc'),
    developerTokenEnc: text('developer_token_enc'),
    dataKeyId: uuid('data_key_id')
      .notNull()
      .references(() => dataKeys.id),
    redirectUri: text('redirect_uri').notNull(),
    scopes: jsonb('scopes').$type<string[]>().notNull().default(sql`'[]'::jsonb`),
    loginCustomerId: text('login_customer_id'),
    userAgent: text('user_agent'),
    apiVersion: text('api_version'),
    authorizeUrl: text('authorize_url'),
    tokenUrl: text('token_url'),
    revokeUrl: text('revoke_url'),
    apiBaseUrl: text('api_base_url'),
    enabled: boolean('enabled').notNull().default(true),
    createdBy: text('created_by').notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('oauth_app_credentials_platform_label_uq').on(t.platform, t.label),
    index('oauth_app_credentials_label_idx').on(t.label),
    // Destroying or re-keying a data key finds its rows (and checks the foreign key) by this.
    index('oauth_app_credentials_data_key_idx').on(t.dataKeyId),
  ],
);
