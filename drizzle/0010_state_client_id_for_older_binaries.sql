-- A state an older credvault started has no client id (it does not know the column): a fleet being
-- upgraded runs both, and an older binary must still be able to start a flow. Such a state is bound
-- to its app's row alone; this version always records the client id.
ALTER TABLE "oauth_states" ALTER COLUMN "client_id" DROP NOT NULL;