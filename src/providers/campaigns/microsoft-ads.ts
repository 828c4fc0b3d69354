import type { Secret } from '../../crypto/secret.js';
import { InvalidInputError } from '../../errors.js';
import { apiUrl } from '../authorize.js';
import { ProviderError } from '../errors.js';
import { apiRequest } from '../http.js';
import { microsToNumber, numberToMicros } from '../money.js';
import { microsoftHeaders, readMicrosoftError } from '../platforms/microsoft-ads.js';
import type { CallOptions, Campaign, CampaignOps, CampaignTarget, ProviderApp } from '../types.js';
import { assertSettable, checkDailyBudget, findCampaign, simulated } from './common.js';

/**
 * Microsoft Advertising, Campaign Management v13 over REST: `Campaigns/QueryByAccountId` (all at once;
 * without CampaignType only Search campaigns come back, so every type is asked for) and
 * `PUT Campaigns` with DailyBudget, a double in the account's currency. There is no dry run: a
 * validate-only change is checked here and not sent. A campaign on a shared budget cannot take a
 * DailyBudget (CampaignServiceCannotUpdateSharedBudget): the shared budget's Amount must change.
 */

const CAMPAIGN_API = 'https://campaign.api.bingads.microsoft.com';
const CUSTOMER_API = 'https://clientcenter.api.bingads.microsoft.com';
// Space-separated, as the flags enum is written in SOAP [unconfirmed for REST JSON].
const CAMPAIGN_TYPES = 'Search Shopping DynamicSearchAds Audience PerformanceMax';

interface BingCampaign {
  Id?: string | number;
  Name?: string;
  Status?: string;
  BudgetType?: string | null;
  DailyBudget?: number | null;
  BudgetId?: string | number | null;
  CampaignType?: string;
}

function headers(app: ProviderApp, token: Secret, target: CampaignTarget): Record<string, string> {
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

/** The account's currency: the connection's, else read from Customer Management. */
async function accountCurrency(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<string | null> {
  if (target.currency) return target.currency;
  const { body } = await apiRequest<{ Account?: { CurrencyCode?: string } }>({
    method: 'POST',
    url: apiUrl(app.endpoints.apiBase ?? CUSTOMER_API, `/CustomerManagement/${app.apiVersion}/Account/Query`),
    headers: headers(app, token, target),
    json: { AccountId: target.accountId, ReturnAdditionalFields: null },
    signal: options.signal,
    secrets: [token.reveal(), app.developerToken?.reveal()],
    what: `reading Microsoft Advertising account ${target.accountId}`,
    readError: readMicrosoftError,
  });
  return body?.Account?.CurrencyCode ?? null;
}

async function list(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<Campaign[]> {
  const [currency, { body }] = await Promise.all([
    accountCurrency(app, token, target, options),
    apiRequest<{ Campaigns?: BingCampaign[] | null }>({
      method: 'POST',
      url: apiUrl(
        app.endpoints.apiBase ?? CAMPAIGN_API,
        `/CampaignManagement/${app.apiVersion}/Campaigns/QueryByAccountId`,
      ),
      headers: headers(app, token, target),
      json: { AccountId: target.accountId, CampaignType: CAMPAIGN_TYPES, ReturnAdditionalFields: null },
      signal: options.signal,
      secrets: [token.reveal(), app.developerToken?.reveal()],
      what: `listing the campaigns of Microsoft Advertising account ${target.accountId}`,
      readError: readMicrosoftError,
    }),
  ]);
  return (body?.Campaigns ?? []).map((c) => {
    const budgetId = c.BudgetId === null || c.BudgetId === undefined ? null : String(c.BudgetId);
    return {
      id: String(c.Id ?? ''),
      name: c.Name ?? '',
      status: c.Status ?? 'Unknown',
      dailyBudgetMicros: typeof c.DailyBudget === 'number' ? numberToMicros(c.DailyBudget) : null,
      currency,
      budget: budgetId
        ? {
            level: 'campaign' as const,
            id: budgetId,
            shared: true,
            sharedBy: null,
            note: `on shared budget ${budgetId}: change its amount in Microsoft Advertising (Shared library › Budgets)`,
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
    if (campaign.budget.shared) {
      // Not a confirmation away: Microsoft refuses a DailyBudget on a campaign with a shared budget.
      throw new InvalidInputError(
        `Microsoft Advertising campaign ${campaign.id} uses shared budget ${campaign.budget.id}; its daily budget is the shared budget's amount and cannot be set on the campaign`,
        {
          hint: 'Change the shared budget in Microsoft Advertising (Shared library › Budgets), or move the campaign off it.',
        },
      );
    }
    assertSettable(campaign, change, 'microsoft_ads');
    if (change.validateOnly) {
      checkDailyBudget('microsoft_ads', change.dailyBudgetMicros, campaign.currency);
      return simulated(campaign, change);
    }
    const { body } = await apiRequest<{
      PartialErrors?: Array<{ Code?: number; ErrorCode?: string; Message?: string }> | null;
    }>({
      method: 'PUT',
      url: apiUrl(app.endpoints.apiBase ?? CAMPAIGN_API, `/CampaignManagement/${app.apiVersion}/Campaigns`),
      headers: headers(app, token, target),
      // Only the fields sent change; DailyBudget is a JSON number in the account's currency.
      json: {
        AccountId: target.accountId,
        Campaigns: [{ Id: campaign.id, DailyBudget: microsToNumber(change.dailyBudgetMicros) }],
      },
      signal: options.signal,
      secrets: [token.reveal(), app.developerToken?.reveal()],
      what: `changing the budget of Microsoft Advertising campaign ${campaign.id}`,
      readError: readMicrosoftError,
    });
    const failure = body?.PartialErrors?.find(Boolean);
    if (failure) {
      throw new ProviderError(
        'invalid_request',
        `Microsoft Advertising refused the budget of campaign ${campaign.id}: ${failure.ErrorCode ?? failure.Code ?? 'error'}: ${failure.Message ?? 'no detail'}`,
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
