import { bigint, pgTable, text } from 'drizzle-orm/pg-core';
import { ts } from './columns.js';

/**
 * Refresh tokens being adopted right now (`connections add`): one row while a process presents a
 * given token to its platform and stores the grant it brings, so that another process given the same
 * token waits for it and joins that grant instead of presenting the token again (where refresh tokens
 * rotate, the second presentation is a reuse, which can end the whole grant). A lease, as a grant's
 * refresh lease is: judged by the database's clock, it lapses on its own when its holder dies.
 *
 * `lock_key` is the key tokenStore.lockTokenSha256 locks (a 64-bit hash of the app and the token's
 * SHA-256), not the token's hash itself. The row goes when the adoption ends.
 */
export const adoptionLeases = pgTable('adoption_leases', {
  lockKey: bigint('lock_key', { mode: 'bigint' }).primaryKey(),
  owner: text('owner').notNull(),
  expiresAt: ts('expires_at').notNull(),
});
