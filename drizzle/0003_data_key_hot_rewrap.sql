-- Key rotation rewrites every data key row. Without an index on kek_id and with half of each page
-- left free, those updates are heap-only (HOT): no new index entries, and the new row versions stay
-- on their page. The kek_id index served only queries that read the whole table anyway.
DROP INDEX "data_keys_kek_idx";--> statement-breakpoint
ALTER TABLE "data_keys" SET (fillfactor = 50);
