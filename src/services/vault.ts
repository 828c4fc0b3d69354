import { chmodSync, mkdirSync, statSync } from 'node:fs';
import type { Config } from '../config.js';
import type { KeySource } from '../crypto/key-source.js';
import { homeKeyPath, resolveKeySource } from '../crypto/key-sources.js';
import { generateMasterKey, LocalKeySource } from '../crypto/local-key.js';
import { homeProblem, openDatabase } from '../db/client.js';
import { migrate } from '../db/migrate.js';
import { InvalidInputError, KeyError } from '../errors.js';
import { createFileAtomically } from '../util/files.js';
import { recordAudit } from './audit.js';
import { ServiceContext } from './context.js';
import { seedPlatforms } from './platforms.js';

export interface InitReport {
  home: string;
  database: string;
  database_kind: string;
  key_source: string;
  key_origin: string;
  key_id: string;
  created_key_file: string | null;
  migrations_applied: string[];
  platforms_changed: string[];
  vault_data_key: string;
}

/** Creates the data folder 0700 (and tightens it if it exists and is ours). */
export function ensureHome(home: string): void {
  const problem = homeProblem(home);
  if (problem) throw problem;
  try {
    mkdirSync(home, { recursive: true, mode: 0o700 });
  } catch (error) {
    let { code } = error as NodeJS.ErrnoException;
    if (code === 'ENOENT') {
      // Node 20's recursive mkdir says ENOENT where the folder's parent exists on a read-only file
      // system: one level, made again, says why (EROFS).
      try {
        mkdirSync(home, { mode: 0o700 });
      } catch (again) {
        code = (again as NodeJS.ErrnoException).code;
      }
      if (code === 'ENOENT') throw error;
    }
    // (A path that is a file, or runs through one, was refused above.)
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw error;
    throw new InvalidInputError(`cannot make the data folder ${home} (${code})`, {
      hint: 'Point CREDVAULT_HOME (or --home) at a folder this user may write.',
    });
  }
  const stat = statSync(home);
  if ((stat.mode & 0o077) !== 0 && stat.uid === process.getuid?.()) chmodSync(home, 0o700);
}

/** Writes a new master key to $CREDVAULT_HOME/master.key (0600, folder 0700); never overwrites one. */
function createHomeKey(home: string): { source: KeySource; path: string } {
  ensureHome(home);
  const path = homeKeyPath(home);
  const key = generateMasterKey();
  createFileAtomically(path, `${key}\n`);
  return { source: LocalKeySource.fromText(key, path), path };
}

/**
 * `credvault init`: data folder, key (when none is configured), migrations, platforms, the vault data
 * key. Every step is idempotent; with an existing vault it checks that the key matches.
 */
export async function initVault(config: Config): Promise<InitReport> {
  ensureHome(config.home);
  let createdKeyFile: string | null = null;
  let source = await resolveKeySource(config.env, config.home);
  const database = await openDatabase({
    url: config.databaseUrl,
    home: config.home,
    lockTimeoutMs: config.lockTimeoutMs,
    create: true,
  });
  // The data folder's own key file, readable by others: made 0600, as the folder is made 0700.
  const homeKey = homeKeyPath(config.home);
  try {
    const stat = statSync(homeKey);
    if ((stat.mode & 0o077) !== 0 && stat.uid === process.getuid?.()) chmodSync(homeKey, 0o600);
  } catch {
    // No key file in the data folder: nothing to tighten.
  }
  let ctx: ServiceContext | null = null;
  try {
    const applied = await migrate(database);
    // Another init may have held the database (or the migration lock) until now and made the key
    // meanwhile: look again.
    source ??= await resolveKeySource(config.env, config.home);
    if (!source) {
      // A new key only for a vault that has none yet: one whose data keys some other key wraps (a
      // second host sharing the database, a master.key moved away) would get a key that opens none.
      const [wrapped] = await database.query<{ kek_id: string; kek_kind: string }>(
        "select kek_id, kek_kind from data_keys order by (status = 'active') desc, created_at desc limit 1",
      );
      // (A concurrent init writes its key file before its first data key: a data key seen here with no
      // key found above may be that init's, whose file is there by now.)
      if (wrapped) {
        source = await resolveKeySource(config.env, config.home);
        if (!source) {
          throw new KeyError('no master key is configured, and this vault already has one', {
            hint:
              wrapped.kek_kind !== 'local'
                ? `Its data keys are wrapped by a KMS key (${wrapped.kek_kind}, key id ${wrapped.kek_id}): set CREDENTIAL_KMS_URI to that key's URI (${wrapped.kek_kind}://…, as given to \`key rotate --to-kms\`).`
                : `Its data keys are wrapped by key id ${wrapped.kek_id}: set CREDENTIAL_MASTER_KEY, CREDENTIAL_MASTER_KEY_FILE or CREDENTIAL_KMS_URI to that key, or put its file back at ${homeKeyPath(config.home)}.`,
          });
        }
      } else {
        try {
          const created = createHomeKey(config.home);
          source = created.source;
          createdKeyFile = created.path;
        } catch (error) {
          // A concurrent init (on PostgreSQL, where nothing else holds them apart) made it first.
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
          source = await resolveKeySource(config.env, config.home);
          if (!source) throw error;
        }
      }
    }
    const context = new ServiceContext(database, config, { name: config.actor }, source);
    ctx = context;
    // The key check comes before any other write: a wrong key leaves a migrated vault untouched.
    const report = await context.transaction(async (tx) => {
      const vaultDataKey = await context.vaultDataKeyId();
      const changed = await seedPlatforms(context);
      await recordAudit(tx, context.actor, {
        action: 'vault.init',
        targetType: 'vault',
        outcome: 'success',
        detail: {
          key_id: source!.keyId,
          key_created: createdKeyFile !== null,
          migrations_applied: applied,
          platforms_changed: changed,
        },
      });
      return { vaultDataKey, changed };
    });
    return {
      home: config.home,
      database: database.description,
      // The embedded database reached through the daemon is still the embedded database.
      database_kind: database.shared ? 'pglite' : database.kind,
      key_source: source!.kind,
      key_origin: source!.origin,
      key_id: source!.keyId,
      created_key_file: createdKeyFile,
      migrations_applied: applied,
      platforms_changed: report.changed,
      vault_data_key: report.vaultDataKey,
    };
  } finally {
    await (ctx ?? database).close();
  }
}
