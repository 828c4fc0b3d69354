-- A state is bound to its app as it was at the start: to the client id the platform issues the code
-- to (a callback after the app's client id changed is refused, its code never sent), and to the app's
-- row, which outlives the app as a null, so that a callback after the app was removed is refused as
-- such instead of as a state credvault never made. States pending now take their app's client id.
ALTER TABLE "oauth_states" DROP CONSTRAINT "oauth_states_app_id_oauth_app_credentials_id_fk";
--> statement-breakpoint
ALTER TABLE "oauth_states" ALTER COLUMN "app_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "oauth_states" ADD COLUMN "client_id" text;--> statement-breakpoint
UPDATE "oauth_states" SET "client_id" = a."client_id" FROM "oauth_app_credentials" a WHERE a."id" = "oauth_states"."app_id";--> statement-breakpoint
ALTER TABLE "oauth_states" ALTER COLUMN "client_id" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "oauth_states" ADD CONSTRAINT "oauth_states_app_id_oauth_app_credentials_id_fk" FOREIGN KEY ("app_id") REFERENCES "public"."oauth_app_credentials"("id") ON DELETE set null ON UPDATE no action;
