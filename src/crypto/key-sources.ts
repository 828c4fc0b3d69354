import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { KeyError } from '../errors.js';
import { shellQuote } from '../util/shell.js';
import type { KeySource } from './key-source.js';
import { LocalKeySource, masterKeyId, parseMasterKey } from './local-key.js';

/**
 * Finds the key-encryption key in the contract's order: CREDENTIAL_KMS_URI, CREDENTIAL_MASTER_KEY,
 * CREDENTIAL_MASTER_KEY_FILE, $CREDENTIALS_DIRECTORY/credential_master_key, $CREDVAULT_HOME/master.key.
 */

export type KeyLocation =
  | { kind: 'kms'; uri: string }
  | { kind: 'env' }
  | { kind: 'file'; path: string; variable: string }
  | { kind: 'none'; homeKeyPath: string };

/**
 * Every variable that opens the vault (its key, or the KMS credentials that unwrap it) or reaches its
 * database (CREDVAULT_HOME holds the embedded one, and master.key by default): none of them may reach
 * a program credvault runs (`exec`).
 */
export const VAULT_SECRET_VARIABLES = [
  'CREDENTIAL_MASTER_KEY',
  'CREDENTIAL_MASTER_KEY_FILE',
  'CREDENTIAL_KMS_URI',
  'CREDENTIALS_DIRECTORY',
  'VAULT_TOKEN',
  'GOOGLE_OAUTH_ACCESS_TOKEN',
  'DATABASE_URL',
  'CREDVAULT_HOME',
] as const;

/**
 * The variables to keep from a program credvault runs: VAULT_SECRET_VARIABLES, and when the vault's
 * key is in AWS KMS or Cloud KMS, the cloud credentials that unwrap it (left alone otherwise: they
 * are what `exec -- aws …` is often run for). `databaseUrl` is the database the vault is on as
 * configured (Config.databaseUrl: `--database-url`, else DATABASE_URL); a caller without a
 * configuration gets DATABASE_URL's.
 */
export function vaultSecretVariables(
  env: NodeJS.ProcessEnv,
  databaseUrl: string | null | undefined = env.DATABASE_URL,
): string[] {
  const uri = env.CREDENTIAL_KMS_URI?.trim() ?? '';
  return [
    ...VAULT_SECRET_VARIABLES,
    ...(uri.startsWith('aws-kms://')
      ? ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']
      : []),
    ...(uri.startsWith('gcp-kms://') ? ['GOOGLE_APPLICATION_CREDENTIALS'] : []),
    // On PostgreSQL, the password (or password file) the driver takes when the URL has none: whether
    // the URL came from DATABASE_URL or from --database-url.
    ...(databaseUrl?.trim() ? ['PGPASSWORD', 'PGPASSFILE'] : []),
  ];
}

/**
 * Runs `start`, which starts a program that is not credvault's (the browser's launcher), with the
 * vault's secret variables (vaultSecretVariables, for the database `config` names) out of this
 * process's environment, and puts them back after: the program inherits the environment as it is
 * when it starts. (`open` takes no environment of its own.)
 */
export async function withoutVaultSecrets<T>(
  config: Pick<Config, 'databaseUrl'>,
  start: () => Promise<T>,
): Promise<T> {
  const saved = new Map<string, string>();
  for (const name of vaultSecretVariables(process.env, config.databaseUrl)) {
    const value = process.env[name];
    if (value === undefined) continue;
    saved.set(name, value);
    delete process.env[name];
  }
  try {
    return await start();
  } finally {
    for (const [name, value] of saved) process.env[name] = value;
  }
}

export function homeKeyPath(home: string): string {
  return join(home, 'master.key');
}

/**
 * The configured key file when users other than its owner may read it (mode & 077), checked as ssh
 * checks a private key; `everyUser` when anyone may (mode & 007). systemd's credentials are its to
 * guard (a LoadCredential= file reads 0440 where an ACL gives the service's user access): never.
 */
export function exposedKeyFile(
  env: NodeJS.ProcessEnv,
  home: string,
): { path: string; mode: number; everyUser: boolean } | null {
  const location = locateKey(env, home);
  if (location.kind !== 'file' || location.variable === 'CREDENTIALS_DIRECTORY') return null;
  const mode = (statSync(location.path, { throwIfNoEntry: false })?.mode ?? 0) & 0o777;
  if (!(mode & 0o077)) return null;
  return { path: location.path, mode, everyUser: Boolean(mode & 0o007) };
}

/** What to say of an exposed key file (see exposedKeyFile), and the fix. */
export function exposedKeyFileText(file: { path: string; mode: number; everyUser: boolean }) {
  return {
    message: `the master key file ${file.path} is open to ${file.everyUser ? 'every user' : 'its group'} (mode ${file.mode.toString(8).padStart(4, '0')}): whoever reads it can decrypt every secret in the vault`,
    fix: `chmod 600 ${shellQuote(file.path)}`,
  };
}

export function locateKey(env: NodeJS.ProcessEnv, home: string): KeyLocation {
  if (env.CREDENTIAL_KMS_URI?.trim()) return { kind: 'kms', uri: env.CREDENTIAL_KMS_URI.trim() };
  if (env.CREDENTIAL_MASTER_KEY?.trim()) return { kind: 'env' };
  if (env.CREDENTIAL_MASTER_KEY_FILE?.trim()) {
    return {
      kind: 'file',
      path: env.CREDENTIAL_MASTER_KEY_FILE.trim(),
      variable: 'CREDENTIAL_MASTER_KEY_FILE',
    };
  }
  if (env.CREDENTIALS_DIRECTORY?.trim()) {
    const path = join(env.CREDENTIALS_DIRECTORY.trim(), 'credential_master_key');
    if (existsSync(path)) return { kind: 'file', path, variable: 'CREDENTIALS_DIRECTORY' };
  }
  const path = homeKeyPath(home);
  if (existsSync(path)) return { kind: 'file', path, variable: 'CREDVAULT_HOME' };
  return { kind: 'none', homeKeyPath: path };
}

function readKeyFile(path: string, variable: string): string {
  try {
    const stat = statSync(path);
    if (!stat.isFile()) {
      throw new KeyError(
        `the master key file ${path} (from ${variable}) is ${stat.isDirectory() ? 'a folder' : 'not a file'}`,
        {
          hint:
            variable === 'CREDENTIAL_MASTER_KEY_FILE'
              ? 'Set CREDENTIAL_MASTER_KEY_FILE to the key file itself, not the folder that holds it.'
              : 'Put the key in a file there, or point CREDENTIAL_MASTER_KEY_FILE at it.',
        },
      );
    }
    return readFileSync(path, 'utf8');
  } catch (error) {
    if (error instanceof KeyError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new KeyError(
      `cannot read the master key file ${path} (from ${variable}): ${code ?? 'unreadable'}`,
      {
        hint: 'Check the path and its permissions.',
      },
    );
  }
}

/** The configured key source, or null when none is configured (only `init` may then create one). */
export async function resolveKeySource(env: NodeJS.ProcessEnv, home: string): Promise<KeySource | null> {
  const location = locateKey(env, home);
  switch (location.kind) {
    case 'kms': {
      const { openKmsKeySource } = await import('./kms.js');
      return openKmsKeySource(location.uri, env);
    }
    case 'env':
      return LocalKeySource.fromText(env.CREDENTIAL_MASTER_KEY ?? '', 'CREDENTIAL_MASTER_KEY');
    case 'file':
      return LocalKeySource.fromText(readKeyFile(location.path, location.variable), location.path);
    case 'none':
      return null;
  }
}

/**
 * Which key a process is configured with, named without opening it (no KMS call): `kms:URI`, or
 * `local:KEY_ID` for a master key; null when none is configured or it cannot be read. `token get`
 * sends it to a running daemon, which serves the fast path only to a caller with its own key: the
 * caller's wrong or missing key is reported (exit 6) as it would be without a daemon.
 */
export function configuredKeyLabel(env: NodeJS.ProcessEnv, home: string): string | null {
  try {
    const location = locateKey(env, home);
    if (location.kind === 'kms') return `kms:${location.uri}`;
    if (location.kind === 'none') return null;
    const text =
      location.kind === 'env'
        ? (env.CREDENTIAL_MASTER_KEY ?? '')
        : readKeyFile(location.path, location.variable);
    return `local:${masterKeyId(parseMasterKey(text, 'the configuration'))}`;
  } catch {
    return null;
  }
}

/** The label of the key a process holds (configuredKeyLabel's form): `env` names the KMS URI it was given. */
export function keySourceLabel(source: KeySource, env: NodeJS.ProcessEnv): string {
  return source.kind === 'local' ? `local:${source.keyId}` : `kms:${env.CREDENTIAL_KMS_URI?.trim() ?? ''}`;
}

/**
 * No key configured. `wrappedBy` is what wraps the vault's data keys, when known: a vault moved to a
 * KMS is told to set CREDENTIAL_KMS_URI, not to run `init` (which would refuse: the vault has a key).
 */
export function noKeyError(home: string, wrappedBy?: { kekId: string; kekKind: string } | null): KeyError {
  if (wrappedBy && wrappedBy.kekKind !== 'local') {
    return new KeyError('no master key is configured', {
      hint: `This vault's data keys are wrapped by a KMS key (${wrappedBy.kekKind}, key id ${wrappedBy.kekId}): set CREDENTIAL_KMS_URI to that key's URI (${wrappedBy.kekKind}://…, as given to \`key rotate --to-kms\`) for every credvault process.`,
    });
  }
  return new KeyError('no master key is configured', {
    hint: `Set CREDENTIAL_MASTER_KEY, CREDENTIAL_MASTER_KEY_FILE or CREDENTIAL_KMS_URI, or run \`credvault init\` to create ${homeKeyPath(home)}.`,
  });
}
