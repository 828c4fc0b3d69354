-- The SHA-256 of the refresh token a grant was stored with (connect, connections add, import), kept
-- when the platform rotates the token: `connections add` recognises a refresh token the vault holds
-- already and joins its grant instead of making a second grant of the same consent. Grants stored
-- before this column have none (an import's is in imported_token_sha256, and is matched too).
ALTER TABLE "oauth_tokens_vault" ADD COLUMN "refresh_token_sha256" text;
--> statement-breakpoint
-- As the ciphertexts (0006): ANALYZE would keep samples of the hashes of destroyed grants' tokens in
-- pg_statistic. They are looked up only within one app's grants (its index), so they need none.
ALTER TABLE "oauth_tokens_vault" ALTER COLUMN "refresh_token_sha256" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ALTER COLUMN "imported_token_sha256" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ALTER COLUMN "imported_token_sha256" SET DATA TYPE text;
