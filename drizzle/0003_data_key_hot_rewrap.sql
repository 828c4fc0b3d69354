-- Key rotation rewrites every data key row. Without an index on kek_id and with half of each page
-- left free, those updates can be heap-only (HOT): no new index entries, the new row versions on
-- their own page. The free space applies to pages written from now on (an existing vault gets it as
-- rows are rewritten, or at once with VACUUM FULL data_keys), and a wrapped form that grows (a move
-- to a KMS) may not fit. The kek_id index served only queries that read the whole table anyway.
DROP INDEX "data_keys_kek_idx";--> statement-breakpoint
ALTER TABLE "data_keys" SET (fillfactor = 50);
