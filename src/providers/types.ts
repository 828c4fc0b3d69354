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
  /**
   * `consentedScope`: the scope the grant holds, as stored from the platform's answers (null when
   * unknown): a platform that takes `scope` on a refresh (Microsoft) is asked for that, not for the
   * app's scopes of today, which may hold more than this grant was ever given.
   */
  refresh(
    app: ProviderApp,
    refreshToken: Secret,
    options: CallOptions,
    consentedScope?: string | null,
  ): Promise<TokenResult>;
  revoke(
    app: ProviderApp,
    tokens: { refreshToken: Secret | null; accessToken: Secret | null },
    options: CallOptions,
  ): Promise<RevokeOutcome>;
  discoverAccounts(app: ProviderApp, accessToken: Secret, options: CallOptions): Promise<AdAccount[]>;
}

/** The ad account a campaign call is for, with what the connection knows about it. */
export interface CampaignTarget {
  /** Google customer id, Microsoft account id, LinkedIn account id, Reddit ad account id. */
  accountId: string;
  /** The account's currency, when the connection knows it (it is read from the platform otherwise). */
  currency: string | null;
  /** Platform extras kept with the connection: Microsoft's customer_id, Google's login_customer_id. */
  details: Record<string, string>;
  /** The vault's configuration environment (the library's `env`), for platform settings read from it. */
  env?: NodeJS.ProcessEnv;
}

/** Where a campaign's daily budget lives. */
export type BudgetLevel = 'campaign' | 'campaign_budget' | 'ad_group' | 'none';

export interface Campaign {
  id: string;
  name: string;
  /** The platform's own status word (ENABLED, Active, ACTIVE, PAUSED…). */
  status: string;
  /** The daily budget in micros of `currency`; null when the campaign has none (a lifetime budget…). */
  dailyBudgetMicros: bigint | null;
  currency: string | null;
  budget: {
    level: BudgetLevel;
    /** The budget object's id (Google's campaign budget, Reddit's ad group), when it has its own. */
    id: string | null;
    /** Shared by other campaigns: changing it changes them too (Google), or it cannot be changed here (Microsoft). */
    shared: boolean;
    /** How many campaigns use a shared budget, when the platform says. */
    sharedBy: number | null;
    /** Why the budget cannot be set through the campaign, when it cannot. */
    note: string | null;
  };
}

export interface BudgetChange {
  campaignId: string;
  dailyBudgetMicros: bigint;
  /** Validate without applying: the platform's own dry run, or credvault's checks where it has none. */
  validateOnly: boolean;
  /** Change a budget shared with other campaigns (Google), knowing it changes them too. */
  allowShared?: boolean;
}

export interface BudgetChangeResult {
  campaign: Campaign;
  previousMicros: bigint | null;
  newMicros: bigint;
  /** applied; validated (by the platform, nothing changed); simulated (checked here, nothing sent). */
  mode: 'applied' | 'validated' | 'simulated';
  /** What the write changed (or would): the campaign, a campaign budget, an ad group. */
  target: { level: BudgetLevel; id: string };
}

/** Campaign operations: the one interface application code uses across platforms. */
export interface CampaignOps {
  list(
    app: ProviderApp,
    accessToken: Secret,
    target: CampaignTarget,
    options: CallOptions,
  ): Promise<Campaign[]>;
  setDailyBudget(
    app: ProviderApp,
    accessToken: Secret,
    target: CampaignTarget,
    change: BudgetChange,
    options: CallOptions,
  ): Promise<BudgetChangeResult>;
}
