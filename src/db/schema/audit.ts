import { bigint, bigserial, index, integer, jsonb, pgTable, text, uuid } from 'drizzle-orm/pg-core';
import { ts } from './columns.js';

/**
 * The audit log, a hash chain: `hash` = SHA-256 over `prev_hash` and the row's own fields, so an
 * edited or deleted row breaks the chain. `audit_head` holds the newest link (and serializes writers).
 */
export const credentialAccessAudit = pgTable(
  'credential_access_audit',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    occurredAt: ts('occurred_at').notNull(),
    actor: text('actor').notNull(),
    action: text('action').notNull(),
    targetType: text('target_type').notNull(),
    targetId: text('target_id'),
    connectionId: uuid('connection_id'),
    clientAddress: text('client_address'),
    userAgent: text('user_agent'),
    outcome: text('outcome').notNull(),
    detail: jsonb('detail').$type<Record<string, unknown>>().notNull().default({}),
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
  },
  (t) => [
    index('credential_access_audit_occurred_idx').on(t.occurredAt),
    index('credential_access_audit_connection_idx').on(t.connectionId, t.occurredAt),
    index('credential_access_audit_actor_idx').on(t.actor, t.occurredAt),
  ],
);

export const auditHead = pgTable('audit_head', {
  id: integer('id').primaryKey(),
  lastId: bigint('last_id', { mode: 'number' }).notNull(),
  lastHash: text('last_hash').notNull(),
  rowCount: bigint('row_count', { mode: 'number' }).notNull(),
});
