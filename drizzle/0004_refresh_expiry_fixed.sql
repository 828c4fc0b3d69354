-- Whether refresh_token_expires_at is the platform's own end (kept until the platform gives another)
-- or credvault's estimate from an idle limit (moved on by every refresh). LinkedIn's ends were always
-- its own; a Google app in Testing's 7-day end cannot be told from an estimate in rows written before
-- this column, and is marked at its next consent.
ALTER TABLE "oauth_tokens_vault" ADD COLUMN "refresh_token_expiry_fixed" boolean DEFAULT false NOT NULL;--> statement-breakpoint
UPDATE "oauth_tokens_vault" SET "refresh_token_expiry_fixed" = true WHERE "platform" = 'linkedin_ads' AND "refresh_token_expires_at" IS NOT NULL;
