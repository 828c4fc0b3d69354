import { sql } from 'drizzle-orm';
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
    // A name belongs to one live client; a revoked client's name can be given to its successor (the
    // revoked row stays, for `clients list` and the audit log's sake).
    uniqueIndex('api_clients_name_live_uq').on(t.name).where(sql`revoked_at is null`),
    uniqueIndex('api_clients_token_hash_uq').on(t.tokenHash),
  ],
);
