import { sql } from 'drizzle-orm';
import { index, pgTable, text, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { ts } from './columns.js';

/**
 * Data keys (DEKs), each stored wrapped by the key-encryption key. `scope` says what a key protects:
 * `vault` (app secrets and OAuth states; one active at a time) or `grant` (one per stored grant, so
 * revoking a connection can destroy its key).
 */
export const dataKeys = pgTable(
  'data_keys',
  {
    id: uuid('id').primaryKey(),
    scope: text('scope').notNull(),
    wrappedKey: text('wrapped_key').notNull(),
    kekId: text('kek_id').notNull(),
    kekKind: text('kek_kind').notNull(),
    status: text('status').notNull().default('active'),
    createdAt: ts('created_at').notNull().defaultNow(),
    rewrappedAt: ts('rewrapped_at'),
    retiredAt: ts('retired_at'),
  },
  (t) => [
    index('data_keys_scope_status_idx').on(t.scope, t.status),
    // At most one active vault-wide key.
    uniqueIndex('data_keys_one_active_vault_uq')
      .on(t.scope)
      .where(sql`scope = 'vault' and status = 'active'`),
  ],
);
