/**
 * credvault as a library: the same vault, configuration, token service and campaign operations as the
 * CLI, for application code that wants a valid access token and one campaign interface across the
 * four platforms.
 *
 *   import { openVault } from 'credvault';
 *   const vault = await openVault();                      // DATABASE_URL / CREDVAULT_HOME, like the CLI
 *   const { accessToken } = await vault.getValidAccessToken('google_ads:1234567890', { minTtl: 300 });
 *   const campaigns = await vault.provider('google_ads').listCampaigns('google_ads:1234567890');
 *   await vault.close();
 *
 * Every token handed out and every budget change is audited with `actor` (default: the OS user), as
 * the CLI does.
 */
import { MAX_MIN_TTL_SECONDS, resolveConfig } from './config.js';
import { databaseWhere } from './db/client.js';
import { mapDatabaseError } from './db/errors.js';
import { assertNotBehind } from './db/migrate.js';
import { InvalidInputError, quoted } from './errors.js';
import { PLATFORMS, type PlatformCapabilities, type PlatformId, parsePlatform } from './providers/catalog.js';
import { toMicros } from './providers/money.js';
import type { BudgetChangeResult, Campaign } from './providers/types.js';
import { listCampaigns, setCampaignBudget } from './services/campaigns.js';
import { resolveConnection } from './services/connections.js';
import { openContext, type ServiceContext } from './services/context.js';
import { getValidAccessToken } from './services/tokens.js';
import { connectionRef } from './views.js';

export {
  ConflictError,
  CredvaultError,
  DatabaseError,
  type ErrorCode,
  EXIT_CODES,
  InternalError,
  InvalidInputError,
  isCredvaultError,
  KeyError,
  NotFoundError,
  ReauthRequiredError,
  UnavailableError,
} from './errors.js';
export { PLATFORM_IDS, type PlatformCapabilities, type PlatformId } from './providers/catalog.js';
export type { BudgetChangeResult, BudgetLevel, Campaign } from './providers/types.js';

export interface VaultOptions {
  /** The data folder (default: $CREDVAULT_HOME, else ~/.local/share/credvault). */
  home?: string;
  /** PostgreSQL URL (default: $DATABASE_URL, else the embedded database in `home`). */
  databaseUrl?: string;
  /** Who is acting, for the audit log (default: $CREDVAULT_ACTOR, else the OS user). */
  actor?: string;
  /** The environment to read configuration and key sources from (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface AccessToken {
  /** The bearer token. Keep it out of logs. */
  accessToken: string;
  tokenType: string;
  expiresAt: Date | null;
  connectionId: string;
  platform: PlatformId;
  externalAccountId: string;
  /** Whether this call refreshed it (once per expiry across every process sharing the vault). */
  refreshed: boolean;
}

export interface TokenOptions {
  /** Refresh first when the token expires within this many seconds (default 60, as `token get`). */
  minTtl?: number;
  /** What the token is for, recorded in the audit log (default "library"). */
  purpose?: string;
}

export interface BudgetUpdate {
  campaignId: string;
  /** The new daily budget in micros of the account's currency (1 USD = 1,000,000). */
  dailyBudgetMicros: bigint | number | string;
  /** Check without changing: the platform's dry run where it has one, else credvault's checks ("simulated"). */
  validateOnly?: boolean;
  /** Change a budget other campaigns share (Google Ads), knowing it changes them too. */
  allowShared?: boolean;
}

/** What updateCampaignBudget answers: the change, and whether its audit record was written. */
export interface BudgetUpdateResult extends BudgetChangeResult {
  /**
   * Null, or why the audit row of a change the platform made could not be written (the database
   * failed after the platform answered): the change is made all the same.
   */
  unrecorded: string | null;
}

/** One platform's operations; each takes the connection (id, `platform:account`, or name) to act through. */
export interface ProviderClient {
  readonly platform: PlatformId;
  readonly capabilities: PlatformCapabilities;
  listCampaigns(connection: string): Promise<Campaign[]>;
  updateCampaignBudget(connection: string, update: BudgetUpdate): Promise<BudgetUpdateResult>;
}

export interface Vault {
  getValidAccessToken(connection: string, options?: TokenOptions): Promise<AccessToken>;
  provider(platform: PlatformId | string): ProviderClient;
  capabilities(platform: PlatformId | string): PlatformCapabilities;
  /**
   * Waits for the calls already started, then closes the database (and, on the embedded database,
   * lets other processes open it). Calls made once it has begun are refused (InvalidInputError).
   */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

function minTtlSeconds(value: unknown): number {
  if (value === undefined) return 60;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_MIN_TTL_SECONDS) {
    // A string ('300', from a form or the environment) is said to be one, not shown as the number.
    const got = typeof value === 'number' ? String(value) : shownValue(value);
    throw new InvalidInputError(
      `minTtl must be whole seconds between 0 and ${MAX_MIN_TTL_SECONDS} (a year; got ${got})`,
    );
  }
  return value;
}

/** What a caller passed where a string was expected, as a message names it. */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}

/** What a caller passed where a number or boolean was expected: its kind, and a string's or number's value. */
function shownValue(value: unknown): string {
  if (typeof value === 'string') return `the string ${quoted(value)}`;
  if (typeof value === 'number' || typeof value === 'bigint') return `the ${typeof value} ${value}`;
  return kindOf(value);
}

/**
 * The connection a method is given: a string (name, id or `platform:account`), else an
 * InvalidInputError, not the TypeError a plain JavaScript caller would otherwise meet deep inside.
 */
function connectionArg(value: unknown): string {
  if (typeof value === 'string') return value;
  throw new InvalidInputError(`the connection must be a string (got ${kindOf(value)})`, {
    hint: "Name it by its name, its id, or PLATFORM:ACCOUNT ('google_ads:1234567890').",
  });
}

/**
 * openVault's options: an object (null or none: every setting from the environment) whose settings
 * are strings and whose env is an object, else an InvalidInputError naming the setting.
 */
function vaultOptionsArg(value: unknown): VaultOptions {
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidInputError(`openVault's options must be an object (got ${kindOf(value)})`);
  }
  const options = value as Record<string, unknown>;
  for (const name of ['home', 'databaseUrl', 'actor'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'string') {
      throw new InvalidInputError(`openVault's ${name} must be a string (got ${kindOf(options[name])})`);
    }
  }
  if (options.env !== undefined && (options.env === null || typeof options.env !== 'object')) {
    throw new InvalidInputError(
      `openVault's env must be an object of variables (got ${kindOf(options.env)})`,
    );
  }
  // Its variables are strings, as process.env's are: a number (DATABASE_URL: 5) met the
  // configuration's string handling as a TypeError, or (a master key) only at the first call.
  for (const [name, variable] of Object.entries((options.env ?? {}) as Record<string, unknown>)) {
    if (variable !== undefined && typeof variable !== 'string') {
      const shown = /^\w+$/.test(name) ? name : quoted(name);
      throw new InvalidInputError(`openVault's env.${shown} must be a string (got ${kindOf(variable)})`);
    }
  }
  return options as VaultOptions;
}

/**
 * A yes/no setting of updateCampaignBudget: true, false or absent. Anything else is refused, not
 * read as JavaScript reads it: `validateOnly: 'true'` (a form field, a YAML string) taken for false
 * would change the live budget the caller only meant to check.
 */
function flagArg(update: Record<string, unknown>, name: 'validateOnly' | 'allowShared'): boolean {
  const value = update[name];
  if (value === undefined) return false;
  if (typeof value !== 'boolean') {
    throw new InvalidInputError(`${name} must be a boolean, true or false (got ${shownValue(value)})`);
  }
  return value;
}

/** A platform name given to provider() or capabilities(): a string, else an InvalidInputError. */
function platformArg(value: unknown): PlatformId {
  if (typeof value !== 'string') {
    throw new InvalidInputError(`the platform must be a string (got ${kindOf(value)})`, {
      hint: `Valid platforms: ${Object.keys(PLATFORMS).join(', ')}.`,
    });
  }
  return parsePlatform(value);
}

/** getValidAccessToken's options: an object (or null, taken for none), with a string purpose. */
function tokenOptionsArg(value: unknown): TokenOptions {
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidInputError(`the token options must be an object (got ${kindOf(value)})`);
  }
  const options = value as TokenOptions;
  if (options.purpose !== undefined && typeof options.purpose !== 'string') {
    throw new InvalidInputError(`purpose must be a string (got ${kindOf(options.purpose)})`);
  }
  return options;
}

/** A connection of the expected platform, or an error naming both. */
async function connectionOf(ctx: ServiceContext, ref: string, platform: PlatformId): Promise<string> {
  const connection = await resolveConnection(ctx.db, ref);
  if (connection.platform !== platform) {
    throw new InvalidInputError(
      `connection ${connectionRef(connection)} is a ${PLATFORMS[connection.platform as PlatformId].displayName} connection, not ${PLATFORMS[platform].displayName}`,
      { hint: `Use provider('${connection.platform}') for it.` },
    );
  }
  return connection.id;
}

/**
 * Opens the vault with the CLI's configuration: options first, then the environment (DATABASE_URL,
 * CREDVAULT_HOME, CREDENTIAL_MASTER_KEY…). On the embedded database the vault stays open (and
 * locked to other processes, unless a daemon shares it) until `close()`.
 */
export async function openVault(given: VaultOptions | null = {}): Promise<Vault> {
  const options = vaultOptionsArg(given);
  const config = resolveConfig(
    {
      ...(options.home !== undefined ? { home: options.home } : {}),
      ...(options.databaseUrl !== undefined ? { databaseUrl: options.databaseUrl } : {}),
      ...(options.actor !== undefined ? { actor: options.actor } : {}),
    },
    options.env ?? process.env,
  );
  // A driver's failure (the database unreachable, missing) becomes the contract's error, as in the
  // CLI: a DatabaseError (code database_error), never drizzle's message with the query in it.
  const where = databaseWhere(config);
  const typed = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (error) {
      throw mapDatabaseError(error, where) ?? error;
    }
  };
  const ctx = await typed(async () => {
    const opened = await openContext(config);
    // A schema behind this credvault: refused as the CLI refuses it (exit 8's DatabaseError).
    try {
      await assertNotBehind(opened.database);
    } catch (error) {
      await opened.close();
      throw error;
    }
    return opened;
  });
  let closed: Promise<void> | null = null;
  // The calls started and not yet settled: close() waits for them before it closes the database.
  // Closed under a call, the call failed on a statement half-way (a driver's error with the query in
  // it), a refresh's answer from the platform was lost with its lease left held (every process then
  // waited out the lease), and a budget change the platform had applied went unaudited.
  const running = new Set<Promise<unknown>>();
  /** Runs one call of the vault, refused once close() has begun (a call then would find it closing). */
  const call = <T>(fn: (ctx: ServiceContext) => Promise<T>): Promise<T> => {
    if (closed) {
      return Promise.reject(new InvalidInputError('this vault was closed; open it again with openVault()'));
    }
    const result = typed(() => fn(ctx));
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    running.add(settled);
    void settled.then(() => running.delete(settled));
    return result;
  };

  const provider = (name: PlatformId | string): ProviderClient => {
    const platform = platformArg(name);
    return {
      platform,
      capabilities: { ...PLATFORMS[platform].capabilities },
      listCampaigns: (connection) =>
        call(async (ctx) => {
          const id = await connectionOf(ctx, connectionArg(connection), platform);
          return (await listCampaigns(ctx, id, 'library listCampaigns')).campaigns;
        }),
      updateCampaignBudget: (connection, update) =>
        call(async (ctx) => {
          if (!update || typeof update.campaignId !== 'string' || update.campaignId.trim() === '') {
            throw new InvalidInputError('updateCampaignBudget needs a campaignId');
          }
          const micros = toMicros(update.dailyBudgetMicros);
          const validateOnly = flagArg(update as unknown as Record<string, unknown>, 'validateOnly');
          const allowShared = flagArg(update as unknown as Record<string, unknown>, 'allowShared');
          const id = await connectionOf(ctx, connectionArg(connection), platform);
          const { connection: _row, ...result } = await setCampaignBudget(ctx, id, {
            campaignId: update.campaignId,
            dailyBudgetMicros: micros,
            validateOnly,
            allowShared,
            purpose: `library updateCampaignBudget${validateOnly ? ' (validateOnly)' : ''}`,
          });
          return result;
        }),
    };
  };

  const close = (): Promise<void> => {
    closed ??= (async () => {
      while (running.size > 0) await Promise.all(running);
      await ctx.close();
    })();
    return closed;
  };

  return {
    async getValidAccessToken(connection, tokenOptions = {}) {
      const served = await call((ctx) => {
        const ref = connectionArg(connection);
        const options = tokenOptionsArg(tokenOptions);
        return getValidAccessToken(ctx, ref, {
          minTtlSeconds: minTtlSeconds(options.minTtl),
          purpose: options.purpose ?? 'library',
        });
      });
      return {
        accessToken: served.accessToken.reveal(),
        tokenType: served.tokenType,
        expiresAt: served.expiresAt,
        connectionId: served.connection.id,
        platform: served.connection.platform as PlatformId,
        externalAccountId: served.connection.externalAccountId,
        refreshed: served.refreshed,
      };
    },
    provider,
    capabilities: (platform) => ({ ...PLATFORMS[platformArg(platform)].capabilities }),
    close,
    [Symbol.asyncDispose]: close,
  };
}
