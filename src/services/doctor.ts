import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { databaseLabel, getFromDaemon, readRunFile, runFilePath } from '../cli/fast-token.js';
import type { Config } from '../config.js';
import { exposedKeyFile, exposedKeyFileText, locateKey, noKeyError } from '../crypto/key-sources.js';
import { type Listen, listenLabel } from '../daemon/options.js';
import { type Database, embeddedDataDir, openDatabase } from '../db/client.js';
import { asReported, errorMessage } from '../db/errors.js';
import { lastAppliedMigration, migrationStatus } from '../db/migrate.js';
import * as appStore from '../db/store/apps.js';
import * as connectionStore from '../db/store/connections.js';
import * as tokenStore from '../db/store/tokens.js';
import type { ErrorCode } from '../errors.js';
import { describeAtRisk, fixForAtRisk, versionAtRisk } from '../providers/versions.js';
import { redact } from '../util/redact.js';
import { shellQuote } from '../util/shell.js';
import { ServiceContext } from './context.js';
import { keyMismatch, keyStatus } from './keys.js';
import { vaultStatus } from './status.js';

/**
 * `credvault doctor`: the key, the database, its migrations and the daemon, each checked on its own so
 * that one problem does not hide the next, with what to do about each. It changes nothing: no
 * migration, no data folder made, no key created, nothing written to the audit log.
 */

export type CheckStatus = 'ok' | 'warning' | 'failed' | 'skipped';

export interface Check {
  name: 'database' | 'migrations' | 'key' | 'daemon' | 'connections' | 'apps';
  status: CheckStatus;
  message: string;
  /** What to do about it, when anything. */
  fix: string | null;
  /** The contract's error class of a failed check (its exit code). */
  code?: ErrorCode;
}

export interface DoctorReport {
  /** No check failed (warnings allowed). */
  ok: boolean;
  checks: Check[];
}

const ok = (name: Check['name'], message: string): Check => ({ name, status: 'ok', message, fix: null });
const warning = (name: Check['name'], message: string, fix: string | null): Check => ({
  name,
  status: 'warning',
  message,
  fix,
});
const failed = (name: Check['name'], code: ErrorCode, message: string, fix: string | null): Check => ({
  name,
  status: 'failed',
  message,
  fix,
  code,
});
const skipped = (name: Check['name'], message: string): Check => ({
  name,
  status: 'skipped',
  message,
  fix: null,
});

const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, '0');

/**
 * A failure as a check: the contract's error class and hint when it is one of ours. Another's text is
 * redacted but for paths under `home` (the data folder's files are what its reader has to find).
 */
function asFailure(
  name: Check['name'],
  error: unknown,
  where: string,
  fallback: ErrorCode,
  home: string,
): Check {
  const known = asReported(error, where);
  if (known) return failed(name, known.code, known.message, known.hint ?? null);
  return failed(name, fallback, redact(errorMessage(error), [], { keepUnder: [home] }), null);
}

export async function diagnose(config: Config): Promise<DoctorReport> {
  const opened: { database: Database | null } = { database: null };
  try {
    return await runChecks(config, opened);
  } finally {
    await opened.database?.close().catch(() => {});
  }
}

/** The checks in order; `opened` holds the database it opened, for diagnose to close. */
async function runChecks(config: Config, opened: { database: Database | null }): Promise<DoctorReport> {
  const checks: Check[] = [];
  const where = config.databaseUrl ? databaseLabel(config.databaseUrl) : embeddedDataDir(config.home);
  let database: Database | null = null;
  try {
    // Never makes an embedded database (only init does): without one this is the "no vault" failure.
    const opening = await openDatabase({
      url: config.databaseUrl,
      home: config.home,
      lockTimeoutMs: config.lockTimeoutMs,
    });
    opened.database = opening;
    const [row] = await opening.query<{ version: string }>(
      "select current_setting('server_version') as version",
    );
    // A daemon's socket (shared) is the embedded database too: its description says so.
    const kind = opening.kind === 'pglite' || opening.shared ? 'embedded PostgreSQL' : 'PostgreSQL';
    checks.push(ok('database', `${kind} ${row?.version ?? ''} at ${opening.description}`.trim()));
    database = opening;
  } catch (error) {
    checks.push(asFailure('database', error, where, 'database_error', config.home));
  }

  let migrated = false;
  if (!database) {
    checks.push(skipped('migrations', 'needs the database'));
  } else {
    try {
      const states = await migrationStatus(database);
      const pending = states.filter((m) => !m.applied).length;
      const newest = states.at(-1)?.createdAt.getTime() ?? 0;
      const applied = await lastAppliedMigration(database);
      if (pending) {
        checks.push(
          failed(
            'migrations',
            'database_error',
            `${pending} of ${states.length} migrations are not applied`,
            'Run `credvault db migrate` (or `credvault init`).',
          ),
        );
      } else if (applied !== null && applied > newest) {
        migrated = true;
        checks.push(
          warning(
            'migrations',
            'the database has migrations newer than this credvault knows: a newer version migrated it',
            'Upgrade credvault on this machine to the version the rest of the fleet runs.',
          ),
        );
      } else {
        migrated = true;
        checks.push(ok('migrations', `all ${states.length} applied`));
      }
    } catch (error) {
      checks.push(asFailure('migrations', error, where, 'database_error', config.home));
    }
  }

  const ctx = database && migrated ? new ServiceContext(database, config, { name: config.actor }) : null;
  checks.push(ctx ? await checkKey(ctx) : keyWithoutVault(config));
  checks.push(await checkDaemon(config));
  if (ctx) {
    try {
      const health = await vaultStatus(ctx);
      const unattachedByApp = await tokenStore.countUnattached(ctx.db);
      const kept = unattachedByApp.reduce((sum, row) => sum + row.n, 0);
      const critical = health.filter((h) => h.urgency === 'critical').length;
      const warned = health.filter((h) => h.urgency === 'warning').length;
      const counts = `${health.length} connection${health.length === 1 ? '' : 's'}`;
      const unattached =
        kept &&
        `${kept} refresh token${kept === 1 ? '' : 's'} kept with no account by a \`connections add\` that did not finish (the platform had rotated the one given; ${unattachedByApp.map((r) => `${r.platform} app ${r.app}${r.n > 1 ? ` ×${r.n}` : ''}`).join(', ')})`;
      checks.push(
        critical || warned || kept
          ? warning(
              'connections',
              `${counts}: ${[critical && `${critical} need a person now`, warned && `${warned} need attention soon`, unattached].filter(Boolean).join(', ')}`,
              [
                (critical || warned) && '`credvault status` shows what to do for each.',
                kept &&
                  'Run that `credvault connections add` again with the same refresh token: it uses the one kept, not the given one.',
              ]
                .filter(Boolean)
                .join(' '),
            )
          : ok('connections', health.length ? `${counts}, all healthy` : 'none yet'),
      );
    } catch (error) {
      checks.push(asFailure('connections', error, where, 'database_error', config.home));
    }
  } else {
    checks.push(skipped('connections', 'needs a migrated database'));
  }
  checks.push(ctx ? await checkApps(ctx, where) : skipped('apps', 'needs a migrated database'));
  return { ok: checks.every((c) => c.status !== 'failed'), checks };
}

/**
 * Apps whose platform stops serving their API version soon (or already has), and disabled apps whose
 * connections still hold tokens: nothing renews or uses those (refreshes and campaign commands are
 * refused, `token get` serves only until the access token ends), which is rarely what was meant.
 */
async function checkApps(ctx: ServiceContext, where: string): Promise<Check> {
  try {
    const all = await appStore.list(ctx.db);
    const apps = all.filter((app) => app.enabled);
    const disabled = all.filter((app) => !app.enabled);
    const holding = new Map<string, number>();
    if (disabled.length) {
      const ids = new Set(disabled.map((app) => app.id));
      for (const view of await connectionStore.listViews(ctx.db, {})) {
        if (view.tokenId !== null && ids.has(view.appId)) {
          holding.set(view.appId, (holding.get(view.appId) ?? 0) + 1);
        }
      }
    }
    const stranded = disabled.filter((app) => holding.has(app.id));
    const now = new Date();
    const risks = apps.flatMap((app) => versionAtRisk(app, now) ?? []);
    if (!risks.length && !stranded.length) {
      return ok(
        'apps',
        apps.length
          ? `${apps.length} enabled app${apps.length === 1 ? '' : 's'}, none on an API version near its end`
          : 'none yet',
      );
    }
    const strandedText = stranded.map((app) => {
      const n = holding.get(app.id) ?? 0;
      return `${app.platform}/${app.label} is disabled, but ${n} connection${n === 1 ? '' : 's'} on it hold${n === 1 ? 's' : ''} tokens that nothing can renew`;
    });
    const strandedFix = stranded.length
      ? `${stranded.map((app) => `\`credvault apps enable ${app.platform}/${app.label}\``).join(', ')} (or revoke those connections if the app is retired: \`credvault status\` lists them).`
      : null;
    return warning(
      'apps',
      [...strandedText, ...risks.map(describeAtRisk)].join('; '),
      [strandedFix, risks.length ? fixForAtRisk(risks, now) : null].filter(Boolean).join(' '),
    );
  } catch (error) {
    return asFailure('apps', error, where, 'database_error', ctx.config.home);
  }
}

/** The key alone, when there is no vault to try it on: is one configured and readable at all. */
function keyWithoutVault(config: Config): Check {
  const location = locateKey(config.env, config.home);
  if (location.kind === 'none') {
    const none = noKeyError(config.home);
    return failed('key', none.code, none.message, none.hint ?? null);
  }
  return skipped(
    'key',
    `a ${location.kind} key is configured; whether it opens the vault needs the database`,
  );
}

async function checkKey(ctx: ServiceContext): Promise<Check> {
  let report: Awaited<ReturnType<typeof keyStatus>>;
  try {
    report = await keyStatus(ctx);
  } catch (error) {
    return asFailure('key', error, ctx.database.description, 'key_error', ctx.config.home);
  }
  if (report.key_source === 'none') return keyWithoutVault(ctx.config);
  const source = `${report.key_source} key ${report.key_id} (${report.key_origin})`;
  const mismatch = keyMismatch(report);
  if (mismatch) return failed('key', mismatch.code, mismatch.message, mismatch.hint ?? null);
  const location = locateKey(ctx.config.env, ctx.config.home);
  const exposed = exposedKeyFile(ctx.config.env, ctx.config.home);
  if (exposed) {
    const { message, fix } = exposedKeyFileText(exposed);
    const said = `${source} opens the vault, and ${message}`;
    return exposed.everyUser ? failed('key', 'key_error', said, fix) : warning('key', said, fix);
  }
  if (location.kind === 'file' && location.variable !== 'CREDENTIALS_DIRECTORY') {
    const folder = dirname(location.path);
    const folderMode = statSync(folder, { throwIfNoEntry: false })?.mode ?? 0;
    if (location.variable === 'CREDVAULT_HOME' && folderMode & 0o077) {
      return warning(
        'key',
        `${source} opens the vault, but its folder ${folder} is open to other users (mode ${octal(folderMode)}; init makes it 0700)`,
        `chmod 700 ${shellQuote(folder)}`,
      );
    }
  }
  const retiring = report.data_keys.filter((k) => k.status === 'retiring').length;
  if (retiring) {
    return warning(
      'key',
      `${source} opens the vault; ${retiring} data key${retiring === 1 ? ' is' : 's are'} still being retired (a re-encryption is running, or did not finish)`,
      'If none is running, run `credvault key rotate --reencrypt` again to finish it.',
    );
  }
  return ok(
    'key',
    report.key_matches_vault === null
      ? `${source}; the vault has no data keys yet`
      : `${source} opens the vault`,
  );
}

interface Health {
  status: number;
  body: { status?: string; reasons?: string[]; last_sweep_at?: string | null; listening?: boolean };
}

/** GET /healthz on the daemon's local endpoint (no client token needed). */
async function healthOf(listen: Listen): Promise<Health> {
  const { status, body } = await getFromDaemon(listen, '/healthz', {}, 3_000);
  try {
    return { status, body: JSON.parse(body) };
  } catch {
    return { status, body: {} };
  }
}

async function checkDaemon(config: Config): Promise<Check> {
  const path = runFilePath(config.home);
  const run = readRunFile(config.home);
  const start = 'Start one with `credvault daemon` (under systemd: `credvault daemon unit`).';
  if (!run) {
    if (existsSync(path)) {
      return warning(
        'daemon',
        `the daemon that wrote ${path} is not running (it did not shut down cleanly)`,
        start,
      );
    }
    return warning(
      'daemon',
      'no daemon runs for this vault on this machine: tokens are refreshed only when something asks for one',
      `${start} Daemons on other hosts sharing a PostgreSQL database are not seen from here.`,
    );
  }
  if (run.database !== databaseLabel(config.databaseUrl)) {
    return warning(
      'daemon',
      `the daemon on this machine (pid ${run.pid}) serves another database (${run.database})`,
      null,
    );
  }
  const where = `pid ${run.pid}, ${listenLabel(run.listen)}`;
  let health: Health;
  try {
    health = await healthOf(run.listen);
  } catch (error) {
    return failed(
      'daemon',
      'unavailable',
      `the daemon (${where}) does not answer: ${redact((error as Error).message)}`,
      'Look at its log (journalctl -u credvault), or restart it.',
    );
  }
  if (health.status !== 200) {
    const reasons = health.body.reasons?.length ? health.body.reasons.join('; ') : `HTTP ${health.status}`;
    return failed(
      'daemon',
      'unavailable',
      `the daemon (${where}) is unhealthy: ${reasons}`,
      'Look at its log (journalctl -u credvault).',
    );
  }
  const sweep = health.body.last_sweep_at;
  const running = `running (${where})${sweep ? `, last sweep ${sweep}` : ', no sweep finished yet'}`;
  // Absent from an older daemon's answer: only an explicit false is a problem. Not a failure: the
  // daemon serves correctly, only at the cost of a database read per request.
  if (health.body.listening === false) {
    return warning(
      'daemon',
      `${running}, but not listening for changes: it does not hear other processes' revocations and refreshes, so it reads the database at every token request`,
      "Check the daemon's connection to the database: a pooler in transaction mode (PgBouncer's pool_mode = transaction) breaks LISTEN, so point the daemon at the server or at a session-mode pool. Its log (journalctl -u credvault) says why: `not listening for changes (…)`, event listen_lost.",
    );
  }
  return ok('daemon', running);
}
