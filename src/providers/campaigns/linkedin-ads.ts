import type { Secret } from '../../crypto/secret.js';
import { InvalidInputError } from '../../errors.js';
import { apiUrl } from '../authorize.js';
import { apiRequest } from '../http.js';
import { decimalToMicros, formatMicros, isWholeMinorUnits } from '../money.js';
import { linkedInApiBase, linkedInHeaders, readLinkedInError } from '../platforms/linkedin-ads.js';
import type { CallOptions, Campaign, CampaignOps, CampaignTarget, ProviderApp } from '../types.js';
import { assertSettable, checkDailyBudget, findCampaign, simulated } from './common.js';

/**
 * LinkedIn Marketing API: `adCampaigns` search under the ad account (cursor paging), and a Rest.li
 * PARTIAL_UPDATE of `dailyBudget`, an amount as a decimal string in the account's currency (micros
 * converted exactly, never through a float). Every call carries `LinkedIn-Version`. No dry run: a
 * validate-only change is checked here and not sent.
 */

const PAGE_SIZE = 100;
// Rest.li 2.0: the structural characters of the search expression stay as they are.
const SEARCH = 'search=(status:(values:List(ACTIVE,PAUSED,DRAFT)))';

interface LinkedInCampaign {
  id?: number | string;
  name?: string;
  status?: string;
  dailyBudget?: { amount?: string; currencyCode?: string } | null;
}

function accountId(target: CampaignTarget): string {
  return target.accountId.replace(/^urn:li:sponsoredAccount:/, '');
}

async function list(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<Campaign[]> {
  const base = apiUrl(linkedInApiBase(app), `/rest/adAccounts/${accountId(target)}/adCampaigns`);
  const campaigns: Campaign[] = [];
  let pageToken: string | null = null;
  for (let page = 0; page < 1000; page++) {
    const url = `${base}?q=search&${SEARCH}&pageSize=${PAGE_SIZE}${pageToken ? `&pageToken=${encodeURIComponent(pageToken)}` : ''}`;
    const response: {
      body: { elements?: LinkedInCampaign[]; metadata?: { nextPageToken?: string | null } } | null;
    } = await apiRequest({
      method: 'GET',
      url,
      headers: linkedInHeaders(app, token),
      signal: options.signal,
      secrets: [token.reveal()],
      what: `listing the campaigns of LinkedIn ad account ${accountId(target)}`,
      readError: readLinkedInError,
    });
    for (const c of response.body?.elements ?? []) {
      const budget = c.dailyBudget ?? null;
      campaigns.push({
        id: String(c.id ?? ''),
        name: c.name ?? '',
        status: c.status ?? 'UNKNOWN',
        dailyBudgetMicros: budget?.amount !== undefined ? decimalToMicros(budget.amount) : null,
        currency: budget?.currencyCode ?? target.currency,
        // A campaign with only a total budget can be given a daily one: the budget is the campaign's.
        budget: { level: 'campaign', id: null, shared: false, sharedBy: null, note: null },
      });
    }
    pageToken = response.body?.metadata?.nextPageToken || null;
    if (!pageToken) break;
  }
  return campaigns;
}

export const linkedInCampaigns: CampaignOps = {
  list,
  async setDailyBudget(app, token, target, change, options) {
    const campaign = findCampaign(await list(app, token, target, options), change.campaignId, 'linkedin_ads');
    assertSettable(campaign, change, 'linkedin_ads');
    const currency = campaign.currency ?? target.currency;
    if (!currency) {
      throw new InvalidInputError(`the currency of LinkedIn ad account ${accountId(target)} is not known`, {
        hint: 'Connect the account again so that credvault reads it.',
      });
    }
    // The wire takes whole currency units with the currency's digits: a remainder cannot be sent.
    if (!isWholeMinorUnits(change.dailyBudgetMicros, currency))
      checkDailyBudget('linkedin_ads', change.dailyBudgetMicros, currency);
    if (change.validateOnly) {
      checkDailyBudget('linkedin_ads', change.dailyBudgetMicros, currency);
      return simulated(campaign, change);
    }
    await apiRequest({
      method: 'POST',
      url: apiUrl(
        linkedInApiBase(app),
        `/rest/adAccounts/${accountId(target)}/adCampaigns/${encodeURIComponent(campaign.id)}`,
      ),
      headers: { ...linkedInHeaders(app, token), 'x-restli-method': 'PARTIAL_UPDATE' },
      json: {
        patch: {
          $set: {
            dailyBudget: { amount: formatMicros(change.dailyBudgetMicros, currency), currencyCode: currency },
          },
        },
      },
      signal: options.signal,
      secrets: [token.reveal()],
      what: `changing the budget of LinkedIn campaign ${campaign.id}`,
      readError: readLinkedInError,
    });
    return {
      campaign,
      previousMicros: campaign.dailyBudgetMicros,
      newMicros: change.dailyBudgetMicros,
      mode: 'applied',
      target: { level: 'campaign', id: campaign.id },
    };
  },
};
