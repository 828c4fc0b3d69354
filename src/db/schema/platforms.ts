import { jsonb, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from './columns.js';

/** The four ad platforms and their capabilities, seeded by `credvault platforms seed` (and `init`). */
export const platforms = pgTable('platforms', {
  id: text('id').primaryKey(),
  displayName: text('display_name').notNull(),
  capabilities: jsonb('capabilities').$type<Record<string, unknown>>().notNull(),
  createdAt: ts('created_at').notNull().defaultNow(),
  updatedAt: ts('updated_at').notNull().defaultNow(),
});
