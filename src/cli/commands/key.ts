import {
  chmodSync,
  existsSync,
  linkSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import type { KeySource } from '../../crypto/key-source.js';
import {
  exposedKeyFile,
  exposedKeyFileText,
  homeKeyPath,
  locateKey,
  noKeyError,
  resolveKeySource,
} from '../../crypto/key-sources.js';
import { generateMasterKey, LocalKeySource } from '../../crypto/local-key.js';
import { databaseWhere } from '../../db/client.js';
import { asReported } from '../../db/errors.js';
import { shred } from '../../db/shred.js';
import { lastRotationFrom } from '../../db/store/audit.js';
import { CredvaultError, InvalidInputError, KeyError, quoted } from '../../errors.js';
import {
  type DataKeyStatus,
  type KeyStatus,
  keyMismatch,
  keyStatus,
  newMasterKey,
} from '../../services/keys.js';
import { reencryptionPending, reencryptSecrets, rewrapDataKeys } from '../../services/rotation.js';
import { ensureHome } from '../../services/vault.js';
import { createFileAtomically, writeNewFileFlushed } from '../../util/files.js';
import { withContext } from '../context.js';
import { readFileOrStdin } from '../input.js';
import type { Runtime } from '../run.js';

/** Prints a new master key alone on stdout, like Fernet.generate_key(). */
export async function generate(rt: Runtime): Promise<void> {
  if (rt.out.json) {
    throw new InvalidInputError(
      'key generate prints the key alone on stdout; it never puts a secret into --json output',
      {
        hint: 'Run it without --json (for example: credvault key generate > master.key).',
      },
    );
  }
  const { key, keyId } = newMasterKey();
  rt.out.raw(key);
  rt.out.note(`key id ${keyId}. Store it in a secret manager or a 0600 file (CREDENTIAL_MASTER_KEY_FILE).`);
}

export async function status(rt: Runtime): Promise<void> {
  const report = await withContext(rt, (ctx) => keyStatus(ctx));
  const { out } = rt;
  // The command an operator runs to check the key says it as doctor does (doctor: exit 6 for every user).
  const exposed = exposedKeyFile(rt.config.env, rt.config.home);
  if (exposed) {
    const { message, fix } = exposedKeyFileText(exposed);
    out.warn(`${message}. Run: ${fix}`);
  }
  if (out.json) {
    out.writeJson(report);
    return refuseUnopened(rt, report);
  }
  const notChecked = report.data_keys.filter((k) => k.matches_key === null).length;
  out.item(report, [
    ['key source', report.key_source],
    ['from', report.key_origin],
    ['key id', report.key_id],
    [
      'opens this vault',
      report.key_source === 'none' && report.data_keys.length
        ? 'NO (no key configured)'
        : report.key_matches_vault === null
          ? 'no data keys yet'
          : `${report.key_matches_vault ? 'yes' : 'NO'}${
              notChecked
                ? ` (${report.data_keys_opened} data keys opened, ${notChecked} not checked: a KMS call each)`
                : ''
            }`,
    ],
    ['secrets', report.secrets],
  ]);
  const opens = (k: DataKeyStatus) => (k.matches_key === null ? 'not checked' : k.matches_key ? 'yes' : 'NO');
  // Every grant has a data key of its own: past a screenful they are counted by status and wrapping
  // key instead of listed one by one (--json lists them all).
  const grantKeys = report.data_keys.filter((k) => k.scope === 'grant');
  const summarize = grantKeys.length > LISTED_GRANT_KEYS;
  const listed = summarize ? report.data_keys.filter((k) => k.scope !== 'grant') : report.data_keys;
  if (listed.length) {
    out.raw('');
    out.list(listed, (k) => k, [
      { header: 'DATA KEY', value: (k) => k.id },
      { header: 'SCOPE', value: (k) => k.scope },
      { header: 'STATUS', value: (k) => k.status },
      {
        header: 'WRAPPED BY',
        value: (k) => `${k.kek_kind} ${k.kek_id}`,
        style: (k, text, c) => (k.matches_key === false ? c.red(text) : text),
      },
      { header: 'OPENS', value: opens },
      { header: 'SECRETS', value: (k) => k.secrets },
      { header: 'CREATED', value: (k) => k.created_at },
    ]);
  }
  if (summarize) {
    const groups = new Map<string, { keys: number; secrets: number; sample: DataKeyStatus }>();
    for (const k of grantKeys) {
      const name = `${k.status}\0${k.kek_kind}\0${k.kek_id}\0${k.matches_key}`;
      const group = groups.get(name) ?? { keys: 0, secrets: 0, sample: k };
      group.keys += 1;
      group.secrets += k.secrets;
      groups.set(name, group);
    }
    out.raw('');
    out.list([...groups.values()], (g) => g, [
      { header: 'GRANT DATA KEYS', value: (g) => g.keys },
      { header: 'STATUS', value: (g) => g.sample.status },
      {
        header: 'WRAPPED BY',
        value: (g) => `${g.sample.kek_kind} ${g.sample.kek_id}`,
        style: (g, text, c) => (g.sample.matches_key === false ? c.red(text) : text),
      },
      { header: 'OPENS', value: (g) => opens(g.sample) },
      { header: 'SECRETS', value: (g) => g.secrets },
    ]);
  }
  refuseUnopened(rt, report);
}

/**
 * After the report, either way: a key that does not open the vault is exit 6, as for any command that
 * needs it (a script's "is my key right?").
 */
function refuseUnopened(rt: Runtime, report: KeyStatus): void {
  const mismatch = keyMismatch(report);
  if (mismatch) throw mismatch;
  if (report.key_source === 'none' && report.data_keys.length) {
    const wrapped = report.data_keys.find((k) => k.status === 'active') ?? report.data_keys[0]!;
    throw noKeyError(rt.config.home, { kekId: wrapped.kek_id, kekKind: wrapped.kek_kind });
  }
}

/**
 * A re-encryption that stopped after the rotation committed: the error that stopped it, with what
 * already happened and how to go on instead of its own hint (a KMS's "nothing was written" is not
 * true of the whole command, and running it again as it was would look for the retired key).
 */
function unfinishedReencryption(
  failure: unknown,
  where: string,
  current: KeySource,
  next: KeySource,
  rewrapped: number,
  nextStep: string | null,
  installed: string | null,
  elsewhere: string | null,
): unknown {
  // A driver's error (the connection lost part-way) as the command reports it, so that it too says
  // what already happened; only a bug's error goes on as it is.
  const error = asReported(failure, where);
  if (!error) return failure;
  const done =
    next.keyId === current.keyId && next.kind === current.kind
      ? 'The re-encryption stopped part-way'
      : `The rotation itself is done: ${rewrapped} data key${rewrapped === 1 ? ' is' : 's are'} now under key id ${next.keyId}${installed ? ` (in ${installed})` : ''}, and the re-encryption stopped part-way`;
  const own = error.hint
    ? ` (${error.hint.replace(/;? nothing was written\.?$/, '').replace(/\.$/, '')})`
    : '';
  return new CredvaultError(error.code, error.message, {
    cause: error,
    hint: `${done}; what it finished is kept${own}. ${elsewhere ?? `${nextStep ? `${nextStep} Then run` : 'Run'} \`credvault key rotate --reencrypt\` to finish: it goes on where it stopped.`}`,
  });
}

/** The key id of the key in a master.key.new an earlier `key rotate` made; null when none can be read there. */
function keyIdIn(path: string): string | null {
  if (!existsSync(path)) return null;
  try {
    return LocalKeySource.fromText(readFileSync(path, 'utf8'), path).keyId;
  } catch {
    return null;
  }
}

/** Whether `keyId` (a local key's) is the key configured now. */
const isCurrent = (keyId: string, current: KeySource) => current.kind === 'local' && current.keyId === keyId;

/** Grant data keys listed one by one in `key status`; more are counted by group. */
const LISTED_GRANT_KEYS = 20;

interface RotateFlags {
  newKeyFile?: string;
  toKms?: string;
  reencrypt?: boolean;
}

/**
 * A progress bar on a terminal's stderr; elsewhere (a log, a CI job) a line at every tenth, so a long
 * re-encryption shows it is moving.
 */
function progressBar(rt: Runtime) {
  const tty = Boolean(rt.io.stderr.isTTY) && !rt.out.json;
  let last = 0;
  let tenth = -1;
  return {
    update(done: number, total: number, waiting?: number) {
      if (waiting) {
        rt.out.note(
          `${tty ? '\n' : ''}waiting for ${waiting} grant${waiting === 1 ? '' : 's'} being refreshed right now`,
        );
      }
      if (!tty) {
        const now = total ? Math.floor((done / total) * 10) : 10;
        if (now > tenth && !rt.out.json) {
          tenth = now;
          rt.io.stderr.write(`re-encrypted ${done}/${total} secrets\n`);
        }
        return;
      }
      if (Date.now() - last < 100 && done < total) return;
      last = Date.now();
      const width = 30;
      const filled = total ? Math.round((done / total) * width) : width;
      rt.io.stderr.write(
        `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} secrets re-encrypted`,
      );
    },
    end() {
      if (tty) rt.io.stderr.write('\n');
    },
  };
}

export async function rotate(rt: Runtime, flags: RotateFlags): Promise<void> {
  if (flags.newKeyFile && flags.toKms)
    throw new InvalidInputError('give --new-key-file or --to-kms, not both');
  const { env, home } = rt.config;
  const current = await resolveKeySource(env, home);
  if (!current) {
    // No vault there at all is what to say first (exit 8, as every other command does before init),
    // not the missing key that init would also make.
    await withContext(rt, async () => undefined);
    throw noKeyError(home);
  }
  const location = locateKey(env, home);
  const homeKey = homeKeyPath(home);
  const keptInHome = location.kind === 'file' && location.path === homeKey;

  let next: KeySource;
  let newKeyText: string | null = null;
  // A re-encryption resumed under the configured key while master.key.new holds another one: said in
  // the hint when the resumed run stops.
  let elsewhere: string | null = null;
  let generatedFile: string | null = null;
  // master.key.new given as --new-key-file (by whatever path): renamed into place, not copied.
  let givenHomeNew: string | null = null;
  if (flags.toKms) {
    const { KmsUriError, openKmsKeySource } = await import('../../crypto/kms.js');
    try {
      next = await openKmsKeySource(flags.toKms, env);
    } catch (error) {
      // The URI is this command's input here, not the configured key.
      if (!(error instanceof KmsUriError)) throw error;
      throw new InvalidInputError(`--to-kms ${quoted(error.uri)} ${error.problem}`, { hint: error.hint });
    }
  } else if (flags.newKeyFile) {
    newKeyText = (await readFileOrStdin(rt, flags.newKeyFile, '--new-key-file')).trim();
    try {
      next = LocalKeySource.fromText(
        newKeyText,
        flags.newKeyFile === '-' ? 'standard input' : flags.newKeyFile,
      );
    } catch (error) {
      // The file is this command's input, not the configured key (as --to-kms): bad input, exit 2.
      if (!(error instanceof KeyError)) throw error;
      throw new InvalidInputError(`--new-key-file: ${error.message}`, {
        hint: 'Give a key made by `credvault key generate` (or none, to have one made).',
      });
    }
    // master.key.new becomes master.key: 0600 whatever mode it was written with, before the vault
    // answers to it (a file this user may not change stops the rotation here, not half-way). Known by
    // the file itself, not its name: `cd ~/.credvault && credvault key rotate --new-key-file
    // master.key.new` (or a path through a link) names it too, and must not leave a copy behind.
    if (flags.newKeyFile !== '-' && sameFile(flags.newKeyFile, `${homeKey}.new`)) {
      givenHomeNew = `${homeKey}.new`;
      chmodSync(givenHomeNew, 0o600);
    }
  } else if (current.kind !== 'local') {
    // A KMS key is rotated in the KMS; here that means renewing the wrapped keys (Vault's rewrap).
    next = current;
    if (!current.rewrap && !flags.reencrypt) {
      throw new InvalidInputError(
        `the vault's key is in ${current.kind === 'aws-kms' ? 'AWS KMS' : 'Cloud KMS'}, which rotates its own key material (old versions keep decrypting)`,
        {
          hint: 'Turn on automatic rotation for the key in the KMS. To move to another key, give --to-kms URI or --new-key-file FILE; --reencrypt renews every data key.',
        },
      );
    }
  } else if (flags.reencrypt && (await withContext(rt, (ctx) => reencryptionPending(ctx.database.db)))) {
    // An earlier --reencrypt stopped part-way (its hint says to run this again): it goes on under the
    // key configured now, which it checks opens every data key; no third key is made.
    next = current;
    rt.out.note(
      `resuming the re-encryption that stopped part-way, under the configured key (key id ${current.keyId})`,
    );
    const leftover = keyIdIn(`${homeKey}.new`);
    if (leftover && !isCurrent(leftover, current)) {
      elsewhere = `${homeKey}.new holds key id ${leftover}, made by an earlier \`key rotate\`: if the data keys are wrapped by it (WRAPPED BY in \`credvault key status\`), run \`credvault key rotate --reencrypt --new-key-file ${homeKey}.new\` to finish (it goes on where it stopped), or configure that key and run \`credvault key rotate --reencrypt\`.`;
    }
  } else {
    generatedFile = `${homeKey}.new`;
    const leftover = keyIdIn(generatedFile);
    if (leftover && isCurrent(leftover, current)) {
      // The key in it is the one configured now: the rotation that made it finished (the key was
      // configured by hand, from CREDENTIAL_MASTER_KEY or a key file). Running with it would be
      // "the new key is the key already in use".
      const readFromIt = location.kind === 'file' && location.path === generatedFile;
      throw new InvalidInputError(
        `${generatedFile} holds the key in use (key id ${current.keyId}): the rotation that made it finished`,
        {
          hint: readFromIt
            ? `credvault reads its key from that very file (${location.kind === 'file' ? location.variable : ''}): move it elsewhere and point the variable there, then run \`credvault key rotate\` again.`
            : `Delete ${generatedFile} once the key is kept where credvault reads it (and backed up), then run \`credvault key rotate\` again.`,
        },
      );
    }
    // A key the vault was rotated away from (its key.rotate record): retired, not an unfinished rotation's.
    const retiredOn = leftover ? await withContext(rt, (ctx) => lastRotationFrom(ctx.db, leftover)) : null;
    if (retiredOn) {
      // Finishing "that rotation" would move the vault back to a key it was rotated away from.
      throw new InvalidInputError(
        `${generatedFile} holds key id ${leftover}, which the vault was rotated away from on ${retiredOn.toISOString()}: a retired key, not an unfinished rotation`,
        {
          hint: `Move ${generatedFile} away (to your backups of retired keys, if you keep them; never configure it again), then run \`credvault key rotate\` again.`,
        },
      );
    }
    if (existsSync(generatedFile)) {
      throw new InvalidInputError(
        `${generatedFile} exists: an earlier rotation made it and may not have finished`,
        {
          hint: `Finish that rotation with \`credvault key rotate --new-key-file ${generatedFile}\`, or move the file away.`,
        },
      );
    }
    newKeyText = generateMasterKey();
    // Written to generatedFile once the database has answered (below): a vault that cannot be
    // reached never gets a key file announced and then removed.
    next = LocalKeySource.fromText(newKeyText, generatedFile);
  }

  const sameKey = next.keyId === current.keyId && next.kind === current.kind;
  if (sameKey && !flags.reencrypt && !next.rewrap) {
    throw new InvalidInputError('the new key is the key already in use', {
      hint: 'Give another key, or none to have one made.',
    });
  }
  let retiredFile: string | null = null;
  let installed: string | null = null;
  let generatedWritten = false;
  let rewrapStarted = false;
  let rewrapDone = false;
  // Nothing uses the key made for this run when the command fails before the re-wrap starts (the
  // database unreachable, say) or with a key error, raised inside its transaction before it commits;
  // leaving the file would hold up the next rotation. Any other failure of the re-wrap may have
  // come after its commit: the file stays, and the message says to run again with it. After the
  // re-wrap the vault answers to that key: the file is never removed then.
  const dropGeneratedKey = (error: unknown) => {
    if (generatedFile && generatedWritten && !rewrapDone && (!rewrapStarted || error instanceof KeyError)) {
      try {
        rmSync(generatedFile, { force: true });
      } catch {
        // The error to report is the one that stopped the rotation; a key file left behind only
        // asks for --new-key-file.
      }
    }
    throw error;
  };
  // SIGHUP makes a daemon read its key file again; an environment variable, or systemd's copy of a
  // credential, changes only with a new process.
  const reloadable =
    current.kind === 'local' && location.kind === 'file' && location.variable !== 'CREDENTIALS_DIRECTORY';
  // Where the old key was read from, as what to change there (the data folder's master.key is
  // replaced by the rotation itself).
  const oldKeyPlace =
    location.kind === 'env'
      ? 'CREDENTIAL_MASTER_KEY'
      : location.kind === 'file' && location.variable === 'CREDENTIALS_DIRECTORY'
        ? `the systemd credential credential_master_key (${location.path})`
        : location.kind === 'file'
          ? `the contents of ${location.path} (${location.variable})`
          : 'the old key';
  // Nothing to configure when the configured key is already the new one (a resumed re-encryption,
  // a Vault rewrap): telling to "remove the old one" then would be removing the only key.
  const nextStepAfter = () =>
    installed !== null || sameKey
      ? null
      : next.kind === 'local'
        ? `Configure the new key (key id ${next.keyId}) where credvault reads it${generatedFile ? `: it is in ${generatedFile}` : ''}, and ${current.kind !== 'local' ? 'unset CREDENTIAL_KMS_URI' : `replace ${oldKeyPlace} with it`}; a running daemon then needs ${reloadable ? 'SIGHUP' : 'a restart'}.`
        : `Set CREDENTIAL_KMS_URI=${flags.toKms} for every credvault process${current.kind === 'local' && !keptInHome ? ` (and remove the old master key: ${location.kind === 'env' ? 'unset CREDENTIAL_MASTER_KEY' : location.kind === 'file' && location.variable === 'CREDENTIALS_DIRECTORY' ? 'the systemd credential credential_master_key' : location.kind === 'file' ? `${location.path}, and unset ${location.variable}` : 'where it was kept'})` : ''}; a running daemon then needs a restart.`;
  const report = await withContext(rt, async (ctx) => {
    // Reach the database first (postgres.js connects at the first query): a database that cannot be
    // reached fails here, before anything could have committed.
    await ctx.database.query('select 1');
    if (generatedFile && newKeyText) {
      // The data folder may not exist (the key in the environment, the vault on PostgreSQL): made
      // 0700 as init makes it, never left open to others with a key in it.
      ensureHome(home);
      createFileAtomically(generatedFile, `${newKeyText}\n`);
      generatedWritten = true;
      // What to run if this is interrupted (Ctrl-C, a SIGKILL: nothing is printed then), true at
      // every point: master.key.new becomes master.key once the vault answers to it.
      const again = `credvault key rotate --new-key-file ${generatedFile}${flags.reencrypt ? ' --reencrypt' : ''}`;
      rt.out.note(
        keptInHome
          ? `wrote the new master key to ${generatedFile} (0600); it becomes ${homeKey} once the data keys are re-wrapped (the old one is kept as ${homeKey}.retired-${current.keyId}). If this is interrupted, run \`${again}\` while ${generatedFile} exists; once it is gone, ${flags.reencrypt ? '`credvault key rotate --reencrypt` goes on where it stopped' : 'the rotation is done'}`
          : `wrote the new master key to ${generatedFile} (0600); if this is interrupted, run \`${again}\` (with the key configured now)`,
      );
    }
    rewrapStarted = true;
    const rewrap =
      sameKey && !next.rewrap ? { rewrapped: 0, total: 0 } : await rewrapDataKeys(ctx, current, next);
    rewrapDone = true;
    // The vault now answers to the new key only: put it where the old one was read from, when that
    // was the data folder's master.key (before re-encrypting, so that other processes and a daemon's
    // SIGHUP find it meanwhile); keep the old one beside it, named for what it is.
    if (keptInHome && !sameKey) {
      retiredFile = `${homeKey}.retired-${current.keyId}`;
      // The old key stays readable at its new name, and master.key is never missing: a daemon that
      // looks for the new key at this moment finds one key or the other, each by an atomic rename.
      // (A retired file of that name holds this very key already: the name is the key's id.)
      if (!existsSync(retiredFile)) linkSync(homeKey, retiredFile);
      if (next.kind === 'local') {
        let source = generatedFile ?? givenHomeNew;
        if (!source) {
          source = `${homeKey}.installing-${process.pid}`;
          // Flushed before the rename puts it in master.key's place: a crash leaves one whole key there.
          writeNewFileFlushed(source, `${newKeyText}\n`);
        }
        renameSync(source, homeKey);
        installed = homeKey;
      } else {
        unlinkSync(homeKey);
      }
    }
    let reencrypted = null;
    if (flags.reencrypt) {
      const bar = progressBar(rt);
      reencrypted = await reencryptSecrets(ctx, next, (done, total, waiting) =>
        bar.update(done, total, waiting),
      ).catch((error: unknown) => {
        bar.end();
        throw unfinishedReencryption(
          error,
          databaseWhere(rt.config),
          current,
          next,
          rewrap.rewrapped,
          nextStepAfter(),
          installed,
          elsewhere,
        );
      });
      bar.end();
    }
    // The data keys as wrapped under the old key (and, re-encrypted, the old ciphertexts) out of the
    // database's files too: the old key must open nothing left in the data folder.
    const leftover = await shred(
      ctx.database,
      reencrypted
        ? ['data_keys', 'oauth_tokens_vault', 'oauth_app_credentials', 'oauth_states']
        : ['data_keys'],
    );
    if (leftover) rt.out.warn(leftover);
    return { rewrap, reencrypted };
  }).catch(dropGeneratedKey);

  const nextStep = nextStepAfter();
  const json = {
    from_key_id: current.keyId,
    to_key_id: next.keyId,
    to_key_source: next.kind,
    data_keys_rewrapped: report.rewrap.rewrapped,
    data_keys: report.rewrap.total,
    reencrypted: report.reencrypted
      ? {
          secrets: report.reencrypted.secrets,
          data_keys: report.reencrypted.dataKeys,
          resumed: report.reencrypted.resumed,
        }
      : null,
    key_file: installed ?? generatedFile,
    retired_key_file: retiredFile,
    next_step: nextStep,
  };
  if (rt.out.json) return rt.out.writeJson(json);
  if (sameKey && next.rewrap) {
    rt.out.success(
      `re-wrapped ${report.rewrap.rewrapped} data key${report.rewrap.rewrapped === 1 ? '' : 's'} under the newest version of ${next.origin}`,
    );
  } else if (!sameKey) {
    rt.out.success(
      `re-wrapped ${report.rewrap.rewrapped} data key${report.rewrap.rewrapped === 1 ? '' : 's'} from key id ${current.keyId} to ${next.keyId}`,
    );
  }
  if (report.reencrypted) {
    rt.out.success(
      `re-encrypted ${report.reencrypted.secrets} secrets under ${report.reencrypted.dataKeys} new data key${report.reencrypted.dataKeys === 1 ? '' : 's'}${report.reencrypted.resumed ? ' (resumed)' : ''}`,
    );
  }
  if (installed)
    rt.out.note(
      `the new key is in ${installed}; the old one was kept as ${retiredFile}: back up the new one, then delete the old`,
    );
  else if (retiredFile)
    rt.out.note(
      `the old master key was kept as ${retiredFile}: delete it once the vault works with ${next.origin}`,
    );
  if (nextStep) rt.out.warn(nextStep);
}

/** Whether two paths name the same file (the same inode: relative paths and links included). */
function sameFile(a: string, b: string): boolean {
  const left = statSync(a, { throwIfNoEntry: false });
  const right = statSync(b, { throwIfNoEntry: false });
  return Boolean(left && right && left.dev === right.dev && left.ino === right.ino);
}
