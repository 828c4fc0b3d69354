/**
 * Platform doubles for tests: `startGoogleDouble()`, `startMicrosoftDouble()`, `startLinkedInDouble()`,
 * `startRedditDouble()`, or all four with `startAllDoubles()`. Each answers on http://127.0.0.1:PORT with
 * the production paths of its platform's OAuth server and account APIs.
 */
import { type GoogleDouble, type GoogleDoubleOptions, startGoogleDouble } from './google.js';
import { type LinkedInDouble, type LinkedInDoubleOptions, startLinkedInDouble } from './linkedin.js';
import { type MicrosoftDouble, type MicrosoftDoubleOptions, startMicrosoftDouble } from './microsoft.js';
import { type RedditDouble, type RedditDoubleOptions, startRedditDouble } from './reddit.js';

export type {
  AccessTokenRecord,
  AuthorizationCode,
  ClientRegistration,
  CommonDoubleOptions,
  ConsentMode,
  FaultScope,
  FaultSpec,
  GrantRecord,
  IssuedGrant,
  IssueGrantOptions,
  Platform,
  RecordedRequest,
  RefreshTokenRecord,
  RegisteredClient,
  Reply,
  RouteContext,
  RouteHandler,
} from './common.js';
export { Double, empty, Faults, html, json, pkceS256, redirect, text } from './common.js';
export type {
  GaqlResource,
  GaqlRow,
  GoogleAccounts,
  GoogleAdsError,
  GoogleBudgetWrite,
  GoogleCampaign,
  GoogleCampaignBudget,
  GoogleCampaignStatus,
  GoogleCustomer,
  GoogleDoubleOptions,
  GoogleQuotaFault,
  GoogleSettings,
} from './google.js';
export {
  addGoogleCampaign,
  checkGoogleAdsCall,
  exhaustGoogleAdsQuota,
  GOOGLE_ADWORDS_SCOPE,
  GOOGLE_CURRENCY_MINIMUM_UNIT_MICROS,
  GOOGLE_DEFAULT_ACCOUNTS,
  GOOGLE_DEFAULT_CLIENT,
  type GoogleDouble,
  googleAdsFailure,
  googleQuotaFailure,
  queryGaql,
  runGaql,
  startGoogleDouble,
} from './google.js';
export type {
  LinkedInAccounts,
  LinkedInAdAccount,
  LinkedInDoubleOptions,
  LinkedInSettings,
} from './linkedin.js';
export {
  checkLinkedInApiCall,
  LINKEDIN_DEFAULT_CLIENT,
  type LinkedInDouble,
  startLinkedInDouble,
} from './linkedin.js';
export type {
  MicrosoftAccount,
  MicrosoftAccounts,
  MicrosoftDoubleOptions,
  MicrosoftSettings,
  MicrosoftUser,
} from './microsoft.js';
export {
  adApiFault,
  checkMicrosoftApiCall,
  MICROSOFT_ADS_SCOPE,
  MICROSOFT_DEFAULT_CLIENT,
  type MicrosoftDouble,
  startMicrosoftDouble,
} from './microsoft.js';
export type {
  RedditAccounts,
  RedditAdAccount,
  RedditAdGroup,
  RedditAdsHooks,
  RedditAppliedWrite,
  RedditCampaign,
  RedditConfiguredStatus,
  RedditDoubleOptions,
  RedditFieldError,
  RedditGoalType,
  RedditObjective,
  RedditSettings,
  RedditThrottleOptions,
} from './reddit.js';
export {
  checkRedditApiCall,
  REDDIT_ADS_API_PREFIX,
  REDDIT_DEFAULT_ACCOUNTS,
  REDDIT_DEFAULT_CLIENT,
  REDDIT_SCOPES,
  REDDIT_SEED,
  REDDIT_TEST_USER_AGENT,
  type RedditDouble,
  redditAdGroup,
  redditAdsError,
  redditCampaign,
  redditPage,
  startRedditDouble,
} from './reddit.js';

export interface AllDoubles {
  google: GoogleDouble;
  microsoft: MicrosoftDouble;
  linkedin: LinkedInDouble;
  reddit: RedditDouble;
  close(): Promise<void>;
}

export interface AllDoublesOptions {
  google?: GoogleDoubleOptions;
  microsoft?: MicrosoftDoubleOptions;
  linkedin?: LinkedInDoubleOptions;
  reddit?: RedditDoubleOptions;
}

/** Starts the four doubles; `close()` stops them all. */
export async function startAllDoubles(options: AllDoublesOptions = {}): Promise<AllDoubles> {
  const [google, microsoft, linkedin, reddit] = await Promise.all([
    startGoogleDouble(options.google),
    startMicrosoftDouble(options.microsoft),
    startLinkedInDouble(options.linkedin),
    startRedditDouble(options.reddit),
  ]);
  return {
    google,
    microsoft,
    linkedin,
    reddit,
    async close() {
      await Promise.all([google.close(), microsoft.close(), linkedin.close(), reddit.close()]);
    },
  };
}
