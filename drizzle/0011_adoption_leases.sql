-- Refresh tokens being adopted right now (connections add): a process holds a lease on the app and the
-- token while it presents the token to its platform and stores the grant it brings, so that another
-- process given the same token waits for it and joins that grant rather than presenting the token a
-- second time (a reuse, where refresh tokens rotate, which can end the whole grant). A row, not an
-- advisory lock: it is held across a platform call without holding a connection or a transaction, and
-- it excludes the commands that share the daemon's one session of the embedded database too.
CREATE TABLE "adoption_leases" (
	"lock_key" bigint PRIMARY KEY NOT NULL,
	"owner" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
-- As the grants' token hashes (0008, 0009): the keys are derived from them, and are looked up only by
-- equality through the primary key.
ALTER TABLE "adoption_leases" ALTER COLUMN "lock_key" SET STATISTICS 0;
