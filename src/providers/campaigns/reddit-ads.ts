import type { Secret } from '../../crypto/secret.js';
import { InvalidInputError } from '../../errors.js';
import { apiUrl } from '../authorize.js';
import { ProviderError } from '../errors.js';
import { apiRequest } from '../http.js';
import { displayMoney } from '../money.js';
import {
  discoverAccounts,
  readRedditError,
  redditApiBase,
  redditHeaders,
  redditPages,
} from '../platforms/reddit-ads.js';
import type {
  BudgetChangeResult,
  CallOptions,
  Campaign,
  CampaignOps,
  CampaignTarget,
  ProviderApp,
} from '../types.js';
import {
  assertSettable,
  checkDailyBudget,
  findCampaign,
  noteCurrencyLookupFailure,
  simulated,
} from './common.js';

/**
 * Reddit Ads API v3: campaigns and ad groups under the ad account (paged by `pagination.next_url`).
 * A daily budget (`goal_type` DAILY_SPEND, `goal_value` in micro-currency) lives on the ad group,
 * unless the campaign uses campaign budget optimisation (CBO); then it is the campaign's. Single
 * objects are changed at their bare paths (`PATCH /ad_groups/{id}`, `PATCH /campaigns/{id}`) with the
 * `{"data": …}` envelope. No dry run: a validate-only change is checked here and not sent.
 *
 * A campaign without CBO whose budget is split over several ad groups has no one daily budget: it is
 * listed with none (budget on "ad group", no budget id) and a note naming each ad group and its
 * budget, and set-budget refuses it rather than guess how to divide an amount between them (nothing
 * is sent). A campaign with one ad group is what Reddit's own campaign flow makes; its budget is that
 * ad group's.
 */

interface RedditCampaign {
  id?: string;
  name?: string;
  configured_status?: string;
  effective_status?: string;
  is_campaign_budget_optimization?: boolean | null;
  goal_type?: string | null;
  goal_value?: number | null;
}

interface RedditAdGroup {
  id?: string;
  campaign_id?: string;
  name?: string;
  configured_status?: string;
  goal_type?: string | null;
  goal_value?: number | null;
}

function api(app: ProviderApp, path: string): string {
  return apiUrl(redditApiBase(app), `/api/${app.apiVersion}${path}`);
}

/** goal_value as micros: an integer of micro-currency (JSON numbers up to 2^53 are exact). */
function goalMicros(goalValue: number | null | undefined): bigint | null {
  return typeof goalValue === 'number' && Number.isFinite(goalValue) ? BigInt(Math.round(goalValue)) : null;
}

function daily(goalType: string | null | undefined, goalValue: number | null | undefined): bigint | null {
  return goalType === 'DAILY_SPEND' ? goalMicros(goalValue) : null;
}

/** "a lifetime budget of 1,000.00 USD", for a goal that is not a daily budget. */
function goalWords(goalType: string, goalValue: number | null | undefined, currency: string | null): string {
  const money = displayMoney(goalMicros(goalValue), currency);
  const what = goalType === 'LIFETIME_SPEND' ? 'a lifetime budget' : `a ${goalType} goal`;
  return money ? `${what} of ${money}` : what;
}

/** An ad group's budget in a list: "25.00 USD a day", "1,000.00 USD lifetime", "no budget". */
function amount(
  goalType: string | null | undefined,
  goalValue: number | null | undefined,
  currency: string | null,
): string {
  const money = displayMoney(goalMicros(goalValue), currency);
  if (!goalType || !money) return 'no budget';
  if (goalType === 'DAILY_SPEND') return `${money} a day`;
  return goalType === 'LIFETIME_SPEND' ? `${money} lifetime` : `${money} (${goalType})`;
}

/**
 * The ad account's currency: the connection's (read when it was connected), else found the way
 * connect finds accounts (the businesses' ad accounts, which carry it): a connection imported from
 * a .env file knows none.
 */
async function accountCurrency(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<{ currency: string | null; failure: unknown }> {
  if (target.currency) return { currency: target.currency, failure: undefined };
  // Without it the list still shows (amounts in micros), as before it was looked up; the failure is
  // kept for a budget change to say (a 403: the grant may not read the businesses; a 5xx: retry).
  try {
    const accounts = await discoverAccounts(app, token, options);
    return {
      currency: accounts.find((a) => a.id === target.accountId)?.currency ?? null,
      failure: undefined,
    };
  } catch (error) {
    // Stopped with the list (its own failure is the one to report), not a failure of its own.
    if (options.signal.aborted) throw error;
    return { currency: null, failure: error };
  }
}

/** Both collections at once; when one fails the other is stopped rather than paged to its end. */
async function both<A, B>(
  signal: AbortSignal,
  first: (signal: AbortSignal) => Promise<A>,
  second: (signal: AbortSignal) => Promise<B>,
): Promise<[A, B]> {
  const stop = new AbortController();
  const either = AbortSignal.any([signal, stop.signal]);
  const stopOnFailure = <T>(promise: Promise<T>) =>
    promise.catch((error: unknown) => {
      stop.abort(error);
      throw error;
    });
  return Promise.all([stopOnFailure(first(either)), stopOnFailure(second(either))]);
}

async function list(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<Campaign[]> {
  const account = encodeURIComponent(target.accountId);
  const [[campaigns, adGroups], { currency, failure }] = await Promise.all([
    both(
      options.signal,
      (signal) =>
        redditPages<RedditCampaign>(
          app,
          token,
          api(app, `/ad_accounts/${account}/campaigns`),
          { signal },
          `listing the campaigns of Reddit ad account ${target.accountId}`,
        ),
      (signal) =>
        redditPages<RedditAdGroup>(
          app,
          token,
          api(app, `/ad_accounts/${account}/ad_groups`),
          { signal },
          `listing the ad groups of Reddit ad account ${target.accountId}`,
        ),
    ),
    accountCurrency(app, token, target, options),
  ]);
  const listed = campaigns.map((c): Campaign => {
    const id = String(c.id ?? '');
    const base = {
      id,
      name: c.name ?? '',
      status: c.configured_status ?? c.effective_status ?? 'UNKNOWN',
      currency,
    };
    const none = (note: string): Campaign => ({
      ...base,
      dailyBudgetMicros: null,
      budget: { level: 'none', id: null, shared: false, sharedBy: null, note },
    });
    if (c.is_campaign_budget_optimization) {
      // CBO: the campaign's goal is the budget of all its ad groups.
      if (c.goal_type && c.goal_type !== 'DAILY_SPEND') {
        return none(
          `the campaign uses campaign budget optimization with ${goalWords(c.goal_type, c.goal_value, currency)}, not a daily one`,
        );
      }
      return {
        ...base,
        dailyBudgetMicros: daily(c.goal_type, c.goal_value),
        budget: { level: 'campaign', id, shared: false, sharedBy: null, note: null },
      };
    }
    // Deleted ad groups spend nothing and cannot be changed.
    const groups = adGroups.filter(
      (g) => String(g.campaign_id ?? '') === id && g.configured_status !== 'DELETED',
    );
    if (groups.length === 0) return none('the campaign has no ad group to carry a budget');
    if (groups.length === 1) {
      const group = groups[0]!;
      if (group.goal_type && group.goal_type !== 'DAILY_SPEND') {
        return none(
          `its ad group ${group.id} has ${goalWords(group.goal_type, group.goal_value, currency)}, not a daily one`,
        );
      }
      return {
        ...base,
        dailyBudgetMicros: daily(group.goal_type, group.goal_value),
        budget: { level: 'ad_group', id: String(group.id ?? ''), shared: false, sharedBy: null, note: null },
      };
    }
    const each = groups
      .map((g) => `${g.id}${g.name ? ` (${g.name})` : ''} ${amount(g.goal_type, g.goal_value, currency)}`)
      .join(', ');
    return {
      ...base,
      dailyBudgetMicros: null,
      budget: {
        level: 'ad_group',
        id: null,
        shared: false,
        sharedBy: null,
        note: `no single daily budget: it is split over its ${groups.length} ad groups, each with its own: ${each}`,
      },
    };
  });
  if (currency === null && failure !== undefined) noteCurrencyLookupFailure(listed, failure);
  return listed;
}

export const redditCampaigns: CampaignOps = {
  list,
  async setDailyBudget(app, token, target, change, options): Promise<BudgetChangeResult> {
    const campaign = findCampaign(await list(app, token, target, options), change.campaignId, 'reddit_ads');
    assertSettable(campaign, change, 'reddit_ads');
    if (campaign.budget.id === null) {
      // Several ad groups, each with its own budget: which share of a new amount goes where is the
      // operator's decision, not credvault's.
      throw new InvalidInputError(
        `Reddit Ads campaign ${campaign.id} (${campaign.name}) has ${campaign.budget.note ?? 'no single daily budget'}; credvault does not divide one amount between ad groups, so nothing was changed`,
        {
          hint: 'Change each ad group in Reddit Ads Manager, or turn on campaign budget optimization so that the campaign has one budget.',
        },
      );
    }
    const micros = change.dailyBudgetMicros;
    if (micros > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new InvalidInputError('that daily budget is larger than Reddit can take');
    }
    // The same checks for a real change as for a simulated one: validate-only predicts what happens.
    checkDailyBudget('reddit_ads', micros, campaign.currency);
    if (change.validateOnly) return simulated(campaign, change);
    const level = campaign.budget.level as 'campaign' | 'ad_group';
    const id = campaign.budget.id;
    const what = `changing the budget of Reddit ${level === 'ad_group' ? `ad group ${id} (campaign ${campaign.id})` : `campaign ${campaign.id}`}`;
    const { body } = await apiRequest<{ data?: { goal_type?: string | null; goal_value?: number | null } }>({
      method: 'PATCH',
      // Single objects at their bare paths; an account-scoped path would be a 404.
      url: api(app, `/${level === 'ad_group' ? 'ad_groups' : 'campaigns'}/${encodeURIComponent(id)}`),
      headers: redditHeaders(app, token),
      changes: true,
      json: { data: { goal_type: 'DAILY_SPEND', goal_value: Number(micros) } },
      signal: options.signal,
      secrets: [token.reveal()],
      what,
      readError: readRedditError,
    });
    // The answer is the object as changed: a 200 that kept another value would be a silent refusal.
    const now = body?.data;
    const kept = goalMicros(now?.goal_value);
    if (
      (kept !== null && kept !== change.dailyBudgetMicros) ||
      (typeof now?.goal_type === 'string' && now.goal_type !== 'DAILY_SPEND')
    ) {
      throw new ProviderError(
        'invalid_response',
        `${what}: Reddit answered 200 but reports goal_type ${now?.goal_type ?? 'null'}, goal_value ${now?.goal_value ?? 'null'} (sent DAILY_SPEND, ${micros}): the budget may not have changed`,
      );
    }
    return {
      campaign,
      previousMicros: campaign.dailyBudgetMicros,
      newMicros: micros,
      mode: 'applied',
      target: { level, id },
    };
  },
};
