import { constants } from 'node:os';
import { DURATION, parseDuration } from '../../config.js';
import { Secret } from '../../crypto/secret.js';
import * as connectionStore from '../../db/store/connections.js';
import { InvalidInputError, quoted } from '../../errors.js';
import {
  CallbackTimeoutError,
  ForeignCallbackError,
  loopbackTarget,
  MalformedCallbackError,
  repeatedParameter,
  startCallbackServer,
} from '../../oauth/loopback.js';
import { PLATFORMS, type PlatformId, parsePlatform } from '../../providers/catalog.js';
import type { AdAccount } from '../../providers/types.js';
import {
  type Abandoned,
  type AccountChooser,
  abandonAuthorization,
  adoptRefreshToken,
  appForPlatform,
  completeAuthorization,
  listingFailed,
  STATE_LIFETIME_MS,
  type Stored,
  startAuthorization,
} from '../../services/connect.js';
import {
  assertNameFree,
  type ConnectionView,
  parseAccountIds,
  parseConnectionName,
} from '../../services/connections.js';
import { type DestroyedGrant, severalNamed } from '../../services/grants.js';
import { quotableUrl } from '../../util/net.js';
import { shellQuote } from '../../util/shell.js';
import { connectionRef } from '../../views.js';
import { withContext } from '../context.js';
import { ask, readFileOrStdin, readFirstLine } from '../input.js';
import type { Runtime } from '../run.js';
import { printConnections } from './connections.js';

function accountLabel(a: AdAccount): string {
  return `${a.name ?? '(no name)'}  ${a.id}${a.currency ? `  ${a.currency}` : ''}`;
}

/**
 * Which accounts to connect: --account, the only one, or a choice at the terminal. `again`: what to
 * do when the accounts cannot be listed and none were named (the command's own way to try again).
 */
export function chooseAccounts(
  rt: Runtime,
  requested: string[],
  again = 'Name the account with --account ID and run the command again.',
): AccountChooser {
  return async (found, platform) => {
    const { accounts, problem } = found;
    const wanted = parseAccountIds(platform, requested);
    const reachable = accounts.map((a) => `${a.id}${a.name ? ` (${a.name})` : ''}`).join(', ');
    if (wanted.length) {
      if (problem) {
        rt.out.warn(
          `could not list the accounts this grant reaches (${problem}); connecting ${wanted.join(', ')} as given`,
        );
        return wanted.map((id) => ({ id, name: null, currency: null, details: {} }));
      }
      const missing = wanted.filter((id) => !accounts.some((a) => a.id === id));
      if (missing.length) {
        throw new InvalidInputError(
          `this grant does not reach account${missing.length > 1 ? 's' : ''} ${missing.join(', ')}; nothing was stored`,
          {
            hint: reachable ? `It reaches: ${reachable}.` : 'It reaches no ad account.',
          },
        );
      }
      return accounts.filter((a) => wanted.includes(a.id));
    }
    if (problem) throw listingFailed(found, again);
    if (accounts.length === 0)
      throw new InvalidInputError('this grant reaches no ad account; nothing was stored');
    if (accounts.length === 1) return accounts;
    if (!rt.interactive) {
      throw new InvalidInputError(
        `this grant reaches several ad accounts (${reachable}); nothing was stored`,
        {
          hint: 'Say which with --account (repeat for several).',
        },
      );
    }
    const { checkbox } = await import('@inquirer/prompts');
    // Ctrl-D cancels as Ctrl-C does (ask: the prompt's promise would otherwise never settle).
    const ids = await ask(rt, (context) =>
      checkbox(
        {
          message: `Which ${PLATFORMS[platform].displayName} accounts should credvault connect?`,
          choices: accounts.map((a) => ({ name: accountLabel(a), value: a.id })),
          required: true,
        },
        context,
      ),
    );
    return accounts.filter((a) => ids.includes(a.id));
  };
}

/**
 * What storing the connections did besides: an account connected already is connected again (its
 * connection keeps its id), and where that moves it to another app or gives it another name, it is
 * said, or a script still asking for the old name finds nothing; the grant it was on, destroyed
 * here, is said too (and what could not be done after, as warnings).
 */
export function reportStored(
  rt: Runtime,
  stored: Pick<Stored, 'connections' | 'destroyed' | 'warnings'>,
  before: ConnectionView[],
): void {
  for (const warning of stored.warnings) rt.out.warn(warning);
  for (const view of stored.connections) {
    const was = before.find((b) => b.id === view.id);
    if (!was || (was.appLabel === view.appLabel && was.name === view.name)) continue;
    const as = (v: ConnectionView) => `${v.name ? `named ${v.name}, ` : ''}through app ${v.appLabel}`;
    rt.out.note(
      `${view.platform}:${view.externalAccountId} was connected already (${as(was)}): it is now connected ${as(view)}`,
    );
  }
  noteDestroyed(rt, stored.destroyed);
}

/** Says which grants a reconnect destroyed here, and that the platform was not told. */
export function noteDestroyed(rt: Runtime, destroyed: DestroyedGrant[]): void {
  for (const grant of destroyed) {
    const refs = grant.connections.join(', ');
    rt.out.note(
      `the previous tokens of ${refs} were destroyed here (the new grant replaces them); they were not revoked at the platform, where revoking them could end the new grant too (Google revokes the whole authorization)`,
    );
  }
}

/**
 * How long to wait for the browser, in ms: plain whole seconds (`300`, the default) or a duration
 * (`90s`, `5m`), as strict as --min-ttl (no `0x3`, `1e0` or spaces), and at most a state's life, after
 * which the answer would be refused.
 */
export function parseTimeout(text: string): number {
  const most = STATE_LIFETIME_MS / 1000;
  const ms = /^\d{1,8}$/.test(text)
    ? Number(text) * 1000
    : DURATION.test(text)
      ? parseDuration(text, '--timeout', { zero: true })
      : Number.NaN;
  if (!(ms >= 1000 && ms <= STATE_LIFETIME_MS)) {
    throw new InvalidInputError(
      `--timeout must be whole seconds (or a duration like 90s or 5m) from 1s to ${most}s, the life of an authorization's state (got ${quoted(text)})`,
    );
  }
  return ms;
}

/** Shows the authorization URL: alone on its own stderr line, so a script or another machine can open it. */
async function announce(rt: Runtime, url: string, browser: boolean): Promise<void> {
  if (!browser) {
    rt.out.note('Open this URL in a browser to authorize:');
    rt.out.line(url);
    return;
  }
  rt.out.note('Opening your browser to authorize. If it does not open, visit:');
  rt.out.line(url);
  try {
    const [{ default: open }, { withoutVaultSecrets }] = await Promise.all([
      import('open'),
      import('../../crypto/key-sources.js'),
    ]);
    // The browser (and its launcher) gets none of the variables that reach the vault: the master key
    // in the environment would stay in the browser's for as long as it runs.
    const child = await withoutVaultSecrets(rt.config, () => open(url));
    child.on('error', () => {});
    child.unref();
  } catch {
    rt.out.warn('could not open a browser; open the URL above yourself');
  }
}

interface ConnectOptions {
  app?: string;
  account: string[];
  name?: string;
  browser: boolean;
  timeout: string;
}

export async function connect(rt: Runtime, platformInput: string, opts: ConnectOptions): Promise<void> {
  const platform = parsePlatform(platformInput);
  const timeoutMs = parseTimeout(opts.timeout);
  const name = opts.name ? parseConnectionName(opts.name) : null;
  const choose = chooseAccounts(
    rt,
    opts.account,
    `Run \`credvault connect ${platform}\` again in a while (this consent was not kept: access is to be allowed again), or name the account with --account ID.`,
  );
  const wanted = parseAccountIds(platform, opts.account);
  if (name && wanted.length > 1) throw severalNamed();
  // The database is opened per step, not held while a person is in the browser: on the embedded
  // database, other credvault commands can run meanwhile.
  const app = await withContext(rt, async (ctx) => {
    if (name) await assertNameFree(ctx.db, platform, name, wanted.length ? wanted : undefined);
    return appForPlatform(ctx.db, platform, opts.app ?? null);
  });
  const target = loopbackTarget(app.redirectUri, PLATFORMS[platform].capabilities.any_loopback_port);
  let stored: Stored;
  try {
    if (target) {
      let state = '';
      const again = `credvault connect ${platform}${opts.app ? ` --app ${shellQuote(app.label)}` : ''}`;
      const server = await startCallbackServer(target, () => state, timeoutMs, again);
      try {
        const started = await withContext(rt, (ctx) =>
          startAuthorization(ctx, platform, app.id, server.redirectUri),
        );
        state = started.state;
        const callback = await orAbandon(rt, state, async () => {
          await announce(rt, started.authorize_url, opts.browser);
          rt.out.note(
            `Waiting for the authorization on ${server.redirectUri} (up to ${Math.round(timeoutMs / 1000)}s)…`,
          );
          return server.result;
        });
        stored = await withContext(rt, (ctx) =>
          completeAuthorization(ctx, state, callback, { name, choose }),
        );
      } finally {
        server.close();
      }
    } else {
      const started = await withContext(rt, (ctx) => startAuthorization(ctx, platform, app.id, null));
      const callback = await orAbandon(rt, started.state, () =>
        pastedAnswer(rt, started, app.redirectUri, opts.browser, timeoutMs),
      );
      stored = await withContext(rt, (ctx) =>
        completeAuthorization(ctx, started.state, callback, { name, choose }),
      );
    }
  } catch (error) {
    if (error instanceof Stopped) return endByStop(rt, error);
    throw error;
  }
  const views = stored.connections;
  printConnections(rt, views);
  reportStored(rt, stored, stored.previous ?? []);
  rt.out.success(`connected ${views.map(connectionRef).join(', ')}`);
}

/**
 * Runs what comes before connect hands a callback to completeAuthorization (which uses the state up
 * itself): when that fails (a wrong or forged answer, no answer in time, anything else), connect gives
 * its authorization up, so that its state cannot be completed later, and a wrong answer is on record.
 */
async function orAbandon<T>(rt: Runtime, state: string, fn: () => Promise<T>): Promise<T> {
  const stop = stopOnSignal();
  try {
    return await Promise.race([fn(), stop.stopped]);
  } catch (error) {
    const why: Abandoned =
      error instanceof ForeignCallbackError
        ? 'wrong state'
        : error instanceof MalformedCallbackError
          ? 'malformed answer'
          : error instanceof CallbackTimeoutError
            ? 'no answer in time'
            : 'stopped';
    await withContext(rt, (ctx) => abandonAuthorization(ctx, state, why)).catch((failure) =>
      rt.out.warn(
        `this authorization could not be given up (${failure instanceof Error ? failure.message : String(failure)}): its state stays usable until it expires, ${STATE_LIFETIME_MS / 60_000} minutes after the start`,
      ),
    );
    throw error;
  } finally {
    stop.release();
  }
}

/** connect was told to stop (SIGINT, SIGTERM, SIGHUP) while it waited for the answer. */
class Stopped extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`stopped by ${signal}`);
  }
}

const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * While connect waits, Ctrl-C (or a SIGTERM, a closed terminal) rejects the wait instead of killing the
 * process at once, so that the authorization is given up (orAbandon) and cannot be completed later,
 * as the README says of whatever ends connect. The first signal takes the handlers away again: a
 * second one ends the process at once, by its default action.
 */
function stopOnSignal(): { stopped: Promise<never>; release(): void } {
  let reject: (error: Stopped) => void = () => {};
  const stopped = new Promise<never>((_, fail) => {
    reject = fail;
  });
  // Never left unhandled: it settles the race, or nothing waits for it any more.
  stopped.catch(() => {});
  const release = () => {
    for (const signal of STOP_SIGNALS) process.removeListener(signal, onSignal);
  };
  function onSignal(signal: NodeJS.Signals) {
    release();
    reject(new Stopped(signal));
  }
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  return { stopped, release };
}

/**
 * connect stopped by a signal, its authorization given up: the process ends by the same signal
 * (src/cli/main.ts), as it did before it caught it (a shell says 130 for Ctrl-C, 143 for SIGTERM, and
 * a loop over connect stops), with 128 + its number should it outlive it.
 */
function endByStop(rt: Runtime, stopped: Stopped): void {
  rt.out.warn(`stopped (${stopped.signal}); this authorization was given up, and nothing was stored`);
  rt.exitCode = 128 + (constants.signals[stopped.signal] ?? 1);
  rt.exitSignal = stopped.signal;
}

/** The answer pasted (at a terminal) or written to standard input, for a redirect URI not on this machine. */
async function pastedAnswer(
  rt: Runtime,
  started: { authorize_url: string; state: string },
  redirectUri: string,
  browser: boolean,
  timeoutMs: number,
): Promise<URLSearchParams> {
  await announce(rt, started.authorize_url, browser);
  // The sign-in link itself carries the same state: a URL with neither a code nor an error is
  // asked for again (at a terminal) rather than used up.
  const problem = (value: string) => {
    if (!URL.canParse(value.trim())) return 'paste the full URL, starting with https://';
    const params = new URL(value.trim()).searchParams;
    if (!params.has('code') && !params.has('error'))
      return 'this URL carries no answer from the platform (no code, no error): paste the address the browser was sent back to';
    const repeated = rt.interactive && repeatedParameter(params);
    return repeated
      ? `this URL is malformed: its "${repeated}" parameter appears more than once; paste the address the browser was sent back to, as it is`
      : null;
  };
  let pasted: string;
  if (rt.interactive) {
    const { input } = await import('@inquirer/prompts');
    pasted = await ask(rt, (context) =>
      input(
        {
          message: 'After allowing access, paste the whole URL the browser was sent to:',
          validate: (value: string) => problem(value) ?? true,
        },
        context,
      ),
    );
  } else {
    // No terminal: the URL the browser was sent back to comes as the first line of standard input.
    rt.out.note(
      `Waiting for the URL the browser is sent back to, as one line on standard input (up to ${Math.round(timeoutMs / 1000)}s)…`,
    );
    const line = await readFirstLine(rt, timeoutMs);
    const hint =
      'Write the URL as one line to standard input, or use `credvault connections start` and then `credvault connections complete --state S --callback-url URL`.';
    if (line === null || !line.trim()) {
      throw new InvalidInputError(
        `the app's redirect URI (${redirectUri}) is not on this machine, and no URL came on standard input; nothing was stored`,
        { hint },
      );
    }
    const wrong = problem(line);
    if (wrong) throw new InvalidInputError(`${wrong}; nothing was stored`, { hint });
    pasted = line;
  }
  const callback = new URL(pasted.trim()).searchParams;
  // Asked again at a terminal (problem, above); from standard input, refused as it is.
  const repeated = repeatedParameter(callback);
  if (repeated) {
    throw new MalformedCallbackError(
      repeated,
      'the pasted URL',
      'nothing was stored',
      'Run connect again, and give the address the browser was sent back to, as it is.',
    );
  }
  if (callback.get('state') !== started.state) {
    throw new ForeignCallbackError(
      'the pasted URL is not the answer to this authorization (its state differs); nothing was stored',
    );
  }
  return callback;
}

export async function start(rt: Runtime, platformInput: string, opts: { app?: string }): Promise<void> {
  const platform = parsePlatform(platformInput);
  const started = await withContext(rt, (ctx) => startAuthorization(ctx, platform, opts.app ?? null, null));
  const { authorize_url, state, redirect_uri, expires_at } = started;
  rt.out.item({ authorize_url, state, redirect_uri, expires_at }, [
    ['authorize url', authorize_url],
    ['state', state],
    ['redirect uri', redirect_uri],
    ['expires at', expires_at],
  ]);
  rt.out.note(
    'Open the URL, allow access, then run `credvault connections complete --state S --callback-url URL`.',
  );
}

interface CompleteFlags {
  state: string;
  code?: string;
  callbackUrl?: string;
  account: string[];
  name?: string;
}

export async function complete(rt: Runtime, opts: CompleteFlags): Promise<void> {
  if (Boolean(opts.code) === Boolean(opts.callbackUrl)) {
    throw new InvalidInputError('give exactly one of --code and --callback-url');
  }
  let callback: URLSearchParams;
  if (opts.callbackUrl) {
    if (!URL.canParse(opts.callbackUrl))
      throw new InvalidInputError(
        `--callback-url is not a URL: ${quoted(quotableUrl(opts.callbackUrl, { withQuery: false }))}`,
        { hint: 'Give the whole address the browser was sent back to, from http:// on.' },
      );
    callback = new URL(opts.callbackUrl).searchParams;
    // Before --state is set in it (which would leave one state of several): see repeatedParameter.
    const repeated = repeatedParameter(callback);
    if (repeated) {
      throw new MalformedCallbackError(
        repeated,
        '--callback-url',
        'nothing was used up or stored',
        'Give the address the browser was sent back to, as it is.',
      );
    }
    const inUrl = callback.get('state');
    if (inUrl !== null && inUrl !== opts.state) {
      throw new InvalidInputError(
        'the callback URL answers another authorization (its state differs from --state); nothing was stored',
      );
    }
    callback.set('state', opts.state);
  } else {
    callback = new URLSearchParams({ code: opts.code!, state: opts.state });
  }
  const name = opts.name ? parseConnectionName(opts.name) : null;
  const stored = await withContext(rt, (ctx) =>
    completeAuthorization(ctx, opts.state, callback, {
      name,
      choose: chooseAccounts(
        rt,
        opts.account,
        'Start again in a while with `credvault connect` (this authorization is used up, and its consent was not kept), or name the account with --account ID.',
      ),
    }),
  );
  const views = stored.connections;
  printConnections(rt, views);
  reportStored(rt, stored, stored.previous ?? []);
  rt.out.success(`connected ${views.length} account${views.length === 1 ? '' : 's'}`);
}

interface AddFlags {
  app: string;
  account: string[];
  name?: string;
  refreshTokenFile: string;
}

export async function add(rt: Runtime, platformInput: string, opts: AddFlags): Promise<void> {
  const platform: PlatformId = parsePlatform(platformInput);
  if (!opts.account.length) throw new InvalidInputError('connections add needs --account ID');
  const text = (await readFileOrStdin(rt, opts.refreshTokenFile, '--refresh-token-file')).trim();
  if (!text || /\s/.test(text)) {
    throw new InvalidInputError(
      '--refresh-token-file must hold exactly one refresh token (one line, no spaces)',
    );
  }
  const name = opts.name ? parseConnectionName(opts.name) : null;
  const wanted = parseAccountIds(platform, opts.account);
  if (name && wanted.length > 1) throw severalNamed();
  let before: ConnectionView[] = [];
  const adopted = await withContext(rt, async (ctx) => {
    // Before the platform is asked: the refresh may rotate the token, and a name that could only fail
    // afterwards would leave the person with a refresh token the platform no longer takes.
    if (name) await assertNameFree(ctx.db, platform, name, wanted);
    before = await connectionStore.listViews(ctx.db, { platform, accounts: wanted });
    return adoptRefreshToken(ctx, platform, opts.app, new Secret(text), {
      name,
      choose: chooseAccounts(rt, opts.account),
    });
  });
  const views = adopted.connections;
  printConnections(rt, views);
  reportStored(rt, adopted, before);
  const added = views.map((v) => `${v.platform}:${v.externalAccountId}`).join(', ');
  if (adopted.joined) {
    rt.out.note(
      adopted.sharedWith.length
        ? `the vault already holds this refresh token: ${added} ${views.length === 1 ? 'shares' : 'share'} the grant of ${adopted.sharedWith.join(', ')} (one consent: revoking one revokes them all)`
        : `the vault already holds this refresh token, on the grant of ${added}: it was refreshed, not stored again`,
    );
    if (adopted.keptOnJoined) {
      rt.out.note(
        `that grant was stored while this refresh token was being refreshed (an import of it, say), and ${PLATFORMS[platform].displayName} rotated it: the new refresh token is kept on that grant, the one given is used up`,
      );
    }
  }
  if (adopted.replaced.length) {
    const held = adopted.replaced.join(', ');
    const one = adopted.replaced.length === 1;
    rt.out.note(
      `this refresh token was held by ${held}, which ${one ? 'needs' : 'need'} a person: the new grant takes the place of that one (its tokens are destroyed); ${held} ${one ? 'stays' : 'stay'} needs_reauth until connected again`,
    );
    if (adopted.presentedKept) {
      rt.out.note(
        `the given refresh token was not sent to ${PLATFORMS[platform].displayName}: that grant held a newer one of the same consent (kept there when an earlier import or connections add failed after refreshing it), which was refreshed instead`,
      );
    }
  } else if (adopted.presentedKept) {
    rt.out.note(
      `the given refresh token was not sent to ${PLATFORMS[platform].displayName}: an earlier connections add of it failed after ${PLATFORMS[platform].displayName} rotated it, and kept the new one in the vault, which was refreshed instead`,
    );
  }
  rt.out.success(
    adopted.joined
      ? `connected ${added} through the grant already held`
      : `adopted the refresh token for ${added}`,
  );
}
