-- A revoked client's name can be given to a new client (revoke, then create again under the same name is
-- how a CI job's token is replaced); the revoked row stays for the record.
DROP INDEX "api_clients_name_uq";--> statement-breakpoint
CREATE UNIQUE INDEX "api_clients_name_live_uq" ON "api_clients" USING btree ("name") WHERE revoked_at is null;