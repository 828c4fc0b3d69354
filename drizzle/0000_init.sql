CREATE TABLE "api_clients" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"token_hash" text NOT NULL,
	"role" text NOT NULL,
	"scope" jsonb NOT NULL,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	"last_used_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "oauth_app_credentials" (
	"id" uuid PRIMARY KEY NOT NULL,
	"platform" text NOT NULL,
	"label" text NOT NULL,
	"client_id" text NOT NULL,
	"client_secret_enc" text,
	"developer_token_enc" text,
	"data_key_id" uuid NOT NULL,
	"redirect_uri" text NOT NULL,
	"scopes" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"login_customer_id" text,
	"user_agent" text,
	"api_version" text,
	"authorize_url" text,
	"token_url" text,
	"revoke_url" text,
	"api_base_url" text,
	"enabled" boolean DEFAULT true NOT NULL,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "audit_head" (
	"id" integer PRIMARY KEY NOT NULL,
	"last_id" bigint NOT NULL,
	"last_hash" text NOT NULL,
	"row_count" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "credential_access_audit" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"occurred_at" timestamp with time zone NOT NULL,
	"actor" text NOT NULL,
	"action" text NOT NULL,
	"target_type" text NOT NULL,
	"target_id" text,
	"connection_id" uuid,
	"client_address" text,
	"user_agent" text,
	"outcome" text NOT NULL,
	"detail" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"prev_hash" text NOT NULL,
	"hash" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "ad_account_connections" (
	"id" uuid PRIMARY KEY NOT NULL,
	"platform" text NOT NULL,
	"app_id" uuid NOT NULL,
	"token_id" uuid,
	"external_account_id" text NOT NULL,
	"account_name" text,
	"name" text,
	"status" text DEFAULT 'active' NOT NULL,
	"status_message" text,
	"consecutive_failures" integer DEFAULT 0 NOT NULL,
	"details" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"connected_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "data_keys" (
	"id" uuid PRIMARY KEY NOT NULL,
	"scope" text NOT NULL,
	"wrapped_key" text NOT NULL,
	"kek_id" text NOT NULL,
	"kek_kind" text NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"rewrapped_at" timestamp with time zone,
	"retired_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "oauth_states" (
	"id" uuid PRIMARY KEY NOT NULL,
	"state_hash" text NOT NULL,
	"platform" text NOT NULL,
	"app_id" uuid NOT NULL,
	"redirect_uri" text NOT NULL,
	"code_verifier_enc" text,
	"data_key_id" uuid NOT NULL,
	"options" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"used_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "platforms" (
	"id" text PRIMARY KEY NOT NULL,
	"display_name" text NOT NULL,
	"capabilities" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "oauth_tokens_vault" (
	"id" uuid PRIMARY KEY NOT NULL,
	"platform" text NOT NULL,
	"app_id" uuid NOT NULL,
	"data_key_id" uuid NOT NULL,
	"access_token_enc" text,
	"refresh_token_enc" text,
	"token_type" text DEFAULT 'Bearer' NOT NULL,
	"scope" text,
	"access_token_expires_at" timestamp with time zone,
	"refresh_token_expires_at" timestamp with time zone,
	"last_refreshed_at" timestamp with time zone,
	"version" integer DEFAULT 1 NOT NULL,
	"lease_owner" text,
	"lease_expires_at" timestamp with time zone,
	"refresh_in_flight_since" timestamp with time zone,
	"cooldown_until" timestamp with time zone,
	"last_error_code" text,
	"last_error_message" text,
	"last_error_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "oauth_app_credentials" ADD CONSTRAINT "oauth_app_credentials_platform_platforms_id_fk" FOREIGN KEY ("platform") REFERENCES "public"."platforms"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "oauth_app_credentials" ADD CONSTRAINT "oauth_app_credentials_data_key_id_data_keys_id_fk" FOREIGN KEY ("data_key_id") REFERENCES "public"."data_keys"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ad_account_connections" ADD CONSTRAINT "ad_account_connections_platform_platforms_id_fk" FOREIGN KEY ("platform") REFERENCES "public"."platforms"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ad_account_connections" ADD CONSTRAINT "ad_account_connections_app_id_oauth_app_credentials_id_fk" FOREIGN KEY ("app_id") REFERENCES "public"."oauth_app_credentials"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ad_account_connections" ADD CONSTRAINT "ad_account_connections_token_id_oauth_tokens_vault_id_fk" FOREIGN KEY ("token_id") REFERENCES "public"."oauth_tokens_vault"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "oauth_states" ADD CONSTRAINT "oauth_states_platform_platforms_id_fk" FOREIGN KEY ("platform") REFERENCES "public"."platforms"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "oauth_states" ADD CONSTRAINT "oauth_states_app_id_oauth_app_credentials_id_fk" FOREIGN KEY ("app_id") REFERENCES "public"."oauth_app_credentials"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "oauth_states" ADD CONSTRAINT "oauth_states_data_key_id_data_keys_id_fk" FOREIGN KEY ("data_key_id") REFERENCES "public"."data_keys"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ADD CONSTRAINT "oauth_tokens_vault_platform_platforms_id_fk" FOREIGN KEY ("platform") REFERENCES "public"."platforms"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ADD CONSTRAINT "oauth_tokens_vault_app_id_oauth_app_credentials_id_fk" FOREIGN KEY ("app_id") REFERENCES "public"."oauth_app_credentials"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "oauth_tokens_vault" ADD CONSTRAINT "oauth_tokens_vault_data_key_id_data_keys_id_fk" FOREIGN KEY ("data_key_id") REFERENCES "public"."data_keys"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "api_clients_name_uq" ON "api_clients" USING btree ("name");--> statement-breakpoint
CREATE UNIQUE INDEX "api_clients_token_hash_uq" ON "api_clients" USING btree ("token_hash");--> statement-breakpoint
CREATE UNIQUE INDEX "oauth_app_credentials_platform_label_uq" ON "oauth_app_credentials" USING btree ("platform","label");--> statement-breakpoint
CREATE INDEX "oauth_app_credentials_label_idx" ON "oauth_app_credentials" USING btree ("label");--> statement-breakpoint
CREATE INDEX "credential_access_audit_occurred_idx" ON "credential_access_audit" USING btree ("occurred_at");--> statement-breakpoint
CREATE INDEX "credential_access_audit_connection_idx" ON "credential_access_audit" USING btree ("connection_id","occurred_at");--> statement-breakpoint
CREATE INDEX "credential_access_audit_actor_idx" ON "credential_access_audit" USING btree ("actor","occurred_at");--> statement-breakpoint
CREATE UNIQUE INDEX "ad_account_connections_platform_account_uq" ON "ad_account_connections" USING btree ("platform","external_account_id");--> statement-breakpoint
CREATE UNIQUE INDEX "ad_account_connections_name_uq" ON "ad_account_connections" USING btree ("name");--> statement-breakpoint
CREATE INDEX "ad_account_connections_platform_status_idx" ON "ad_account_connections" USING btree ("platform","status");--> statement-breakpoint
CREATE INDEX "ad_account_connections_status_idx" ON "ad_account_connections" USING btree ("status");--> statement-breakpoint
CREATE INDEX "ad_account_connections_token_idx" ON "ad_account_connections" USING btree ("token_id");--> statement-breakpoint
CREATE INDEX "ad_account_connections_app_idx" ON "ad_account_connections" USING btree ("app_id");--> statement-breakpoint
CREATE INDEX "data_keys_scope_status_idx" ON "data_keys" USING btree ("scope","status");--> statement-breakpoint
CREATE INDEX "data_keys_kek_idx" ON "data_keys" USING btree ("kek_id");--> statement-breakpoint
CREATE UNIQUE INDEX "data_keys_one_active_vault_uq" ON "data_keys" USING btree ("scope") WHERE scope = 'vault' and status = 'active';--> statement-breakpoint
CREATE UNIQUE INDEX "oauth_states_state_hash_uq" ON "oauth_states" USING btree ("state_hash");--> statement-breakpoint
CREATE INDEX "oauth_states_expires_idx" ON "oauth_states" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "oauth_tokens_vault_access_expiry_idx" ON "oauth_tokens_vault" USING btree ("access_token_expires_at");--> statement-breakpoint
CREATE INDEX "oauth_tokens_vault_refresh_expiry_idx" ON "oauth_tokens_vault" USING btree ("refresh_token_expires_at");--> statement-breakpoint
CREATE INDEX "oauth_tokens_vault_app_idx" ON "oauth_tokens_vault" USING btree ("app_id");