import type { Secret } from '../crypto/secret.js';
import type { PlatformCapabilities, PlatformId, PlatformInfo } from './catalog.js';

/** An app as a provider sees it: endpoints resolved (overrides or the platform's defaults), secrets opened. */
export interface ProviderApp {
  id: string;
  platform: PlatformId;
  label: string;
  clientId: string;
  clientSecret: Secret | null;
  developerToken: Secret | null;
  redirectUri: string;
  scopes: string[];
  loginCustomerId: string | null;
  userAgent: string | null;
  apiVersion: string;
  endpoints: {
    authorize: string;
    token: string;
    revoke: string | null;
    /** null: the platform's default hosts. */
    apiBase: string | null;
  };
}

export interface TokenResult {
  accessToken: Secret;
  /** null when the platform sent none (keep the stored one). */
  refreshToken: Secret | null;
  tokenType: string;
  expiresAt: Date | null;
  /** An absolute end for the refresh token, when the platform says (LinkedIn, Google Testing apps). */
  refreshTokenExpiresAt: Date | null;
  scope: string | null;
}

export interface AdAccount {
  id: string;
  name: string | null;
  currency: string | null;
  /** Platform extras kept with the connection (Microsoft's customer id, Google's login customer id…). */
  details: Record<string, string>;
}

export interface CallOptions {
  signal: AbortSignal;
}

export interface AuthorizationRequest {
  state: string;
  redirectUri: string;
  /** S256 challenge, when the platform takes PKCE. */
  codeChallenge: string | null;
}

export interface CodeExchange {
  /** The callback's query parameters. */
  callback: URLSearchParams;
  /** The state the caller matched against its single-use record. */
  state: string;
  redirectUri: string;
  codeVerifier: string | null;
}

export type RevokeOutcome = 'revoked' | 'no_endpoint';

export interface Provider {
  readonly id: PlatformId;
  readonly info: PlatformInfo;
  readonly capabilities: PlatformCapabilities;
  /** Where a person removes the app's access by hand (for platforms without a revocation endpoint). */
  readonly consentPage: string;
  authorizationUrl(app: ProviderApp, request: AuthorizationRequest): string;
  exchangeCode(app: ProviderApp, exchange: CodeExchange, options: CallOptions): Promise<TokenResult>;
  refresh(app: ProviderApp, refreshToken: Secret, options: CallOptions): Promise<TokenResult>;
  revoke(
    app: ProviderApp,
    tokens: { refreshToken: Secret | null; accessToken: Secret | null },
    options: CallOptions,
  ): Promise<RevokeOutcome>;
  discoverAccounts(app: ProviderApp, accessToken: Secret, options: CallOptions): Promise<AdAccount[]>;
}
