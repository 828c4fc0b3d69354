import { InvalidInputError, quoted } from '../errors.js';

/**
 * The four platforms as data: default endpoints, scopes, API versions and capabilities. Facts and
 * their sources are in shared/providers.md; everything version-like here is a default that an app
 * can override (`--api-version`, endpoint flags).
 */

export const PLATFORM_IDS = ['google_ads', 'microsoft_ads', 'linkedin_ads', 'reddit_ads'] as const;
export type PlatformId = (typeof PLATFORM_IDS)[number];

export interface PlatformCapabilities {
  /** The platform has keywords (search campaigns). */
  keywords: boolean;
  /** `true`: the platform validates a change without applying it; `simulated`: credvault checks locally. */
  validate_only: 'true' | 'simulated';
  /** How budgets are expressed on the wire. */
  budget_unit: 'micros' | 'currency' | 'decimal_string';
  developer_token: 'required' | 'optional' | 'none';
  pkce: boolean;
  refresh_token_rotation: boolean;
  /** Human description of how long a refresh token lives. */
  refresh_token_lifetime: string;
  /** Days a refresh token may sit unused before the platform drops it (null: no such limit known). */
  refresh_token_idle_days: number | null;
  /** Whether the refresh token ends at a fixed date that refreshing does not move. */
  refresh_token_fixed_expiry: boolean;
  access_token_lifetime: string;
  revocation_endpoint: boolean;
  /** The platform accepts any port on a loopback redirect URI that has none. */
  any_loopback_port: boolean;
  client_auth: 'client_secret_post' | 'client_secret_basic';
}

export interface PlatformDefaults {
  authorizeUrl: string;
  tokenUrl: string;
  revokeUrl: string | null;
  apiVersion: string;
  scopes: string[];
  /** Used when an app is added without --redirect-uri; null means the platform needs an exact registered URI. */
  redirectUri: string | null;
}

export interface PlatformInfo {
  id: PlatformId;
  displayName: string;
  defaults: PlatformDefaults;
  capabilities: PlatformCapabilities;
}

export const PLATFORMS: Record<PlatformId, PlatformInfo> = {
  google_ads: {
    id: 'google_ads',
    displayName: 'Google Ads',
    defaults: {
      authorizeUrl: 'https://accounts.google.com/o/oauth2/v2/auth',
      tokenUrl: 'https://oauth2.googleapis.com/token',
      revokeUrl: 'https://oauth2.googleapis.com/revoke',
      apiVersion: 'v26',
      scopes: ['https://www.googleapis.com/auth/adwords'],
      // A Desktop-app client accepts any port on 127.0.0.1.
      redirectUri: 'http://127.0.0.1',
    },
    capabilities: {
      keywords: true,
      validate_only: 'true',
      budget_unit: 'micros',
      developer_token: 'optional',
      pkce: true,
      refresh_token_rotation: false,
      refresh_token_lifetime: 'until revoked; dropped after 6 months unused (7 days for apps in Testing)',
      refresh_token_idle_days: 180,
      refresh_token_fixed_expiry: false,
      access_token_lifetime: '1h',
      revocation_endpoint: true,
      any_loopback_port: true,
      client_auth: 'client_secret_post',
    },
  },
  microsoft_ads: {
    id: 'microsoft_ads',
    displayName: 'Microsoft Advertising',
    defaults: {
      authorizeUrl: 'https://login.microsoftonline.com/common/oauth2/v2.0/authorize',
      tokenUrl: 'https://login.microsoftonline.com/common/oauth2/v2.0/token',
      revokeUrl: null,
      apiVersion: 'v13',
      scopes: ['https://ads.microsoft.com/msads.manage', 'offline_access'],
      // Microsoft ignores the port of a localhost redirect URI.
      redirectUri: 'http://localhost',
    },
    capabilities: {
      keywords: true,
      validate_only: 'simulated',
      budget_unit: 'currency',
      developer_token: 'required',
      pkce: true,
      refresh_token_rotation: true,
      refresh_token_lifetime: '90 days, renewed by each refresh (rotating)',
      refresh_token_idle_days: 90,
      refresh_token_fixed_expiry: false,
      access_token_lifetime: '60-90 min',
      revocation_endpoint: false,
      any_loopback_port: true,
      client_auth: 'client_secret_post',
    },
  },
  linkedin_ads: {
    id: 'linkedin_ads',
    displayName: 'LinkedIn Ads',
    defaults: {
      authorizeUrl: 'https://www.linkedin.com/oauth/v2/authorization',
      tokenUrl: 'https://www.linkedin.com/oauth/v2/accessToken',
      revokeUrl: 'https://www.linkedin.com/oauth/v2/revoke',
      // The newest version LinkedIn's recent-changes page lists (August 2026); none of the calls credvault
      // makes (adAccountUsers, adAccounts, the adCampaigns search and its budget update) changed since
      // 202601. Served at least a year from its month (doctor warns ahead of that).
      apiVersion: '202608',
      scopes: ['r_ads', 'rw_ads'],
      redirectUri: null,
    },
    capabilities: {
      keywords: false,
      validate_only: 'simulated',
      budget_unit: 'decimal_string',
      developer_token: 'none',
      pkce: false,
      refresh_token_rotation: false,
      refresh_token_lifetime: '365 days from first consent, not moved by refreshing (MDP partners only)',
      refresh_token_idle_days: null,
      refresh_token_fixed_expiry: true,
      access_token_lifetime: '60 days',
      revocation_endpoint: true,
      any_loopback_port: false,
      client_auth: 'client_secret_post',
    },
  },
  reddit_ads: {
    id: 'reddit_ads',
    displayName: 'Reddit Ads',
    defaults: {
      authorizeUrl: 'https://www.reddit.com/api/v1/authorize',
      tokenUrl: 'https://www.reddit.com/api/v1/access_token',
      revokeUrl: 'https://www.reddit.com/api/v1/revoke_token',
      apiVersion: 'v3',
      scopes: ['adsread', 'adsedit', 'read'],
      redirectUri: null,
    },
    capabilities: {
      keywords: false,
      validate_only: 'simulated',
      budget_unit: 'micros',
      developer_token: 'none',
      pkce: false,
      refresh_token_rotation: false,
      refresh_token_lifetime: 'until revoked (duration=permanent)',
      refresh_token_idle_days: null,
      refresh_token_fixed_expiry: false,
      access_token_lifetime: '1h',
      revocation_endpoint: true,
      any_loopback_port: false,
      client_auth: 'client_secret_basic',
    },
  },
};

/** Accepts `google_ads` and `google-ads`; anything else is exit 2 listing the valid names. */
export function parsePlatform(input: string): PlatformId {
  const normalized = input.trim().toLowerCase().replace(/-/g, '_');
  if ((PLATFORM_IDS as readonly string[]).includes(normalized)) return normalized as PlatformId;
  throw new InvalidInputError(`unknown platform ${quoted(input)}`, {
    hint: `Valid platforms: ${PLATFORM_IDS.join(', ')} (or the kebab forms ${PLATFORM_IDS.map((p) => p.replace(/_/g, '-')).join(', ')}).`,
  });
}

export function isPlatformId(value: string): value is PlatformId {
  return (PLATFORM_IDS as readonly string[]).includes(value);
}
