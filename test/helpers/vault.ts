/**
 * A throwaway vault for one test: a data folder with its master key, on the embedded database or on a
 * fresh PostgreSQL database cloned from the template. `cli()` runs the real built binary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import postgres from 'postgres';
import { afterEach, expect, inject } from 'vitest';
import { COMMAND_SETTINGS, embeddedSocketPath } from '../../src/db/client.js';
import { acquireDatabaseLock } from '../../src/db/lock.js';
import { BIN, databaseUrlFor } from './paths.js';

export type DbKind = 'pglite' | 'postgres';

export const DB_KIND: DbKind = process.env.CREDVAULT_TEST_DB === 'postgres' ? 'postgres' : 'pglite';

/**
 * True in the one project where a test of what the database does not change runs: on PostgreSQL when
 * the suite has it, else on the embedded database. For `it.runIf(ONCE)` and `describe.runIf(ONCE)`
 * on tests whose subject is a platform's protocol, parsing a user's input, the shape of an answer or
 * a decision made in memory, and whose writes go through statements that tests on both databases run
 * too. A test of locking, concurrency, leases, transactions and their rollback, what is on disk (a
 * secret scan of the embedded database's files included) or the daemon sharing the embedded database
 * runs on both.
 */
export const ONCE = DB_KIND === 'postgres' || !process.env.CREDVAULT_TEST_DATABASE_URL;

/**
 * With CREDVAULT_TEST_TRACE=FILE, one JSON line per credvault process and per `session` (`sql`,
 * `dump`) of a test (file, test, database, what, milliseconds): what a test costs is mostly these.
 * Openings in the test's own process (openContext, seedConnections) are not counted.
 */
const TRACE = process.env.CREDVAULT_TEST_TRACE;
function trace(kind: 'process' | 'session', what: string, startedAt: number): void {
  if (!TRACE) return;
  const file = (expect.getState().testPath ?? '').split('/').pop();
  const test = expect.getState().currentTestName;
  const ms = Math.round(performance.now() - startedAt);
  appendFileSync(TRACE, `${JSON.stringify({ file, test, db: DB_KIND, kind, what, ms })}\n`);
}

/** A statement on a `session`'s connection, answered with its rows. */
export type Query = <T = Record<string, unknown>>(text: string, params?: unknown[]) => Promise<T[]>;

export interface CliResult {
  /** The exit code; 128 when a signal ended the process (see signal). */
  code: number;
  stdout: string;
  stderr: string;
  /** The signal that ended the process, when one did. */
  signal?: NodeJS.Signals;
}

export interface CliOptions {
  input?: string;
  /** The output is a secret by design (token get, exec): keep it out of the secret scans. */
  secretOutput?: boolean;
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  cwd?: string;
}

const TABLES = [
  'platforms',
  'data_keys',
  'oauth_app_credentials',
  'oauth_tokens_vault',
  'ad_account_connections',
  'oauth_states',
  'api_clients',
  'credential_access_audit',
  'audit_head',
];

export class TestVault {
  readonly kind: DbKind;
  readonly root: string;
  readonly home: string;
  readonly databaseUrl: string | null;
  readonly env: Record<string, string | undefined>;
  /** Everything the binary printed during this test, for secret scans. */
  readonly printed: string[] = [];
  readonly #database: string | null;

  constructor(root: string, home: string, database: string | null, baseUrl: string | null) {
    this.kind = database ? 'postgres' : 'pglite';
    this.root = root;
    this.home = home;
    this.#database = database;
    this.databaseUrl = database && baseUrl ? databaseUrlFor(baseUrl, database) : null;
    this.env = {
      PATH: process.env.PATH,
      HOME: root,
      CREDVAULT_HOME: home,
      NO_COLOR: '1',
      CREDVAULT_ACTOR: 'test-operator',
      ...(this.databaseUrl ? { DATABASE_URL: this.databaseUrl } : {}),
    };
  }

  /** Starts the binary; for tests that need the process itself (signals, concurrency). */
  spawn(args: string[], options: CliOptions = {}): ChildProcess {
    const startedAt = performance.now();
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...this.env, ...options.env } as NodeJS.ProcessEnv,
      cwd: options.cwd ?? this.root,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    if (TRACE) child.on('close', () => trace('process', args.slice(0, 2).join(' '), startedAt));
    return child;
  }

  async cli(args: string[], options: CliOptions = {}): Promise<CliResult> {
    const child = this.spawn(args, options);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.stdin!.on('error', () => {});
    child.stdin!.end(options.input ?? '');
    const timeout = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    const [code, signal] = await new Promise<[number, NodeJS.Signals | null]>((resolve) =>
      child.on('close', (c, signal) => resolve([c ?? (signal ? 128 : 1), signal])),
    );
    clearTimeout(timeout);
    this.printed.push(options.secretOutput ? '' : stdout, stderr);
    return signal ? { code, stdout, stderr, signal } : { code, stdout, stderr };
  }

  /** Runs and parses a `--json` command that must succeed. */
  async json<T = unknown>(args: string[], options: CliOptions = {}): Promise<T> {
    const result = await this.cli([...args, '--json'], options);
    if (result.code !== 0) {
      throw new Error(`credvault ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
    }
    return JSON.parse(result.stdout) as T;
  }

  /** Plain SQL against the vault's database (taking the embedded database's lock like credvault does). */
  async sql<T = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
    return this.session((query) => query<T>(text, params));
  }

  /**
   * Makes the audit log refuse every new row, as a revoked INSERT would (SQLSTATE 42501, "audit is
   * read-only"): a trigger, which works on both databases. `drop trigger refuse_audit on
   * credential_access_audit` undoes it.
   */
  async refuseAuditWrites(): Promise<void> {
    await this.session(async (query) => {
      await query(`create or replace function refuse_audit() returns trigger language plpgsql as $$
        begin raise exception 'audit is read-only' using errcode = '42501'; end $$`);
      await query(
        'create trigger refuse_audit before insert on credential_access_audit for each row execute function refuse_audit()',
      );
    });
  }

  /** Several statements on one connection (on the embedded database, one open of PGlite). */
  async session<R>(fn: (query: Query) => Promise<R>): Promise<R> {
    const startedAt = performance.now();
    try {
      return await this.#session(fn);
    } finally {
      trace('session', '', startedAt);
    }
  }

  async #session<R>(fn: (query: Query) => Promise<R>): Promise<R> {
    if (this.databaseUrl) {
      const client = postgres(this.databaseUrl, { max: 1, onnotice: () => {} });
      try {
        return await fn(
          async <T>(text: string, params: unknown[] = []) =>
            (await client.unsafe(text, params as never[])) as unknown as T[],
        );
      } finally {
        await client.end();
      }
    }
    // A daemon serving the embedded database: through its socket, as every credvault command then goes.
    const socket = embeddedSocketPath(this.home);
    if (existsSync(socket)) {
      const client = postgres({
        path: socket,
        user: 'postgres',
        database: 'postgres',
        prepare: false,
        max: 1,
        onnotice: () => {},
      });
      const answers = await client`select 1`.then(
        () => true,
        () => false,
      );
      try {
        if (answers)
          return await fn(
            async <T>(text: string, params: unknown[] = []) =>
              (await client.unsafe(text, params as never[])) as unknown as T[],
          );
      } finally {
        await client.end();
      }
    }
    const lock = await acquireDatabaseLock(this.home, 30_000, 'test');
    // As a credvault command opens it (a log segment it no longer needs is deleted, not kept for
    // reuse; shared buffers a few statements need, not the 128 MB that take a third of a second to
    // zero at every open).
    const db = new PGlite(join(this.home, 'pgdata'), {
      startParams: [...PGlite.defaultStartParams, ...COMMAND_SETTINGS],
    });
    try {
      return await fn(
        async <T>(text: string, params: unknown[] = []) => (await db.query<T>(text, params)).rows,
      );
    } finally {
      await db.close();
      lock.release();
    }
  }

  /** Every table's rows, in a stable order: two equal dumps mean nothing changed. */
  async dump(): Promise<string> {
    return this.session(async (query) => {
      const parts: string[] = [];
      for (const table of TABLES) {
        const rows = await query<{ row: unknown }>(`select to_jsonb(t) as row from ${table} t order by 1`);
        parts.push(`${table}: ${rows.map((r) => JSON.stringify(r.row)).join('\n')}`);
      }
      return parts.join('\n');
    });
  }

  /** The raw bytes of the embedded database's files (empty on PostgreSQL). */
  rawDatabaseFiles(): Buffer[] {
    if (this.kind !== 'pglite') return [];
    const files: Buffer[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        const stat = statSync(path);
        if (stat.isDirectory()) walk(path);
        else if (stat.size < 64 * 1024 * 1024) files.push(readFileSync(path));
      }
    };
    walk(join(this.home, 'pgdata'));
    return files;
  }

  async destroy(): Promise<void> {
    rmSync(this.root, { recursive: true, force: true });
    if (this.#database) {
      const admin = postgres(process.env.CREDVAULT_TEST_DATABASE_URL!, { max: 1, onnotice: () => {} });
      try {
        await admin.unsafe(`drop database if exists ${this.#database} with (force)`);
      } finally {
        await admin.end();
      }
    }
  }
}

let counter = 0;

/**
 * A test file's `vault()`: each call makes a vault (as createVault does), destroyed after the test
 * that made it. Call it at the top level of the file.
 */
export function vaultsPerTest(): (options?: { initialized?: boolean }) => Promise<TestVault> {
  const made: TestVault[] = [];
  afterEach(async () => {
    await Promise.all(made.splice(0).map((v) => v.destroy()));
  });
  return async (options) => {
    const v = await createVault(options);
    made.push(v);
    return v;
  };
}

/**
 * A vault for one test. `initialized: false` gives an empty data folder (for testing `init` itself);
 * the default is a copy of the template that `credvault init` made.
 */
export async function createVault(options: { initialized?: boolean } = {}): Promise<TestVault> {
  const root = mkdtempSync(join(tmpdir(), 'credvault-test-'));
  const home = join(root, 'home');
  const initialized = options.initialized !== false;
  if (initialized) {
    cpSync(inject('templateHome'), home, { recursive: true });
    // As init left it: cpSync keeps the folder's mode on Node 20, not on 22 and later.
    chmodSync(home, 0o700);
  }
  let database: string | null = null;
  const baseUrl = process.env.CREDVAULT_TEST_DATABASE_URL ?? null;
  if (DB_KIND === 'postgres') {
    database = `credvault_t_${inject('runId')}_${process.pid}_${++counter}`;
    const admin = postgres(baseUrl!, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(
        initialized
          ? `create database ${database} template ${inject('templateDatabase')}`
          : `create database ${database}`,
      );
    } finally {
      await admin.end();
    }
  }
  return new TestVault(root, home, database, baseUrl);
}
