-- A revoked client whose name a live client took again is renamed NAME.revoked-<first 8 of its id>.
-- credvault builds from before 0005 find a client by its name alone, with no regard for revocation:
-- beside a reused name they could find the revoked row, and their `clients revoke NAME` then said
-- "revoked" while the live client's token kept working. The revoked row stays for the record; the
-- audit log keeps the names as they were. From this version on, `clients create` renames them so.
UPDATE "api_clients" AS "revoked"
SET "name" = "revoked"."name" || '.revoked-' || left("revoked"."id"::text, 8)
WHERE "revoked"."revoked_at" IS NOT NULL
  AND EXISTS (
    SELECT 1 FROM "api_clients" AS "live"
    WHERE "live"."name" = "revoked"."name" AND "live"."revoked_at" IS NULL
  );
