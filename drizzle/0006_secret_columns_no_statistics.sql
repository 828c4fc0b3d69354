-- ANALYZE keeps a sample of each column's values in pg_statistic (the histogram's bounds): for the
-- columns below, copies of wrapped data keys and ciphertexts that outlive the rows they came from (a
-- revoked grant, a data key re-wrapped by a rotation). These columns are never filtered or sorted on:
-- they need no statistics. Changing a column to its own type drops what was kept (PostgreSQL removes
-- a column's statistics when its type is altered; the same type needs no rewrite of the table).
ALTER TABLE "data_keys" ALTER COLUMN "wrapped_key" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "data_keys" ALTER COLUMN "wrapped_key" SET DATA TYPE text;
--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ALTER COLUMN "access_token_enc" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ALTER COLUMN "access_token_enc" SET DATA TYPE text;
--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ALTER COLUMN "refresh_token_enc" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ALTER COLUMN "refresh_token_enc" SET DATA TYPE text;
--> statement-breakpoint
ALTER TABLE "oauth_app_credentials" ALTER COLUMN "client_secret_enc" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "oauth_app_credentials" ALTER COLUMN "client_secret_enc" SET DATA TYPE text;
--> statement-breakpoint
ALTER TABLE "oauth_app_credentials" ALTER COLUMN "developer_token_enc" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "oauth_app_credentials" ALTER COLUMN "developer_token_enc" SET DATA TYPE text;
--> statement-breakpoint
ALTER TABLE "oauth_states" ALTER COLUMN "code_verifier_enc" SET STATISTICS 0;
--> statement-breakpoint
ALTER TABLE "oauth_states" ALTER COLUMN "code_verifier_enc" SET DATA TYPE text;