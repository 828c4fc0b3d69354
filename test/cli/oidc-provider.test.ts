import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectViaDouble, freePort, type PlatformKey } from '../helpers/flows.js';
import { browse, type OidcServer, startOidcServer } from '../helpers/oidc.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { createVault, type TestVault } from '../helpers/vault.js';

/**
 * The connect/refresh/revoke flow against oidc-provider instead of our own doubles: a server no one
 * here wrote, configured with each platform's client authentication method, PKCE where the platform
 * takes it, and rotating refresh tokens whose reuse kills the grant.
 */

interface Case {
  platform: PlatformKey;
  auth: 'client_secret_post' | 'client_secret_basic';
  pkce: boolean;
  redirect: (port: number) => string;
  native: boolean;
  account: string;
}

const CASES: Case[] = [
  {
    platform: 'google_ads',
    auth: 'client_secret_post',
    pkce: true,
    redirect: () => 'http://127.0.0.1',
    native: true,
    account: '1234567890',
  },
  {
    platform: 'microsoft_ads',
    auth: 'client_secret_post',
    pkce: true,
    redirect: () => 'http://127.0.0.1',
    native: true,
    account: '987',
  },
  {
    platform: 'linkedin_ads',
    auth: 'client_secret_post',
    pkce: false,
    redirect: (p) => `http://localhost:${p}/callback`,
    native: false,
    account: '5101',
  },
  {
    platform: 'reddit_ads',
    auth: 'client_secret_basic',
    pkce: false,
    redirect: (p) => `http://localhost:${p}/callback`,
    native: false,
    account: 'a2_xyz',
  },
];

let server: OidcServer;
const setups = new Map<PlatformKey, { clientId: string; secret: string; redirectUri: string }>();

beforeAll(async () => {
  for (const c of CASES) {
    setups.set(c.platform, {
      clientId: `oidc-${c.platform.replace('_', '')}`,
      secret: `oidc-secret-${c.platform}-${Date.now()}`,
      redirectUri: c.redirect(await freePort()),
    });
  }
  server = await startOidcServer(
    CASES.map((c) => {
      const s = setups.get(c.platform)!;
      return {
        client_id: s.clientId,
        client_secret: s.secret,
        redirect_uris: [s.redirectUri],
        token_endpoint_auth_method: c.auth,
        application_type: c.native ? 'native' : 'web',
        pkce: c.pkce,
      };
    }),
  );
});
afterAll(() => server.close());

const vaults: TestVault[] = [];
afterEach(async () => {
  await Promise.all(vaults.splice(0).map((v) => v.destroy()));
});

describe.each(CASES)('against oidc-provider, as $platform', ({ platform, account, pkce }) => {
  it('connects, refreshes twice through rotation, and revokes', async () => {
    const v = await createVault();
    vaults.push(v);
    const setup = setups.get(platform)!;
    const app = {
      label: 'oidc',
      client_id: setup.clientId,
      client_secret: setup.secret,
      redirect_uri: setup.redirectUri,
      authorize_url: server.endpoints.authorize,
      token_url: server.endpoints.token,
      revoke_url: server.endpoints.revoke,
      // No ad API here: account discovery fails and --account is taken as given.
      api_base_url: 'http://127.0.0.1:9',
      ...(platform === 'microsoft_ads' || platform === 'google_ads'
        ? { developer_token: 'oidc-dev-token' }
        : {}),
      // oidc-provider follows OpenID Connect and drops offline_access without prompt=consent (Microsoft
      // does not); it issues refresh tokens anyway, so the scope sent on every refresh is msads.manage.
      ...(platform === 'microsoft_ads' ? { scopes: ['https://ads.microsoft.com/msads.manage'] } : {}),
    };
    expect(
      (await v.cli(['apps', 'add', platform, '--from-file', '-'], { input: JSON.stringify(app) })).code,
    ).toBe(0);
    const calls = server.tokenCalls.length;
    const run = await connectViaDouble(v, platform, ['--account', account, '--name', 'oidc-conn'], {
      env: { CREDVAULT_HTTP_TIMEOUT: '3' },
      follow: async (url) => {
        expect(new URL(url).searchParams.has('code_challenge')).toBe(pkce);
        const callbackUrl = await browse(url, server.issuer);
        const response = await fetch(callbackUrl);
        await response.text();
        return { callbackStatus: response.status, callbackUrl };
      },
    });
    expect(run.result.code, run.result.stderr).toBe(0);
    expect(run.result.stderr).toContain('could not list the accounts');
    expect(server.tokenCalls.slice(calls)).toEqual([{ grantType: 'authorization_code', status: 200 }]);

    const token = await v.cli(['token', 'get', 'oidc-conn'], { secretOutput: true });
    expect(token.code, token.stderr).toBe(0);
    expect(token.stdout.trim().length).toBeGreaterThan(20);
    for (let i = 0; i < 2; i++) {
      const refreshed = await v.cli(['connections', 'refresh', 'oidc-conn']);
      expect(refreshed.code, refreshed.stderr).toBe(0);
    }
    // Two refreshes in a row only work if each rotated refresh token was stored before the next.
    expect(server.tokenCalls.slice(calls + 1)).toEqual([
      { grantType: 'refresh_token', status: 200 },
      { grantType: 'refresh_token', status: 200 },
    ]);
    const revoked = await v.json<{ platform: string }>(['connections', 'revoke', 'oidc-conn']);
    expect(revoked.platform).toBe(platform === 'microsoft_ads' ? 'no_endpoint' : 'revoked');
    expect((await v.cli(['token', 'get', 'oidc-conn'])).code).toBe(4);
    await expectNoSecretsLeaked(v, [setup.secret]);
  });
});
