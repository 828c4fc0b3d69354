CREATE INDEX "oauth_app_credentials_data_key_idx" ON "oauth_app_credentials" USING btree ("data_key_id");--> statement-breakpoint
CREATE INDEX "oauth_states_data_key_idx" ON "oauth_states" USING btree ("data_key_id");--> statement-breakpoint
CREATE INDEX "oauth_tokens_vault_data_key_idx" ON "oauth_tokens_vault" USING btree ("data_key_id");