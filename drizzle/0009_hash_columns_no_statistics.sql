-- As the ciphertexts (0006) and the grants' token hashes (0008): ANALYZE would keep samples of the
-- hashes of OAuth states and of the daemon's client tokens in pg_statistic, outliving the rows they
-- came from (a used state purged, a client revoked). Both are looked up only by equality through
-- their unique index, which needs no statistics. Changing a column to its own type drops what was
-- kept already.
ALTER TABLE "oauth_states" ALTER COLUMN "state_hash" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "oauth_states" ALTER COLUMN "state_hash" SET DATA TYPE text;
--> statement-breakpoint
ALTER TABLE "api_clients" ALTER COLUMN "token_hash" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "api_clients" ALTER COLUMN "token_hash" SET DATA TYPE text;
