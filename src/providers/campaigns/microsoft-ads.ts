import type { Secret } from '../../crypto/secret.js';
import { InvalidInputError } from '../../errors.js';
import { apiUrl } from '../authorize.js';
import { ProviderError } from '../errors.js';
import { type ApiRequest, apiRequest } from '../http.js';
import { microsToNumber, numberToMicros } from '../money.js';
import { microsoftHeaders, microsoftServiceBase, readMicrosoftError } from '../platforms/microsoft-ads.js';
import type { CallOptions, Campaign, CampaignOps, CampaignTarget, ProviderApp } from '../types.js';
import { assertSettable, checkDailyBudget, findCampaign, simulated } from './common.js';

/**
 * Microsoft Advertising, Campaign Management v13 over REST: `Campaigns/QueryByAccountId` (all at once,
 * the operation has no paging; without CampaignType only Search campaigns come back, so every type is
 * asked for) and `PUT Campaigns` with DailyBudget, a double in the account's currency. There is no dry
 * run: a validate-only change is checked here and not sent. A campaign on a shared budget cannot take
 * a DailyBudget (CampaignServiceCannotUpdateSharedBudget): the shared budget's Amount must change.
 */

/**
 * The campaign types asked for: the v13 CampaignType value set, space-separated as the flags enum is
 * written in SOAP. The REST JSON form of several flags is [unconfirmed] (providers.md §2.C), so the
 * setting CREDVAULT_MICROSOFT_CAMPAIGN_TYPES, when set, is sent instead, as it is.
 */
const MICROSOFT_CAMPAIGN_TYPES = 'Search Shopping DynamicSearchAds Audience Hotel PerformanceMax';

function campaignTypes(env: NodeJS.ProcessEnv = process.env): string {
  return env.CREDVAULT_MICROSOFT_CAMPAIGN_TYPES?.trim() || MICROSOFT_CAMPAIGN_TYPES;
}

interface BingCampaign {
  Id?: string | number;
  Name?: string;
  Status?: string;
  BudgetType?: string | null;
  DailyBudget?: number | null;
  BudgetId?: string | number | null;
  CampaignType?: string;
}

interface BingBatchError {
  Code?: number;
  ErrorCode?: string;
  Message?: string;
  Index?: number;
}

/** A Microsoft Advertising REST call, its faults read (throttling with Microsoft's documented wait). */
async function call<T>(
  app: ProviderApp,
  token: Secret,
  request: Omit<ApiRequest, 'secrets' | 'readError'>,
): Promise<T | null> {
  const { body } = await apiRequest<T>({
    ...request,
    secrets: [token.reveal(), app.developerToken?.reveal()],
    readError: readMicrosoftError,
  });
  return body ?? null;
}

/**
 * Campaign Management headers: DeveloperToken and Authorization, CustomerId (the customer operated
 * from) and CustomerAccountId (the ad account, equal to the body's AccountId).
 */
function campaignHeaders(app: ProviderApp, token: Secret, target: CampaignTarget): Record<string, string> {
  const customerId = target.details.customer_id;
  if (!customerId) {
    throw new InvalidInputError(
      `the connection to Microsoft Advertising account ${target.accountId} does not know its customer id`,
      {
        hint: 'Connect it again (`credvault connect microsoft_ads`) so that credvault reads it.',
      },
    );
  }
  return { ...microsoftHeaders(app, token), customerid: customerId, customeraccountid: target.accountId };
}

function campaignUrl(app: ProviderApp, path: string): string {
  return apiUrl(microsoftServiceBase(app, 'campaign'), `/CampaignManagement/${app.apiVersion}${path}`);
}

/**
 * The account's currency: the connection's (read when it was connected), else Customer Management's
 * SearchAccounts by AccountId (CustomerId/CustomerAccountId do not apply to Customer Management).
 */
async function accountCurrency(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<string | null> {
  if (target.currency) return target.currency;
  const body = await call<{ Accounts?: Array<{ Id?: string | number; CurrencyCode?: string }> | null }>(
    app,
    token,
    {
      method: 'POST',
      url: apiUrl(
        microsoftServiceBase(app, 'clientcenter'),
        `/CustomerManagement/${app.apiVersion}/Accounts/Search`,
      ),
      headers: microsoftHeaders(app, token),
      json: {
        Predicates: [{ Field: 'AccountId', Operator: 'Equals', Value: target.accountId }],
        PageInfo: { Index: 0, Size: 1 },
      },
      signal: options.signal,
      what: `reading Microsoft Advertising account ${target.accountId}`,
    },
  );
  const account = body?.Accounts?.find((a) => String(a.Id) === target.accountId);
  return account?.CurrencyCode ?? null;
}

async function list(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<Campaign[]> {
  const headers = campaignHeaders(app, token, target);
  const [currency, body] = await Promise.all([
    accountCurrency(app, token, target, options),
    call<{ Campaigns?: BingCampaign[] | null }>(app, token, {
      method: 'POST',
      url: campaignUrl(app, '/Campaigns/QueryByAccountId'),
      headers,
      json: {
        AccountId: target.accountId,
        CampaignType: campaignTypes(target.env),
        ReturnAdditionalFields: null,
      },
      signal: options.signal,
      what: `listing the campaigns of Microsoft Advertising account ${target.accountId}`,
    }),
  ]);
  return (body?.Campaigns ?? []).map((c) => {
    const budgetId = c.BudgetId === null || c.BudgetId === undefined ? null : String(c.BudgetId);
    return {
      id: String(c.Id ?? ''),
      name: c.Name ?? '',
      status: c.Status ?? 'Unknown',
      // With a shared budget this is the shared budget's amount.
      dailyBudgetMicros: typeof c.DailyBudget === 'number' ? numberToMicros(c.DailyBudget) : null,
      currency,
      budget: budgetId
        ? {
            level: 'campaign' as const,
            id: budgetId,
            shared: true,
            sharedBy: null,
            note: `on shared budget ${budgetId}, which can only be changed as a budget (Microsoft Advertising: Shared library › Budgets)`,
          }
        : { level: 'campaign' as const, id: null, shared: false, sharedBy: null, note: null },
    };
  });
}

export const microsoftCampaigns: CampaignOps = {
  list,
  async setDailyBudget(app, token, target, change, options) {
    const campaign = findCampaign(
      await list(app, token, target, options),
      change.campaignId,
      'microsoft_ads',
    );
    assertSettable(campaign, change, 'microsoft_ads');
    // What Microsoft would refuse (a fraction of the smallest unit, less than the minimum) is refused
    // here too, before anything is sent; with no dry run, validate-only stops here.
    checkDailyBudget('microsoft_ads', change.dailyBudgetMicros, campaign.currency);
    // DailyBudget is a double: an amount it cannot hold exactly is refused, never rounded.
    if (numberToMicros(microsToNumber(change.dailyBudgetMicros)) !== change.dailyBudgetMicros) {
      throw new InvalidInputError(
        `${change.dailyBudgetMicros} micros cannot be sent to Microsoft Advertising exactly (its DailyBudget is a floating-point number)`,
      );
    }
    if (change.validateOnly) return simulated(campaign, change);
    const body = await call<{ PartialErrors?: BingBatchError[] | null }>(app, token, {
      method: 'PUT',
      url: campaignUrl(app, '/Campaigns'),
      headers: campaignHeaders(app, token, target),
      changes: true,
      // Only the elements sent change; DailyBudget is a JSON number in the account's currency, the
      // shortest decimal of the exact amount (1234567.89, 0.01).
      json: {
        AccountId: target.accountId,
        Campaigns: [{ Id: campaign.id, DailyBudget: microsToNumber(change.dailyBudgetMicros) }],
      },
      signal: options.signal,
      what: `changing the budget of Microsoft Advertising campaign ${campaign.id}`,
    });
    // Partial success: a refused campaign comes back as a BatchError with HTTP 200.
    const failure = body?.PartialErrors?.find(Boolean);
    if (failure) {
      const code = failure.ErrorCode ?? (failure.Code !== undefined ? String(failure.Code) : 'error');
      throw new ProviderError(
        'invalid_request',
        `Microsoft Advertising refused the daily budget of campaign ${campaign.id}: ${code}${failure.Code !== undefined && failure.ErrorCode ? ` (${failure.Code})` : ''}: ${failure.Message ?? 'no detail'}`,
        { status: 200, platformCode: failure.ErrorCode ?? null },
      );
    }
    return {
      campaign,
      previousMicros: campaign.dailyBudgetMicros,
      newMicros: change.dailyBudgetMicros,
      mode: 'applied',
      target: { level: 'campaign', id: campaign.id },
    };
  },
};
