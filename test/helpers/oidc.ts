/**
 * An authorization server no one here wrote: panva's oidc-provider, configured strictly (PKCE where
 * the platform takes it, refresh-token rotation, one client authentication method per client). Login
 * and consent are answered by a small interaction handler, as a person clicking "Allow" would.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

export interface OidcClient {
  client_id: string;
  client_secret?: string;
  redirect_uris: string[];
  token_endpoint_auth_method: 'client_secret_post' | 'client_secret_basic' | 'none';
  application_type?: 'web' | 'native';
  pkce: boolean;
}

export interface OidcServer {
  issuer: string;
  endpoints: { authorize: string; token: string; revoke: string };
  /** Every token endpoint request, in order: grant type and whether it succeeded. */
  tokenCalls: Array<{ grantType: string; status: number }>;
  close(): Promise<void>;
}

export const OIDC_SCOPES = [
  'https://www.googleapis.com/auth/adwords',
  'https://ads.microsoft.com/msads.manage',
  'offline_access',
  'r_ads',
  'rw_ads',
  'adsread',
  'adsedit',
  'read',
];

export async function startOidcServer(clients: OidcClient[]): Promise<OidcServer> {
  const pkceClients = new Set(clients.filter((c) => c.pkce).map((c) => c.client_id));
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const provider = new Provider(issuer, {
    clients: clients.map(({ pkce: _pkce, ...client }) => ({
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      application_type: 'web',
      ...client,
    })),
    scopes: OIDC_SCOPES,
    pkce: { required: (_ctx, client) => pkceClients.has(client.clientId) },
    features: { revocation: { enabled: true }, devInteractions: { enabled: false } },
    // Every refresh rotates the refresh token; a used one coming back is refused and kills the grant.
    rotateRefreshToken: true,
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 300,
      Grant: 86_400,
      Interaction: 600,
      RefreshToken: 86_400,
      Session: 3600,
    },
    cookies: { keys: ['credvault-test-cookie-key-0123456789'] },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  });
  provider.on('server_error', (_ctx, error) => {
    // Surfaces configuration mistakes in the test output instead of a bare 500.
    console.error('oidc-provider server_error', error);
  });
  const tokenCalls: OidcServer['tokenCalls'] = [];
  provider.on('grant.success', (ctx) =>
    tokenCalls.push({ grantType: String(ctx.oidc.params?.grant_type), status: 200 }),
  );
  provider.on('grant.error', (ctx) =>
    tokenCalls.push({ grantType: String(ctx.oidc.params?.grant_type), status: 400 }),
  );
  const callback = provider.callback();

  /** The person at the consent screen: signs in as "ops" and allows what was asked. */
  async function interaction(req: IncomingMessage, res: ServerResponse) {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'login') {
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: 'ops' } },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    const grant = new provider.Grant({
      accountId: details.session!.accountId,
      clientId: String(details.params.client_id),
    });
    const missing = details.prompt.details.missingOIDCScope as string[] | undefined;
    if (missing?.length) grant.addOIDCScope(missing.join(' '));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  server.on('request', (req, res) => {
    if (req.url?.startsWith('/interaction/')) {
      interaction(req, res).catch((error) => {
        res.statusCode = 500;
        res.end(String(error));
      });
      return;
    }
    callback(req, res);
  });
  return {
    issuer,
    endpoints: {
      authorize: `${issuer}/auth`,
      token: `${issuer}/token`,
      revoke: `${issuer}/token/revocation`,
    },
    tokenCalls,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Follows redirects like a browser (keeping cookies) until one leaves the issuer; returns that URL. */
export async function browse(url: string, issuer: string): Promise<string> {
  const cookies = new Map<string, string>();
  let next = url;
  for (let hop = 0; hop < 20; hop++) {
    if (!next.startsWith(issuer)) return next;
    const response = await fetch(next, {
      redirect: 'manual',
      headers: { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') },
    });
    for (const header of response.headers.getSetCookie()) {
      const [pair] = header.split(';');
      const eq = pair!.indexOf('=');
      cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
    }
    const location = response.headers.get('location');
    if (!location)
      throw new Error(
        `oidc-provider stopped at ${next} with HTTP ${response.status}: ${await response.text()}`,
      );
    next = new URL(location, next).toString();
  }
  throw new Error('too many redirects');
}
