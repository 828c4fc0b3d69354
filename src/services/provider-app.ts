import type { Db } from '../db/client.js';
import type { AppRecord } from '../db/store/apps.js';
import * as appStore from '../db/store/apps.js';
import { ConflictError, NotFoundError } from '../errors.js';
import { PLATFORMS, type PlatformId } from '../providers/catalog.js';
import type { ProviderApp } from '../providers/types.js';
import { secretSlot } from './apps.js';
import type { ServiceContext } from './context.js';

export function assertEnabled(app: Pick<AppRecord, 'enabled' | 'platform' | 'label'>): void {
  if (!app.enabled) {
    throw new ConflictError(`app ${app.platform}/${app.label} is disabled`, {
      hint: `Enable it with \`credvault apps enable ${app.platform}/${app.label}\`.`,
    });
  }
}

/**
 * An app as a provider needs it: endpoints resolved (the app's overrides, else the platform's
 * defaults), API version resolved, secrets decrypted. The caller audits the decryption.
 */
export async function providerApp(
  ctx: ServiceContext,
  db: Db,
  app: AppRecord,
  options: { secrets: boolean },
): Promise<ProviderApp> {
  assertEnabled(app);
  const keyring = options.secrets ? await ctx.keyring() : null;
  const stored = options.secrets
    ? await appStore.getEncryptedSecrets(db, app.id)
    : { clientSecretEnc: null, developerTokenEnc: null };
  if (!stored) throw new NotFoundError(`app ${app.id} no longer exists`);
  const platform = app.platform as PlatformId;
  const defaults = PLATFORMS[platform].defaults;
  return {
    id: app.id,
    platform,
    label: app.label,
    clientId: app.clientId,
    clientSecret: keyring
      ? await keyring.decryptOptional(stored.clientSecretEnc, secretSlot(app.id, 'client_secret_enc'))
      : null,
    developerToken: keyring
      ? await keyring.decryptOptional(stored.developerTokenEnc, secretSlot(app.id, 'developer_token_enc'))
      : null,
    redirectUri: app.redirectUri,
    scopes: app.scopes.length ? app.scopes : defaults.scopes,
    loginCustomerId: app.loginCustomerId,
    userAgent: app.userAgent,
    apiVersion: app.apiVersion ?? defaults.apiVersion,
    endpoints: {
      authorize: app.authorizeUrl ?? defaults.authorizeUrl,
      token: app.tokenUrl ?? defaults.tokenUrl,
      revoke: app.revokeUrl ?? defaults.revokeUrl,
      apiBase: app.apiBaseUrl,
    },
  };
}

/** The app's secrets providerApp decrypted for a call (a public client has no client secret). */
export function decryptedFor(opened: ProviderApp): string[] {
  return [
    ...(opened.clientSecret ? ['client_secret'] : []),
    ...(opened.developerToken ? ['developer_token'] : []),
  ];
}
