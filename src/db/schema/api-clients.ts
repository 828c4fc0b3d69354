import { jsonb, pgTable, text, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { ts } from './columns.js';

export interface ClientScope {
  all?: boolean;
  connections?: string[];
  platforms?: string[];
}

/** Clients of the daemon's HTTP endpoint. Only the SHA-256 of a client token is kept. */
export const apiClients = pgTable(
  'api_clients',
  {
    id: uuid('id').primaryKey(),
    name: text('name').notNull(),
    tokenHash: text('token_hash').notNull(),
    role: text('role').notNull(),
    scope: jsonb('scope').$type<ClientScope>().notNull(),
    createdBy: text('created_by').notNull(),
    createdAt: ts('created_at').notNull().defaultNow(),
    expiresAt: ts('expires_at'),
    revokedAt: ts('revoked_at'),
    lastUsedAt: ts('last_used_at'),
  },
  (t) => [
    uniqueIndex('api_clients_name_uq').on(t.name),
    uniqueIndex('api_clients_token_hash_uq').on(t.tokenHash),
  ],
);
