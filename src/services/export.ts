import type { Secret } from '../crypto/secret.js';
import * as appStore from '../db/store/apps.js';
import * as tokenStore from '../db/store/tokens.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { PLATFORMS, type PlatformId } from '../providers/catalog.js';
import { googleLoginCustomerId } from '../providers/platforms/google-ads.js';
import { recordAudit } from './audit.js';
import { resolveConnection } from './connections.js';
import type { ServiceContext } from './context.js';
import { openToken } from './grants.js';
import { assertEnabled, providerApp } from './provider-app.js';
import { getValidAccessToken, type ServedToken, type TokenRequest } from './tokens.js';

/**
 * The environment a program needs to call a platform with a connection: credvault's own variables,
 * plus the names the platform's official client libraries read. For Google Ads that includes the
 * refresh token and client secret (google-ads-python builds its own credentials from them), the one
 * place a refresh token leaves credvault, and only when asked for.
 */

export type EnvValue = string | Secret;

export interface CredentialExport {
  served: ServedToken;
  platform: PlatformId;
  vars: Array<[ExportedVariable, EnvValue]>;
}

/**
 * What `developer_token` / GOOGLE_ADS_DEVELOPER_TOKEN say for a Google app that has none (optional
 * since 2026-09-09, when Google made the header "optional and ignored"). google-ads-python still
 * refuses a configuration without the key: config.py `_REQUIRED_KEYS = ("developer_token",
 * "use_proto_plus")`, "A required field in the configuration data was not found". Imports read it
 * back as no developer token.
 */
export const GOOGLE_ADS_DEVELOPER_TOKEN_PLACEHOLDER = 'NONE-developer-token-optional-since-2026-09';

/** The Google Ads client library's configuration, as a google-ads.yaml or GOOGLE_ADS_* variables. */
export interface GoogleAdsConfig {
  developer_token: Secret | null;
  client_id: string;
  client_secret: Secret | null;
  refresh_token: Secret;
  login_customer_id: string | null;
}

async function googleAdsConfig(
  ctx: ServiceContext,
  served: ServedToken,
  purpose: string,
): Promise<GoogleAdsConfig> {
  const connection = served.connection;
  return ctx.transaction(async (tx) => {
    const app = await appStore.getById(tx, connection.appId);
    const grant = connection.tokenId ? await tokenStore.get(tx, connection.tokenId) : null;
    if (!app || !grant) throw new NotFoundError('the connection lost its app or tokens meanwhile');
    const papp = await providerApp(ctx, tx, app, { secrets: true });
    const refreshToken = await openToken(ctx, grant, 'refresh');
    if (!refreshToken) throw new NotFoundError('this connection has no refresh token');
    await recordAudit(tx, ctx.actor, {
      action: 'credentials.export',
      targetType: 'connection',
      targetId: connection.id,
      connectionId: connection.id,
      outcome: 'success',
      detail: {
        purpose,
        revealed: ['refresh_token', 'client_secret', ...(papp.developerToken ? ['developer_token'] : [])],
      },
    });
    return {
      developer_token: papp.developerToken,
      client_id: papp.clientId,
      client_secret: papp.clientSecret,
      refresh_token: refreshToken,
      login_customer_id: googleLoginCustomerId(papp, connection.details),
    };
  });
}

/**
 * Every variable exportCredentials may set, whatever the platform (keep it in step). `exec` takes them
 * out of what its child inherits before it sets the connection's: one left in the caller's environment
 * (another account's GOOGLE_ADS_LOGIN_CUSTOMER_ID, another app's client secret) would otherwise stand
 * beside this connection's credentials wherever this connection has no value of its own.
 */
export const EXPORTED_VARIABLES = [
  'CREDVAULT_ACCESS_TOKEN',
  'CREDVAULT_TOKEN_TYPE',
  'CREDVAULT_EXPIRES_AT',
  'CREDVAULT_CONNECTION_ID',
  'CREDVAULT_PLATFORM',
  'CREDVAULT_ACCOUNT_ID',
  'GOOGLE_ADS_DEVELOPER_TOKEN',
  'GOOGLE_ADS_CLIENT_ID',
  'GOOGLE_ADS_CLIENT_SECRET',
  'GOOGLE_ADS_REFRESH_TOKEN',
  'GOOGLE_ADS_LOGIN_CUSTOMER_ID',
  'GOOGLE_ADS_CUSTOMER_ID',
  'GOOGLE_ADS_USE_PROTO_PLUS',
  'MICROSOFT_ADS_CUSTOMER_ID',
  'MICROSOFT_ADS_ACCOUNT_ID',
  'MICROSOFT_ADS_DEVELOPER_TOKEN',
  'LINKEDIN_AD_ACCOUNT_ID',
  'LINKEDIN_VERSION',
  'REDDIT_AD_ACCOUNT_ID',
  'REDDIT_USER_AGENT',
] as const;

/**
 * Variables the Google Ads client libraries read that would have `exec`'s child act as another
 * identity, for another account, or from another configuration than the connection's (providers.md):
 * a service account's key file and the user it impersonates, application default credentials, a
 * linked customer, and a configuration file that env loading reads instead of the variables. `exec`
 * takes them out of what its child inherits, as EXPORTED_VARIABLES. Settings that change no identity
 * (GOOGLE_ADS_ENDPOINT, GOOGLE_ADS_LOGGING, GOOGLE_ADS_HTTP_PROXY) stay the caller's.
 */
export const FOREIGN_VARIABLES = [
  'GOOGLE_ADS_JSON_KEY_FILE_PATH',
  'GOOGLE_ADS_PATH_TO_PRIVATE_KEY_FILE',
  'GOOGLE_ADS_IMPERSONATED_EMAIL',
  'GOOGLE_ADS_DELEGATED_ACCOUNT',
  'GOOGLE_ADS_USE_APPLICATION_DEFAULT_CREDENTIALS',
  'GOOGLE_ADS_LINKED_CUSTOMER_ID',
  'GOOGLE_ADS_CONFIGURATION_FILE_PATH',
] as const;

/** A name exportCredentials sets: one EXPORTED_VARIABLES lists (the compiler sees to it). */
export type ExportedVariable = (typeof EXPORTED_VARIABLES)[number];

export async function exportCredentials(
  ctx: ServiceContext,
  ref: string,
  request: TokenRequest,
): Promise<CredentialExport> {
  // What is printed needs the app's own settings on Google and Microsoft: a disabled app stops the
  // command before a token is served (and recorded as served) for nothing to be printed.
  const wanted = await resolveConnection(ctx.db, ref);
  if (wanted.platform === 'google_ads' || wanted.platform === 'microsoft_ads') {
    const app = await appStore.getById(ctx.db, wanted.appId);
    if (app) assertEnabled(app);
  }
  const served = await getValidAccessToken(ctx, ref, request);
  const c = served.connection;
  const platform = c.platform as PlatformId;
  const vars: Array<[ExportedVariable, EnvValue]> = [
    ['CREDVAULT_ACCESS_TOKEN', served.accessToken],
    ['CREDVAULT_TOKEN_TYPE', served.tokenType],
    ['CREDVAULT_EXPIRES_AT', served.expiresAt?.toISOString() ?? ''],
    ['CREDVAULT_CONNECTION_ID', c.id],
    ['CREDVAULT_PLATFORM', platform],
    ['CREDVAULT_ACCOUNT_ID', c.externalAccountId],
  ];
  if (platform === 'google_ads') {
    const config = await googleAdsConfig(ctx, served, request.purpose);
    vars.push([
      'GOOGLE_ADS_DEVELOPER_TOKEN',
      config.developer_token ?? GOOGLE_ADS_DEVELOPER_TOKEN_PLACEHOLDER,
    ]);
    vars.push(['GOOGLE_ADS_CLIENT_ID', config.client_id]);
    if (config.client_secret) vars.push(['GOOGLE_ADS_CLIENT_SECRET', config.client_secret]);
    vars.push(['GOOGLE_ADS_REFRESH_TOKEN', config.refresh_token]);
    if (config.login_customer_id) vars.push(['GOOGLE_ADS_LOGIN_CUSTOMER_ID', config.login_customer_id]);
    vars.push(['GOOGLE_ADS_CUSTOMER_ID', c.externalAccountId]);
    // google-ads-python refuses a configuration without it.
    vars.push(['GOOGLE_ADS_USE_PROTO_PLUS', 'True']);
  } else if (platform === 'microsoft_ads') {
    const app = await appStore.getById(ctx.db, c.appId);
    if (c.details.customer_id) vars.push(['MICROSOFT_ADS_CUSTOMER_ID', c.details.customer_id]);
    vars.push(['MICROSOFT_ADS_ACCOUNT_ID', c.externalAccountId]);
    if (app) {
      const papp = await ctx.transaction(async (tx) => {
        const opened = await providerApp(ctx, tx, app, { secrets: true });
        if (opened.developerToken) {
          await recordAudit(tx, ctx.actor, {
            action: 'credentials.export',
            targetType: 'connection',
            targetId: c.id,
            connectionId: c.id,
            outcome: 'success',
            detail: { purpose: request.purpose, revealed: ['developer_token'] },
          });
        }
        return opened;
      });
      if (papp.developerToken) vars.push(['MICROSOFT_ADS_DEVELOPER_TOKEN', papp.developerToken]);
    }
  } else if (platform === 'linkedin_ads') {
    const app = await appStore.getById(ctx.db, c.appId);
    vars.push(['LINKEDIN_AD_ACCOUNT_ID', c.externalAccountId]);
    vars.push(['LINKEDIN_VERSION', app?.apiVersion ?? PLATFORMS.linkedin_ads.defaults.apiVersion]);
  } else {
    const app = await appStore.getById(ctx.db, c.appId);
    vars.push(['REDDIT_AD_ACCOUNT_ID', c.externalAccountId]);
    if (app?.userAgent) vars.push(['REDDIT_USER_AGENT', app.userAgent]);
  }
  return { served, platform, vars };
}

/** `token get --format google-ads-yaml`: a google-ads.yaml the official client accepts. */
export async function googleAdsYaml(
  ctx: ServiceContext,
  ref: string,
  request: TokenRequest,
): Promise<string> {
  const connection = await resolveConnection(ctx.db, ref);
  if (connection.platform !== 'google_ads') {
    throw new InvalidInputError(
      `--format google-ads-yaml is for Google Ads connections, not ${connection.platform}`,
    );
  }
  const served = await getValidAccessToken(ctx, connection.id, request);
  const config = await googleAdsConfig(ctx, served, request.purpose);
  // yaml is CommonJS for Node: its named exports sit on `default` once bundled.
  const yaml = (await import('yaml')) as typeof import('yaml') & { default?: typeof import('yaml') };
  const stringify = yaml.stringify ?? yaml.default!.stringify;
  return stringify({
    developer_token: config.developer_token?.reveal() ?? GOOGLE_ADS_DEVELOPER_TOKEN_PLACEHOLDER,
    client_id: config.client_id,
    ...(config.client_secret ? { client_secret: config.client_secret.reveal() } : {}),
    refresh_token: config.refresh_token.reveal(),
    ...(config.login_customer_id ? { login_customer_id: config.login_customer_id } : {}),
    use_proto_plus: true,
  });
}
