import type { Secret } from '../../crypto/secret.js';
import { InvalidInputError, quoted } from '../../errors.js';
import { apiUrl } from '../authorize.js';
import { apiRequest } from '../http.js';
import { displayMoney } from '../money.js';
import {
  googleApiBase,
  googleHeaders,
  googleLoginCustomerId,
  googleSearch,
  readGoogleError,
} from '../platforms/google-ads.js';
import type { CallOptions, Campaign, CampaignOps, CampaignTarget, ProviderApp } from '../types.js';
import { assertSettable, findCampaign } from './common.js';

/**
 * Google Ads: campaigns through GAQL (`googleAds:search`, paged by nextPageToken), budgets through
 * `campaignBudgets:mutate`, whose `validateOnly` is a real dry run: Google validates everything and
 * changes nothing. Budgets are their own resources, possibly shared by several campaigns.
 */

const FIELDS = [
  'campaign.id',
  'campaign.name',
  'campaign.status',
  'campaign.campaign_budget',
  'campaign_budget.id',
  'campaign_budget.amount_micros',
  'campaign_budget.period',
  'campaign_budget.total_amount_micros',
  'campaign_budget.explicitly_shared',
  'campaign_budget.reference_count',
  'customer.currency_code',
].join(', ');

interface CampaignRow {
  campaign?: { id?: string; name?: string; status?: string; campaignBudget?: string };
  campaignBudget?: {
    id?: string;
    amountMicros?: string;
    period?: string;
    totalAmountMicros?: string;
    explicitlyShared?: boolean;
    referenceCount?: string;
  };
  customer?: { currencyCode?: string };
}

const loginCustomerId = (app: ProviderApp, target: CampaignTarget) =>
  googleLoginCustomerId(app, target.details);

function toCampaign(row: CampaignRow, fallbackCurrency: string | null): Campaign {
  const budget = row.campaignBudget;
  // reference_count: the campaigns (not removed) using the budget. A budget is shared when it was made
  // to be (explicitly_shared) or when several campaigns use it: changing it changes all of them.
  const users = budget?.referenceCount !== undefined ? Number(budget.referenceCount) : null;
  const shared = budget?.explicitlyShared === true || (users !== null && users > 1);
  const budgetId = budget?.id ?? row.campaign?.campaignBudget?.split('/').pop() ?? null;
  const currency = row.customer?.currencyCode ?? fallbackCurrency;
  // A campaign total budget (CUSTOM_PERIOD, total_amount_micros) is a lifetime amount: no daily one
  // to set, as LinkedIn's and Reddit's lifetime budgets.
  const total = budget?.period === 'CUSTOM_PERIOD';
  const totalMoney =
    total && budget?.totalAmountMicros ? displayMoney(BigInt(budget.totalAmountMicros), currency) : null;
  return {
    id: row.campaign?.id ?? '',
    name: row.campaign?.name ?? '',
    status: row.campaign?.status ?? 'UNKNOWN',
    dailyBudgetMicros: !total && budget?.amountMicros !== undefined ? BigInt(budget.amountMicros) : null,
    currency,
    budget: {
      level: budgetId && !total ? 'campaign_budget' : 'none',
      id: budgetId,
      shared,
      sharedBy: shared && users !== null && Number.isSafeInteger(users) ? users : null,
      note: !budgetId
        ? 'the campaign has no campaign budget'
        : total
          ? `the campaign has a total budget${totalMoney ? ` of ${totalMoney}` : ''} for its whole run, not a daily one`
          : null,
    },
  };
}

async function query(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  where: string,
  options: CallOptions,
  what: string,
): Promise<Campaign[]> {
  const rows = await googleSearch<CampaignRow>(
    app,
    token,
    target.accountId,
    `SELECT ${FIELDS} FROM campaign WHERE ${where} ORDER BY campaign.id`,
    loginCustomerId(app, target),
    options,
    what,
  );
  return rows.map((row) => toCampaign(row, target.currency));
}

export const googleCampaigns: CampaignOps = {
  list: (app, token, target, options) =>
    query(
      app,
      token,
      target,
      "campaign.status != 'REMOVED'",
      options,
      `listing the campaigns of Google Ads customer ${target.accountId}`,
    ),

  async setDailyBudget(app, token, target, change, options) {
    if (!/^\d+$/.test(change.campaignId)) {
      throw new InvalidInputError(`${quoted(change.campaignId)} is not a Google Ads campaign id (digits)`);
    }
    const [found] = await query(
      app,
      token,
      target,
      `campaign.id = ${change.campaignId} AND campaign.status != 'REMOVED'`,
      options,
      `reading Google Ads campaign ${change.campaignId}`,
    );
    const campaign = findCampaign(found ? [found] : [], change.campaignId, 'google_ads');
    assertSettable(campaign, change, 'google_ads');
    const resourceName = `customers/${target.accountId}/campaignBudgets/${campaign.budget.id}`;
    await apiRequest({
      method: 'POST',
      url: apiUrl(
        googleApiBase(app),
        `/${app.apiVersion}/customers/${target.accountId}/campaignBudgets:mutate`,
      ),
      headers: googleHeaders(app, token, loginCustomerId(app, target)),
      changes: !change.validateOnly,
      // int64 as a JSON string (proto3 JSON); a dry run when validateOnly: only errors come back.
      json: {
        operations: [
          {
            update: { resourceName, amountMicros: change.dailyBudgetMicros.toString() },
            updateMask: 'amountMicros',
          },
        ],
        validateOnly: change.validateOnly,
        partialFailure: false,
      },
      signal: options.signal,
      secrets: [token.reveal(), app.developerToken?.reveal()],
      what: `${change.validateOnly ? 'validating' : 'changing'} the budget of Google Ads campaign ${campaign.id}`,
      readError: readGoogleError,
    });
    return {
      campaign,
      previousMicros: campaign.dailyBudgetMicros,
      newMicros: change.dailyBudgetMicros,
      mode: change.validateOnly ? 'validated' : 'applied',
      target: { level: 'campaign_budget', id: campaign.budget.id! },
    };
  },
};
