/**
 * Driving credvault's OAuth flows against the platform doubles: apps pointed at a double, a connect
 * whose printed URL a test client follows through the double's consent to credvault's callback.
 */

import type { ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { resolveConfig } from '../../src/config.js';
import { addApp, checkNewApp, parseAppFields } from '../../src/services/apps.js';
import { openContext } from '../../src/services/context.js';
import type { Double } from '../doubles/index.js';
import { REDDIT_TEST_USER_AGENT } from '../doubles/index.js';
import type { CliResult, TestVault } from './vault.js';

export type PlatformKey = 'google_ads' | 'microsoft_ads' | 'linkedin_ads' | 'reddit_ads';

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface AppSetup {
  label: string;
  clientId: string;
  clientSecret: string;
  developerToken: string | null;
  redirectUri: string;
}

/** The flags of `connections add` a test gives: the accounts, and a name or --json. */
export interface AddOptions {
  accounts: string[];
  name?: string;
  json?: boolean;
}

/**
 * `connections add PLATFORM --app LABEL --account … --refresh-token-file -` with the refresh token on
 * standard input, whatever it answers (adoptGrant, for one that must succeed).
 */
export function addConnection(
  vault: TestVault,
  platform: PlatformKey,
  appLabel: string,
  refreshToken: string,
  options: AddOptions,
): Promise<CliResult> {
  return vault.cli(
    [
      ...['connections', 'add', platform, '--app', appLabel],
      ...options.accounts.flatMap((account) => ['--account', account]),
      ...(options.name ? ['--name', options.name] : []),
      ...['--refresh-token-file', '-'],
      ...(options.json ? ['--json'] : []),
    ],
    { input: refreshToken },
  );
}

/**
 * Adopts a refresh token as connections, one per account; throws with credvault's stderr when it
 * does not exit 0.
 */
export async function adoptGrant(
  vault: TestVault,
  platform: PlatformKey,
  appLabel: string,
  refreshToken: string,
  options: AddOptions,
): Promise<CliResult> {
  const added = await addConnection(vault, platform, appLabel, refreshToken, options);
  if (added.code !== 0) throw new Error(`connections add exited ${added.code}: ${added.stderr}`);
  return added;
}

/**
 * Registers an app with credvault whose endpoints are the double's. Platforms with exact redirect URIs
 * (LinkedIn, Reddit) get a client registered on a free port, so parallel tests do not collide.
 *
 * It is a test's setup, not its subject (foundation.test.ts runs `apps add` itself): the app is added
 * in this process, through what `apps add --from-file` runs (parseAppFields, checkNewApp, addApp, and
 * its audit row), not by starting the binary, which on the embedded database costs a start of
 * PostgreSQL per call (more than a tenth of the embedded suite's time went to it).
 */
export async function addAppFor(
  vault: TestVault,
  platform: PlatformKey,
  double: Double<unknown, unknown>,
  options: { label?: string; public?: boolean; extra?: Record<string, unknown> } = {},
): Promise<AppSetup & { id: string }> {
  const label = options.label ?? `${platform.split('_')[0]}-app`;
  let client = double.defaultClient!;
  let redirectUri = client.redirectUris[0]!;
  if (platform === 'linkedin_ads' || platform === 'reddit_ads' || options.public) {
    redirectUri =
      platform === 'linkedin_ads' || platform === 'reddit_ads'
        ? `http://localhost:${await freePort()}/callback`
        : redirectUri;
    client = double.registerClient({
      clientId: `${label}-${Math.random().toString(36).slice(2, 10)}`,
      clientSecret: options.public ? null : `secret-${Math.random().toString(36).slice(2)}-${Date.now()}`,
      redirectUris: [redirectUri],
      public: options.public === true,
    });
  }
  const developerToken =
    platform === 'microsoft_ads' || platform === 'google_ads'
      ? `devtoken-${Math.random().toString(36).slice(2)}`
      : null;
  const file = {
    label,
    client_id: client.clientId,
    ...(client.clientSecret ? { client_secret: client.clientSecret } : {}),
    ...(developerToken ? { developer_token: developerToken } : {}),
    redirect_uri: redirectUri,
    authorize_url: double.endpoints.authorize,
    token_url: double.endpoints.token,
    ...(double.endpoints.revoke ? { revoke_url: double.endpoints.revoke } : {}),
    api_base_url: double.url,
    ...(platform === 'reddit_ads' ? { user_agent: REDDIT_TEST_USER_AGENT } : {}),
    ...options.extra,
  };
  const fields = parseAppFields(file);
  checkNewApp(platform, fields);
  // As the binary would: the vault's environment, its CREDVAULT_ACTOR the audit row's actor.
  const ctx = await openContext(resolveConfig({}, { ...vault.env } as NodeJS.ProcessEnv));
  const app = await addApp(ctx, platform, fields).finally(() => ctx.close());
  return {
    id: app.id,
    label,
    clientId: client.clientId,
    clientSecret: client.clientSecret ?? '',
    developerToken,
    redirectUri,
  };
}

/** Reads a child's stderr until a line that is a URL appears. */
function waitForUrl(child: ReturnType<TestVault['spawn']>, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(
      () => reject(new Error(`no authorization URL on stderr:\n${buffer}`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      const line = buffer.split('\n').find((l) => /^https?:\/\//.test(l.trim()));
      if (line) {
        clearTimeout(timer);
        child.stderr!.off('data', onData);
        resolve(line.trim());
      }
    };
    child.stderr!.on('data', onData);
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`credvault exited before printing a URL:\n${buffer}`));
    });
  });
}

/**
 * The consent alone: where the double's consent redirects the browser (a callback that may be on
 * another machine, for the paste flow), not followed. `callbackStatus` is 0: nobody was called back.
 */
export async function consentOnly(url: string): Promise<{ callbackStatus: number; callbackUrl: string }> {
  const consent = await fetch(url, { redirect: 'manual', headers: { 'user-agent': REDDIT_TEST_USER_AGENT } });
  const location = consent.headers.get('location');
  if (consent.status !== 302 || !location) {
    throw new Error(`the double did not redirect (HTTP ${consent.status}): ${await consent.text()}`);
  }
  return { callbackStatus: 0, callbackUrl: location };
}

/** A browser, minus the browser: follows the authorize URL through the double's consent redirect. */
export async function followConsent(url: string): Promise<{ callbackStatus: number; callbackUrl: string }> {
  const { callbackUrl: location } = await consentOnly(url);
  const callback = await fetch(location, { redirect: 'manual' });
  await callback.text();
  return { callbackStatus: callback.status, callbackUrl: location };
}

export interface ConnectRun {
  result: CliResult;
  authorizeUrl: string;
  callbackUrl: string;
  callbackStatus: number;
}

/** `credvault connect PLATFORM --no-browser …`, completed by following the printed URL. */
export async function connectViaDouble(
  vault: TestVault,
  platform: PlatformKey,
  args: string[] = [],
  options: {
    env?: Record<string, string>;
    beforeConsent?: (url: string) => Promise<void>;
    /**
     * How the "browser" gets from the authorize URL to the callback (default: one consent redirect);
     * it is given the connect process too, to see that it is still running.
     */
    follow?: (url: string, child: ChildProcess) => Promise<{ callbackStatus: number; callbackUrl: string }>;
    /** The paste flow: the callback URL is written to credvault's standard input, not requested. */
    paste?: boolean;
    /** false: without --json (the table on stdout, the notes on stderr). */
    json?: boolean;
  } = {},
): Promise<ConnectRun> {
  const child = vault.spawn(
    ['connect', platform, '--no-browser', ...(options.json === false ? [] : ['--json']), ...args],
    { env: options.env },
  );
  if (!options.paste) child.stdin!.end();
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
  const authorizeUrl = await waitForUrl(child);
  await options.beforeConsent?.(authorizeUrl);
  const { callbackStatus, callbackUrl } = await (
    options.follow ?? (options.paste ? consentOnly : followConsent)
  )(authorizeUrl, child);
  if (options.paste) child.stdin!.end(`${callbackUrl}\n`);
  const code = await exited;
  vault.printed.push(stdout, stderr);
  return { result: { code, stdout, stderr }, authorizeUrl, callbackUrl, callbackStatus };
}
