import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { Config } from '../config.js';
import { Keyring } from '../crypto/envelope.js';
import type { KeySource } from '../crypto/key-source.js';
import { noKeyError, resolveKeySource } from '../crypto/key-sources.js';
import { type Database, type Db, openDatabase } from '../db/client.js';
import * as dataKeys from '../db/store/data-keys.js';
import { setRequestTimeout } from '../providers/http.js';
import type { Actor } from './audit.js';

/**
 * What a service needs: the database, the keyring (opened on first use, so commands that read no
 * secret need no key) and who is acting. Services own transactions; stores take the handle.
 */
export class ServiceContext {
  readonly database: Database;
  readonly config: Config;
  readonly actor: Actor;
  #keyring: Promise<Keyring> | null = null;
  #source: KeySource | null | undefined;

  constructor(database: Database, config: Config, actor: Actor, source?: KeySource | null) {
    this.database = database;
    this.config = config;
    this.actor = actor;
    this.#source = source;
  }

  readonly #tx = new AsyncLocalStorage<Db>();
  /**
   * Transactions running now. While none is, the storage is disabled: an enabled AsyncLocalStorage
   * makes Node 20 run a hook for every promise the process creates (3–4% of the daemon's sweep
   * profile), for each enabled instance; the daemon's per-request contexts (withActor) would otherwise
   * each leave one enabled for good. Outside a transaction there is nothing to look up.
   */
  #open = 0;

  /** The current transaction when called inside one, else the database. */
  get db(): Db {
    return this.#tx.getStore() ?? this.database.db;
  }

  now(): Date {
    return new Date();
  }

  /** Runs `fn` in one transaction: one user action, all or nothing. */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    // Inside a transaction, a nested one is a savepoint. Everything that reads through `ctx.db` while
    // `fn` runs (the keyring loading a data key, say) uses the same transaction: PGlite has a
    // single connection, so a query outside it would wait for the transaction forever.
    return this.db.transaction(async (tx) => {
      this.#open += 1;
      try {
        return await this.#tx.run(tx as unknown as Db, () => fn(tx as unknown as Db));
      } finally {
        this.#open -= 1;
        if (this.#open === 0) this.#tx.disable();
      }
    });
  }

  keyring(): Promise<Keyring> {
    if (!this.#keyring) {
      this.#keyring = (async () => {
        const source =
          this.#source === undefined
            ? await resolveKeySource(this.config.env, this.config.home)
            : this.#source;
        if (!source) {
          // What wraps the data keys says which key to configure (a KMS URI after `--to-kms`).
          throw noKeyError(this.config.home, await dataKeys.vaultKek(this.db).catch(() => null));
        }
        const reload =
          this.#source === undefined ? () => resolveKeySource(this.config.env, this.config.home) : undefined;
        return new Keyring(source, (id) => dataKeys.getWrapped(this.db, id), reload);
      })();
      this.#keyring.catch(() => {
        this.#keyring = null;
      });
    }
    return this.#keyring;
  }

  /**
   * The active vault-wide data key (app secrets, OAuth states), created on first use. Opening it checks
   * the key id, so a wrong master key fails here, before anything is written.
   */
  async vaultDataKeyId(): Promise<string> {
    const keyring = await this.keyring();
    const existing = await dataKeys.activeVaultKeyId(this.db);
    if (existing) {
      await keyring.dataKey(existing);
      return existing;
    }
    const id = randomUUID();
    const { wrapped } = await keyring.createDataKey(id);
    if (await dataKeys.insert(this.db, wrapped, 'vault')) return id;
    keyring.forget(id);
    const winner = await dataKeys.activeVaultKeyId(this.db);
    if (!winner) throw new Error('the active vault data key disappeared');
    await keyring.dataKey(winner);
    return winner;
  }

  /** Forgets the key source and every unwrapped data key; the next use re-reads them (SIGHUP). */
  /**
   * Reads the configured key source again (SIGHUP), and takes it only once it has opened the vault's
   * data key: a wrong or missing key leaves the one in use in place (the error says why), rather than
   * a daemon that answers every request with a key error while it reports itself healthy.
   */
  async reloadKeys(): Promise<void> {
    const source = await resolveKeySource(this.config.env, this.config.home);
    if (!source) throw noKeyError(this.config.home);
    const candidate = new Keyring(
      source,
      (id) => dataKeys.getWrapped(this.db, id),
      () => resolveKeySource(this.config.env, this.config.home),
    );
    try {
      const vaultKey = await dataKeys.activeVaultKeyId(this.db);
      if (vaultKey) await candidate.dataKey(vaultKey);
    } catch (error) {
      await candidate.close().catch(() => {});
      throw error;
    }
    const previous = this.#keyring;
    this.#keyring = Promise.resolve(candidate);
    this.#source = undefined;
    previous?.then((keyring) => keyring.close()).catch(() => {});
  }

  /** The same vault (database, keyring) acting for someone else: the daemon acts for its clients. */
  withActor(actor: Actor): ServiceContext {
    const child = new ServiceContext(this.database, this.config, actor, this.#source);
    child.#keyring = this.keyring();
    child.#shared = true;
    return child;
  }

  #shared = false;

  async close(): Promise<void> {
    if (this.#shared) return;
    try {
      if (this.#keyring) await (await this.#keyring.catch(() => null))?.close();
    } finally {
      await this.database.close();
    }
  }
}

export async function openContext(
  config: Config,
  actor?: Actor,
  options: { create?: boolean } = {},
): Promise<ServiceContext> {
  // The process's deadline for each platform API request (one setting per process, as the env is).
  setRequestTimeout(config.httpTimeoutMs);
  const database = await openDatabase({
    url: config.databaseUrl,
    home: config.home,
    lockTimeoutMs: config.lockTimeoutMs,
    create: options.create,
  });
  return new ServiceContext(database, config, actor ?? { name: config.actor });
}
