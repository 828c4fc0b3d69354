import type { Secret } from '../../crypto/secret.js';
import { InvalidInputError } from '../../errors.js';
import { apiUrl } from '../authorize.js';
import { apiRequest } from '../http.js';
import { decimalToMicros, displayMoney, formatMicros } from '../money.js';
import { PageGuard } from '../paging.js';
import {
  linkedInAccountId,
  linkedInApiBase,
  linkedInHeaders,
  readLinkedInError,
} from '../platforms/linkedin-ads.js';
import type { CallOptions, Campaign, CampaignOps, CampaignTarget, ProviderApp } from '../types.js';
import { assertSettable, checkDailyBudget, findCampaign, simulated } from './common.js';

/**
 * LinkedIn Marketing API: `adCampaigns` search under the ad account (cursor paging with
 * pageSize/pageToken), and a Rest.li PARTIAL_UPDATE of `dailyBudget`: an amount as a decimal string in
 * whole units of the account's currency (micros converted exactly, never through a float), answered
 * 204. Every call carries `LinkedIn-Version` and `X-Restli-Protocol-Version: 2.0.0`. LinkedIn has no
 * dry run for campaigns: a validate-only change is checked here and not sent ("simulated").
 */

const PAGE_SIZE = 100;
// Rest.li 2.0: the structural characters of the search expression are sent as they are (a
// percent-encoded `(` is data, not syntax, and LinkedIn answers 400 PARAM_INVALID).
const SEARCH = 'search=(status:(values:List(ACTIVE,PAUSED,DRAFT)))';

interface LinkedInMoney {
  amount?: string;
  currencyCode?: string;
}

interface LinkedInCampaign {
  id?: number | string;
  name?: string;
  status?: string;
  dailyBudget?: LinkedInMoney | null;
  totalBudget?: LinkedInMoney | null;
}

/** The ad account's currency: what the connection knows, else read from the account. */
async function accountCurrency(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<string | null> {
  if (target.currency) return target.currency;
  const id = linkedInAccountId(target.accountId);
  const { body } = await apiRequest<{ currency?: string } | null>({
    method: 'GET',
    url: apiUrl(linkedInApiBase(app), `/rest/adAccounts/${id}`),
    headers: linkedInHeaders(app, token),
    signal: options.signal,
    secrets: [token.reveal()],
    what: `reading LinkedIn ad account ${id}`,
    readError: readLinkedInError,
  });
  return body?.currency ?? null;
}

function money(value: LinkedInMoney | null | undefined): { micros: bigint; currency: string | null } | null {
  if (!value || value.amount === undefined || value.amount === null) return null;
  return { micros: decimalToMicros(String(value.amount)), currency: value.currencyCode ?? null };
}

function toCampaign(c: LinkedInCampaign, accountCurrencyCode: string | null): Campaign {
  const daily = money(c.dailyBudget);
  const total = money(c.totalBudget);
  // `currencyCode` must be the account's currency; the account's own word wins.
  const currency = accountCurrencyCode ?? daily?.currency ?? total?.currency ?? null;
  const id = String(c.id ?? '');
  if (daily) {
    return {
      id,
      name: c.name ?? '',
      status: c.status ?? 'UNKNOWN',
      dailyBudgetMicros: daily.micros,
      currency,
      budget: { level: 'campaign', id: null, shared: false, sharedBy: null, note: null },
    };
  }
  // Only a total (lifetime) budget, or none: there is no daily budget to change. Adding one changes
  // how LinkedIn paces the campaign's spend, which is more than a budget change: refused, with why.
  const note = total
    ? `it has only a total budget of ${displayMoney(total.micros, total.currency ?? currency)} for its whole run`
    : 'it has no daily budget';
  return {
    id,
    name: c.name ?? '',
    status: c.status ?? 'UNKNOWN',
    dailyBudgetMicros: null,
    currency,
    budget: { level: 'none', id: null, shared: false, sharedBy: null, note },
  };
}

async function list(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<Campaign[]> {
  const account = linkedInAccountId(target.accountId);
  const currency = await accountCurrency(app, token, target, options);
  const base = apiUrl(linkedInApiBase(app), `/rest/adAccounts/${account}/adCampaigns`);
  const campaigns: Campaign[] = [];
  const seen = new Set<string>();
  let pageToken: string | null = null;
  const what = `listing the campaigns of LinkedIn ad account ${account}`;
  // 5,000 campaigns at most per account: 50 pages of 100; the guard only stops a platform that loops.
  const guard = new PageGuard('LinkedIn', what);
  for (;;) {
    const url = `${base}?q=search&${SEARCH}&pageSize=${PAGE_SIZE}${pageToken ? `&pageToken=${encodeURIComponent(pageToken)}` : ''}`;
    const response: {
      body: { elements?: LinkedInCampaign[]; metadata?: { nextPageToken?: string | null } } | null;
    } = await apiRequest({
      method: 'GET',
      url,
      headers: linkedInHeaders(app, token),
      signal: options.signal,
      secrets: [token.reveal()],
      what,
      readError: readLinkedInError,
    });
    for (const element of response.body?.elements ?? []) {
      const campaign = toCampaign(element, currency);
      if (seen.has(campaign.id)) continue;
      seen.add(campaign.id);
      campaigns.push(campaign);
    }
    const next = response.body?.metadata?.nextPageToken || null;
    if (!next) break;
    guard.next(next);
    pageToken = next;
  }
  return campaigns;
}

export const linkedInCampaigns: CampaignOps = {
  list,
  async setDailyBudget(app, token, target, change, options) {
    const account = linkedInAccountId(target.accountId);
    const campaign = findCampaign(await list(app, token, target, options), change.campaignId, 'linkedin_ads');
    assertSettable(campaign, change, 'linkedin_ads');
    const currency = campaign.currency;
    if (!currency) {
      throw new InvalidInputError(`the currency of LinkedIn ad account ${account} is not known`, {
        hint: 'Connect the account again so that credvault reads it.',
      });
    }
    // What LinkedIn would refuse, checked before anything is sent: more digits than the currency
    // has (the wire takes whole units with the currency's digits), and the minimum daily budget.
    checkDailyBudget('linkedin_ads', change.dailyBudgetMicros, currency);
    if (change.validateOnly) return simulated(campaign, change);
    await apiRequest({
      method: 'POST',
      url: apiUrl(
        linkedInApiBase(app),
        `/rest/adAccounts/${account}/adCampaigns/${encodeURIComponent(campaign.id)}`,
      ),
      headers: { ...linkedInHeaders(app, token), 'x-restli-method': 'PARTIAL_UPDATE' },
      changes: true,
      json: {
        patch: {
          $set: {
            dailyBudget: { amount: formatMicros(change.dailyBudgetMicros, currency), currencyCode: currency },
          },
        },
      },
      signal: options.signal,
      secrets: [token.reveal()],
      what: `changing the daily budget of LinkedIn campaign ${campaign.id}`,
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
