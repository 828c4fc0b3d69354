import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { createConnection } from 'node:net';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { getTableName } from 'drizzle-orm';
import { databaseLabel, readRunFile, runFilePath } from '../cli/fast-token.js';
import type { Config } from '../config.js';
import { exposedKeyFile, exposedKeyFileText } from '../crypto/key-sources.js';
import { type Database, openDatabase, requireEmbeddedVault } from '../db/client.js';
import { databaseFailure, errorMessage } from '../db/errors.js';
import type { ChangeListener } from '../db/listener.js';
import { maintainTables } from '../db/maintenance.js';
import { assertMigrated, newerMigrations, newerWarning } from '../db/migrate.js';
import { adAccountConnections, dataKeys, oauthTokensVault } from '../db/schema/index.js';
import { CHANGES_CHANNEL } from '../db/store/changes.js';
import * as stateStore from '../db/store/oauth-states.js';
import { CredvaultError, InvalidInputError } from '../errors.js';
import { ServiceContext } from '../services/context.js';
import { forgetOpenApps, unstoredGrants } from '../services/tokens.js';
import { createFileAtomically } from '../util/files.js';
import { redact } from '../util/redact.js';
import { AuditBatcher } from './audit-batcher.js';
import { AuditChain } from './audit-chain.js';
import { DaemonCache } from './cache.js';
import { type EmbeddedServer, serveEmbedded } from './embedded.js';
import { databaseGauges } from './gauges.js';
import { listenForChanges } from './listening.js';
import { createLogger, type Logger, RepeatedLines } from './log.js';
import { logFolders, toJournal } from './log-format.js';
import { DaemonMetrics } from './metrics.js';
import { SystemdNotifier } from './notify.js';
import { type DaemonOptions, listenLabel, secondDaemonError } from './options.js';
import { RefreshScheduler } from './scheduler.js';
import { createTokenServer, type Health } from './server.js';

/**
 * `credvault daemon`: the entry point of the long-running process, and the only daemon module that
 * touches signals. One shutdown path with a deadline: stop accepting, let refreshes in flight finish
 * and be stored, flush the audit batches, close the database; a second signal exits at once.
 */

const SHUTDOWN_DEADLINE_MS = 10_000;
/** When a shutdown stops waiting for what is in flight: a second and a half to close and exit. */
const GIVE_UP_MS = SHUTDOWN_DEADLINE_MS - 1500;
const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/**
 * What is at a unix socket path before the daemon listens there: nothing, a socket left by a daemon
 * that is gone (removed), or something that must not be touched (another daemon's live socket, a
 * file that is not a socket): refused, exit 2.
 */
async function clearSocketPath(path: string): Promise<void> {
  let stat: ReturnType<typeof lstatSync>;
  try {
    stat = lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) {
    throw new InvalidInputError(`--listen unix:${path}: something that is not a socket is there`, {
      hint: 'Give a path where the daemon may make its socket.',
    });
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) {
    throw new InvalidInputError(
      `--listen unix:${path}: another process is listening there (another daemon?)`,
      {
        hint: 'Stop it, or give another path.',
      },
    );
  }
  rmSync(path, { force: true });
}

async function listen(server: Server, options: DaemonOptions): Promise<void> {
  if (options.listen.kind === 'unix') {
    mkdirSync(dirname(options.listen.path), { recursive: true, mode: 0o700 });
    await clearSocketPath(options.listen.path);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      const where =
        options.listen.kind === 'unix'
          ? `unix:${options.listen.path}`
          : `${options.listen.host}:${options.listen.port}`;
      reject(
        error.code === 'EADDRINUSE' || error.code === 'EACCES' || error.code === 'EADDRNOTAVAIL'
          ? new InvalidInputError(`cannot listen on ${where} (${error.code})`, {
              hint:
                error.code === 'EADDRINUSE'
                  ? 'Another program uses it; stop it, or give another --listen.'
                  : 'Give another --listen.',
            })
          : error,
      );
    });
    if (options.listen.kind === 'unix') {
      const path = options.listen.path;
      // Created 0600 from the first instant: no window in which another user could connect.
      const previous = process.umask(0o177);
      server.listen(path, () => {
        process.umask(previous);
        chmodSync(path, 0o600);
        resolve();
      });
    } else {
      server.listen(options.listen.port, options.listen.host, () => resolve());
    }
  });
}

function refuseSecondDaemon(home: string): void {
  const other = readRunFile(home);
  if (other && other.pid !== process.pid) {
    throw secondDaemonError(home, `pid ${other.pid}, on ${listenLabel(other.listen)}`);
  }
}

/** The pid recorded in a run file, if it is there and readable. */
function runFileOwner(path: string): number | null {
  try {
    return (JSON.parse(readFileSync(path, 'utf8')) as { pid?: number }).pid ?? null;
  } catch {
    return null;
  }
}

export async function runDaemon(
  config: Config,
  options: DaemonOptions,
  stderr: NodeJS.WritableStream & { isTTY?: boolean },
  { jsonLogs }: { jsonLogs?: boolean } = {},
): Promise<number> {
  // One daemon per home: its run file is how the commands on this machine find it. (On the embedded
  // database a second one would wait for the lock, and then give the advice for a command.)
  refuseSecondDaemon(config.home);
  // Paths under these stay readable in the log (a key file named in a SIGHUP error, the socket).
  const keepUnder = logFolders(config, options.listen.kind === 'unix' ? options.listen.path : undefined);
  const log: Logger = createLogger(
    stderr,
    config.verbose ? 'debug' : 'info',
    jsonLogs,
    keepUnder,
    toJournal(stderr, config.env),
  );
  // Signals are the daemon's from the first instant. Before it is ready, Node's defaults would end it
  // without removing its lock and run file, and by SIGHUP (a `systemctl reload` right after start),
  // which systemd takes for a clean exit and does not restart. Until then they wait their turn; a
  // second SIGTERM or SIGINT ends the start at once.
  const early: NodeJS.Signals[] = [];
  // When the first SIGTERM or SIGINT came: the shutdown's deadline runs from then, a start still
  // under way included (one waiting for the database ends with the rest, see startDeadline).
  let stopAt: number | null = null;
  let startDeadline: NodeJS.Timeout | null = null;
  let onSignal = (signal: NodeJS.Signals) => {
    if (signal !== 'SIGHUP' && early.some((s) => s !== 'SIGHUP')) {
      log.warn(`${signal} again while starting: exiting at once`);
      process.exit(1);
    }
    early.push(signal);
    if (signal !== 'SIGHUP' && stopAt === null) {
      stopAt = Date.now();
      startDeadline = setTimeout(() => {
        log.error(
          `${signal} came while starting, and the start did not end within ${GIVE_UP_MS / 1000}s; exiting, ${abandoned()}`,
        );
        void Promise.race([cleanup(), sleep(700)]).finally(() => process.exit(1));
      }, GIVE_UP_MS);
    }
  };
  const signalHandlers = SIGNALS.map((signal) => {
    const handler = () => onSignal(signal);
    process.on(signal, handler);
    return () => process.off(signal, handler);
  });
  log.info(`credvault daemon starting (pid ${process.pid})`);
  const notifier = new SystemdNotifier(config.env);
  const cache = new DaemonCache();
  let embedded: EmbeddedServer | null = null;
  let database: Database | undefined;
  let scheduler: RefreshScheduler | undefined;
  if (config.databaseUrl) {
    database = await openDatabase({
      url: config.databaseUrl,
      home: config.home,
      lockTimeoutMs: config.lockTimeoutMs,
      poolSize: options.concurrency + 8,
      applicationName: 'credvault-daemon',
      deadlineMs: config.dbTimeoutMs,
    });
  } else {
    // The daemon serves a vault; it does not make one (`credvault init` does).
    requireEmbeddedVault(config.home);
    embedded = await serveEmbedded(
      config.home,
      config.lockTimeoutMs,
      { channel: CHANGES_CHANNEL, onPayload: (payload) => cache.invalidate(payload) },
      (socketPath) =>
        log.warn(`the embedded database's socket ${socketPath} was removed; serving it there again`, {
          event: 'socket_restored',
        }),
    );
    database = await openDatabase({
      url: null,
      home: config.home,
      lockTimeoutMs: config.lockTimeoutMs,
      poolSize: options.concurrency + 8,
      deadlineMs: config.dbTimeoutMs,
    });
  }
  const ctx = new ServiceContext(database, config, { name: 'daemon' });
  const metrics = new DaemonMetrics();
  // The audit chain's head as this daemon last wrote it: its two writers take turns after it.
  const chain = new AuditChain();
  const audit = new AuditBatcher(ctx, metrics, chain);
  scheduler = new RefreshScheduler(ctx, options, metrics, log, chain);
  // Their failures are logged (see databaseGauges), not swallowed.
  const updateGauges = databaseGauges(ctx, metrics, log, () => shuttingDown);
  const timers: NodeJS.Timeout[] = [];
  let shuttingDown = false;
  let listener: ChangeListener | null = null;
  let server: Server | null = null;
  const runFile = runFilePath(config.home);

  const maintain = maintenance(database, embedded !== null, log);

  // Until when, once shutting down, the commands using the embedded database through the daemon may
  // finish (see EmbeddedServer.close).
  let drainUntil = 0;
  let cleaned: Promise<void> | null = null;
  const cleanup = () => {
    cleaned ??= cleanupOnce();
    return cleaned;
  };
  const cleanupOnce = async () => {
    for (const timer of timers) clearInterval(timer);
    // First, so that a shutdown cut short at its deadline leaves no run file pointing at nothing.
    // Only this daemon's: another one serving the same home keeps its fast path.
    if (runFileOwner(runFile) === process.pid) rmSync(runFile, { force: true });
    // A maintenance pass under way finishes (an ANALYZE takes a fraction of a second).
    await maintain.idle();
    await listener?.close().catch(() => {});
    // Not yet opened, when a stop cuts a start short.
    await database?.close().catch(() => {});
    await embedded?.close(drainUntil).catch(() => {});
  };

  /**
   * What a shutdown (or a start) cut short at its deadline leaves unfinished, for its log line: the
   * refreshes whose platform has not answered (their grants stay marked in flight, which `status`
   * reports once their leases lapse) and the database statements not answered.
   */
  const abandoned = (): string => {
    const parts: string[] = [];
    const unfinished = scheduler?.unfinished() ?? [];
    const unstored = unstoredGrants();
    // A refresh whose answer came and waits to be stored is named once, as that: not in flight.
    const refreshes = unfinished.filter((r) => !unstored.includes(r.grantId)).map((r) => r.label);
    if (refreshes.length) {
      parts.push(
        `${refreshes.length} refresh${refreshes.length > 1 ? 'es' : ''} in flight (left marked in flight): ${refreshes.join(', ')}`,
      );
    }
    if (unstored.length) {
      const named = unstored.map((id) => unfinished.find((r) => r.grantId === id)?.label ?? `grant ${id}`);
      parts.push(
        `${unstored.length} refresh answer${unstored.length > 1 ? 's' : ''} the database did not take, lost with this process (where the platform rotated the refresh token, its connections need \`credvault connect\` again once it ends the old one): ${named.join(', ')}`,
      );
    }
    const waiting = database?.waiting?.();
    if (waiting?.count) {
      parts.push(
        `${waiting.count} database statement${waiting.count > 1 ? 's' : ''} unanswered (the oldest sent ${Math.round(waiting.oldestMs / 1000)} s ago)`,
      );
    }
    return parts.length ? `abandoning ${parts.join('; ')}` : 'with nothing of its own in flight';
  };

  try {
    await assertMigrated(database);
    const newer = await newerMigrations(database);
    if (newer) log.warn(newerWarning(newer), { newer_migrations: newer });
    // The key must open this vault before the daemon says it is ready.
    await ctx.vaultDataKeyId();
    const exposed = exposedKeyFile(config.env, config.home);
    if (exposed) {
      const { message, fix } = exposedKeyFileText(exposed);
      log.warn(`${message}; run: ${fix}`, { event: 'key_file_exposed' });
    }

    /** Drops what the cache holds that the database no longer says (see DaemonCache.revalidate). */
    // Every 30 s: while the database is down, one line, then a count now and then (RepeatedLines).
    const cacheCheckFailures = new RepeatedLines(log, { firstMs: 120_000 });
    // Resolves whether the check was made.
    const checkCache = () =>
      cache.revalidate(ctx.db).then(
        () => true,
        (e) => {
          const what = databaseFailure(e);
          cacheCheckFailures.log(
            'warn',
            what ?? errorMessage(e),
            `cache check failed${what ? `: ${what}` : ''}`,
            {
              event: 'cache_check_failed',
              error: errorMessage(e),
            },
          );
          return false;
        },
      );
    // On the embedded database the daemon's PGlite itself listens (see serveEmbedded), in this
    // process: the cache answers from the start. On PostgreSQL it answers only while the daemon knows
    // it is listening (see listenForChanges).
    const listenOn = database.shared ? undefined : database.listen;
    if (listenOn) {
      listener = listenForChanges(listenOn, cache, checkCache, log, metrics);
    } else {
      metrics.listening.set(1);
    }
    const healthDeadline = healthDeadlineMs(config.dbTimeoutMs);
    const databaseCheck = probeDatabase(database, healthDeadline);
    const health = async (): Promise<Health> => {
      const reasons: string[] = [];
      if (shuttingDown) reasons.push('shutting down');
      const problem = await databaseCheck();
      if (problem) reasons.push(problem);
      else {
        // The database answers, but a daemon whose audit log refuses records serves no token.
        const refused = await withDeadline(audit.refusal(), healthDeadline, 'no answer');
        if (refused) reasons.push(`the audit log refuses records (no token is served): ${refused}`);
      }
      if (scheduler.lastError) reasons.push(`last sweep failed: ${scheduler.lastError}`);
      const stalled = scheduler.stalled();
      if (stalled) reasons.push(stalled);
      return {
        ok: reasons.length === 0,
        reasons,
        lastSweepAt: scheduler.lastSweepAt,
        shuttingDown,
        // Not a reason to take the daemon out: it serves all the same, reading the database.
        listening: cache.serving,
      };
    };
    const localToken = `cvc_${randomBytes(32).toString('base64url')}`;
    server = createTokenServer({
      ctx,
      cache,
      audit,
      metrics,
      log,
      options,
      health,
      shuttingDown: () => shuttingDown,
      localToken,
    });
    await listen(server, options);
    // Where it listens, with the port the system chose for `--listen HOST:0`.
    const bound = server.address();
    const listening =
      options.listen.kind === 'tcp' && bound && typeof bound === 'object'
        ? { ...options.listen, port: bound.port }
        : options.listen;

    mkdirSync(dirname(runFile), { recursive: true, mode: 0o700 });
    // Another one may have started beside this one meanwhile (on PostgreSQL nothing else stops it).
    // Made only if no other daemon's is there (as 'wx'): of two starting together, one writes it; and
    // linked in whole, so that a reader (token get, doctor, the other daemon) never finds it half-written.
    refuseSecondDaemon(config.home);
    if (existsSync(runFile)) rmSync(runFile, { force: true }); // a dead daemon's (checked just above)
    const runText = JSON.stringify({
      pid: process.pid,
      listen: listening,
      token: localToken,
      database: databaseLabel(config.databaseUrl),
    });
    try {
      createFileAtomically(runFile, runText);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') refuseSecondDaemon(config.home);
      throw error;
    }
    chmodSync(runFile, 0o600);

    // Notifications can be lost with a dropped PostgreSQL connection, and a change made outside
    // credvault sends none: cached entries are also checked against the database now and then.
    // A timer's run does not start while its last one is still under way (a database that does not
    // answer would otherwise take another connection at every tick until the pool is gone).
    timers.push(every(30_000, checkCache));
    // Removed under the daemon (`rm -r run/`, a cleaner of old files), the run file is written again:
    // without it `token get` stops asking the daemon and `doctor` says none runs. Never over another's.
    // A failure that lasts (run/ made a file, or read-only) is one line, then a count now and then.
    const runFileFailures = new RepeatedLines(log, { firstMs: 120_000 });
    timers.push(
      every(2_000, async () => {
        if (shuttingDown || existsSync(runFile)) return;
        try {
          mkdirSync(dirname(runFile), { recursive: true, mode: 0o700 });
          createFileAtomically(runFile, runText);
          log.warn(`its run file ${runFile} was removed; written again`, { event: 'run_file_restored' });
        } catch (error) {
          // Another's, written meanwhile (a second daemon is refused while this one runs): left alone.
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') return;
          runFileFailures.log(
            'warn',
            'run_file',
            `its run file ${runFile} was removed and could not be written again: ${errorMessage(error)}`,
            { event: 'run_file_lost' },
          );
        }
      }),
    );
    timers.push(every(15_000, () => updateGauges()));
    timers.push(every(30_000, () => audit.touchClients().catch(() => {})));
    // Statistics before the first claim (see db/maintenance.ts); on the embedded database, which has
    // no autovacuum, every minute too. On PostgreSQL the first sweep waits only for the tables its
    // claim reads; the others (the audit log, the largest) are analysed meanwhile.
    if (embedded) {
      await maintain.run();
      timers.push(every(60_000, () => maintain.run()));
    } else {
      await maintain.run(CLAIM_TABLES);
      void maintain.run();
    }
    // OAuth states long expired (those of a removed app among them, which no connect through it will
    // purge): at the start, then hourly, not only when a connect starts.
    const purgeStates = () =>
      stateStore
        .purgeExpired(ctx.db)
        .catch((e) => log.warn('purging expired OAuth states failed', { error: errorMessage(e) }));
    await purgeStates();
    timers.push(every(60 * 60_000, purgeStates));
    scheduler.start();
    timers.push(setInterval(() => scheduler.checkStall(), 1000));
    // The gauges' first values (their queries read whole tables: after the statistics, beside the sweep).
    void updateGauges();

    if (options.listen.kind === 'tcp' && options.allowRemote) {
      log.warn(
        `listening on ${listenLabel(listening)} beyond this machine: terminate TLS in front of the daemon; client tokens travel in every request`,
      );
    }
    log.info(`credvault daemon listening on ${listenLabel(listening)} (${database.description})`);
    await notifier.ready(`serving on ${listenLabel(listening)}`);
    // The watchdog says the process is alive and its sweep is not stuck: pings come from the event
    // loop, and stop while a sweep under way makes no progress (systemd then restarts the daemon). A
    // database that is down is not a reason: the sweep fails and tries again, /healthz says 503, and
    // a restart would only fail to start (exit 8) until the database is back.
    notifier.startWatchdog(() => !scheduler.stuck());
  } catch (error) {
    if (startDeadline) clearTimeout(startDeadline);
    server?.close();
    await cleanup();
    for (const off of signalHandlers) off();
    throw error;
  }

  return new Promise<number>((settle) => {
    // Once settled, signals are Node's again (the process is about to end).
    const resolve = (code: number) => {
      for (const off of signalHandlers) off();
      settle(code);
    };
    const shutdown = async (signal: string) => {
      if (shuttingDown) {
        log.warn(`${signal} again: exiting at once`);
        resolve(1);
        setTimeout(() => process.exit(1), 100).unref();
        return;
      }
      shuttingDown = true;
      // From the signal, a start it waited for included.
      const since = stopAt ?? Date.now();
      if (startDeadline) clearTimeout(startDeadline);
      drainUntil = since + SHUTDOWN_DEADLINE_MS - 2500;
      log.info(`${signal}: shutting down`);
      void notifier.stopping();
      // Within SHUTDOWN_DEADLINE_MS whatever is in flight (a platform call that has not answered: its
      // grant keeps its in-flight mark, which `status` reports; a statement the database has not
      // answered): a second to close the database and remove the run file, then the process ends,
      // before systemd's stop timeout would kill it. The log line names what was left.
      const deadline = setTimeout(
        () => {
          log.error(`shutdown took longer than ${GIVE_UP_MS / 1000}s; exiting, ${abandoned()}`);
          void Promise.race([cleanup(), sleep(700)]).finally(() => {
            resolve(1);
            setTimeout(() => process.exit(1), 100).unref();
          });
        },
        Math.max(0, since + GIVE_UP_MS - Date.now()),
      );
      deadline.unref();
      try {
        // The server keeps listening while the refreshes in flight finish: /healthz answers 503
        // "shutting down" meanwhile, everything else 503 (a load balancer or a CI job's fast path
        // goes elsewhere). Then it stops, once the requests it was answering are done.
        await scheduler.stop();
        const closed = new Promise<void>((done) => server!.close(() => done()));
        server!.closeIdleConnections();
        await closed;
        await audit.drain();
        await audit.touchClients().catch(() => {});
        await cleanup();
        log.info('stopped');
        clearTimeout(deadline);
        resolve(0);
      } catch (error) {
        log.error('shutdown failed', { error: errorMessage(error) });
        clearTimeout(deadline);
        resolve(1);
      }
    };
    const reload = () => {
      // Re-read the configuration that can change under a running daemon: the key (a rotated
      // master key file or credential) and everything cached from the database. A key that does not
      // open the vault is not taken: the daemon goes on with the one it has.
      void ctx
        .reloadKeys()
        .then(
          () => log.info('SIGHUP: reloaded the key source and cleared caches'),
          (error: unknown) => log.error(...reloadFailure(error)),
        )
        .finally(() => {
          forgetOpenApps();
          cache.clear();
          scheduler.poke();
        });
    };
    onSignal = (signal) => (signal === 'SIGHUP' ? reload() : void shutdown(signal));
    // What came while starting, in order (a stop first ends the start it waited for).
    for (const signal of early.splice(0)) onSignal(signal);
  });
}

/**
 * Runs `run` every `ms`, except while its previous run is still under way: that tick is skipped.
 */
function every(ms: number, run: () => Promise<unknown>): NodeJS.Timeout {
  let running = false;
  return setInterval(() => {
    if (running) return;
    running = true;
    void run().finally(() => {
      running = false;
    });
  }, ms);
}

/** How long /healthz waits for the database's answer: 5 s, or the daemon's limit if shorter. */
function healthDeadlineMs(dbTimeoutMs: number): number {
  return dbTimeoutMs > 0 ? Math.min(5000, dbTimeoutMs) : 5000;
}

/**
 * /healthz's look at the database: `select 1`, answered within `deadlineMs` or reported as not
 * answering. One at a time: requests that come while one is out wait for the same answer (a load
 * balancer polling a daemon whose database hangs takes one connection, not one per request).
 * Resolves the reason the database is not usable, or null.
 */
function probeDatabase(database: Database, deadlineMs: number): () => Promise<string | null> {
  let probe: Promise<string | null> | null = null;
  return () => {
    probe ??= database.query('select 1').then(
      () => null,
      (error: unknown) => `database unreachable: ${redact(errorMessage(error))}`,
    );
    const current = probe;
    void current.finally(() => {
      if (probe === current) probe = null;
    });
    return withDeadline(current, deadlineMs, 'database unreachable: no answer');
  };
}

/** `answer`, or `late` and the deadline when it has not come within `deadlineMs`. */
function withDeadline(answer: Promise<string | null>, deadlineMs: number, late: string) {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    answer,
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`${late} within ${deadlineMs / 1000} s`), deadlineMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The tables the sweep's claim reads (tokenStore.claimDue, connectionStore.firstByGrants). */
const CLAIM_TABLES = [oauthTokensVault, dataKeys, adAccountConnections].map((table) => getTableName(table));

/**
 * One maintenance pass at a time; a failure is logged, never fatal (the daemon works without it).
 * `idle` waits for the pass under way, so that shutting down does not cut it off.
 */
function maintenance(database: Database, vacuum: boolean, log: Logger) {
  let running: Promise<void> | null = null;
  const warnedUnowned = new Set<string>();
  const pass = async (only?: readonly string[]) => {
    try {
      const steps = await maintainTables(database, vacuum, only);
      for (const step of steps) {
        if (step.action !== 'skipped') log.debug(`database maintenance: ${step.action} ${step.table}`);
        else if (!warnedUnowned.has(step.table)) {
          warnedUnowned.add(step.table);
          log.warn(
            `table ${step.table} needs ${vacuum ? 'vacuuming' : 'analysing'} but is owned by another role; its owner (or autovacuum) must see to it`,
          );
        }
      }
    } catch (error) {
      log.warn('database maintenance failed', { error: errorMessage(error) });
    }
  };
  return {
    run(only?: readonly string[]): Promise<void> {
      if (running) return Promise.resolve();
      const current = pass(only).finally(() => {
        running = null;
      });
      running = current;
      return current;
    },
    idle: (): Promise<void> => running ?? Promise.resolve(),
  };
}

/**
 * What a SIGHUP whose key was not taken logs: a key that does not open the vault is not a database
 * that cannot be read to check it (nor a KMS that does not answer), and each says what to do.
 */
function reloadFailure(error: unknown): [string, Record<string, unknown>] {
  const fields = { event: 'reload_failed', error: errorMessage(error) };
  const database = databaseFailure(error);
  if (database) {
    return [
      `SIGHUP: the key was not reloaded: ${database}, so the configured key could not be checked against this vault; going on with the key in use (send SIGHUP again once the database answers)`,
      { ...fields, reason: 'database' },
    ];
  }
  if (error instanceof CredvaultError && error.code === 'key_error') {
    // A key that opens nothing of this vault, or none to try (a missing file, a malformed key).
    // The contract's mismatch; a KMS's refusal ("…; the key … does not open N of M data keys") and a
    // key that cannot be read keep their own words.
    const mismatch = error.message.startsWith('the master key does not match this vault');
    return [
      mismatch
        ? 'SIGHUP: the configured key does not open this vault; going on with the key in use'
        : `SIGHUP: the configured key could not be read (${error.message}); going on with the key in use`,
      { ...fields, reason: 'key' },
    ];
  }
  return [
    'SIGHUP: the configured key could not be checked; going on with the key in use',
    { ...fields, reason: error instanceof CredvaultError ? error.code : 'internal' },
  ];
}
