import type { Secret } from '../../crypto/secret.js';
import { InvalidInputError } from '../../errors.js';
import { apiUrl } from '../authorize.js';
import { apiRequest } from '../http.js';
import { readRedditError, redditApiBase, redditHeaders, redditPages } from '../platforms/reddit-ads.js';
import type { CallOptions, Campaign, CampaignOps, CampaignTarget, ProviderApp } from '../types.js';
import { assertSettable, checkDailyBudget, findCampaign, simulated } from './common.js';

/**
 * Reddit Ads API v3: campaigns and ad groups under the ad account (paged by `pagination.next_url`).
 * A daily budget (`goal_type` DAILY_SPEND, `goal_value` in micro-currency) lives on the ad group,
 * unless the campaign uses campaign budget optimisation; then it is the campaign's. Single objects are
 * changed at their bare paths (`PATCH /ad_groups/{id}`) with the `{"data": …}` envelope. No dry run:
 * a validate-only change is checked here and not sent.
 */

interface RedditCampaign {
  id?: string;
  name?: string;
  configured_status?: string;
  effective_status?: string;
  is_campaign_budget_optimization?: boolean;
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

function daily(goalType: string | null | undefined, goalValue: number | null | undefined): bigint | null {
  return goalType === 'DAILY_SPEND' && typeof goalValue === 'number' ? BigInt(Math.round(goalValue)) : null;
}

async function list(
  app: ProviderApp,
  token: Secret,
  target: CampaignTarget,
  options: CallOptions,
): Promise<Campaign[]> {
  const account = encodeURIComponent(target.accountId);
  const [campaigns, adGroups] = await Promise.all([
    redditPages<RedditCampaign>(
      app,
      token,
      api(app, `/ad_accounts/${account}/campaigns`),
      options,
      `listing the campaigns of Reddit ad account ${target.accountId}`,
    ),
    redditPages<RedditAdGroup>(
      app,
      token,
      api(app, `/ad_accounts/${account}/ad_groups`),
      options,
      `listing the ad groups of Reddit ad account ${target.accountId}`,
    ),
  ]);
  return campaigns.map((c) => {
    const id = c.id ?? '';
    const base = {
      id,
      name: c.name ?? '',
      status: c.configured_status ?? c.effective_status ?? 'UNKNOWN',
      currency: target.currency,
    };
    if (c.is_campaign_budget_optimization) {
      const micros = daily(c.goal_type, c.goal_value);
      return {
        ...base,
        dailyBudgetMicros: micros,
        budget:
          micros !== null || !c.goal_type
            ? { level: 'campaign' as const, id, shared: false, sharedBy: null, note: null }
            : {
                level: 'none' as const,
                id: null,
                shared: false,
                sharedBy: null,
                note: `the campaign has a ${c.goal_type.toLowerCase()} goal, not a daily budget`,
              },
      };
    }
    const groups = adGroups.filter((g) => g.campaign_id === id);
    const dailyGroups = groups.filter((g) => g.goal_type === 'DAILY_SPEND');
    if (groups.length === 1 && dailyGroups.length === 1) {
      const group = dailyGroups[0]!;
      return {
        ...base,
        dailyBudgetMicros: daily(group.goal_type, group.goal_value),
        budget: {
          level: 'ad_group' as const,
          id: group.id ?? null,
          shared: false,
          sharedBy: null,
          note: null,
        },
      };
    }
    const note =
      groups.length === 0
        ? 'the campaign has no ad group to carry a budget'
        : groups.length > 1
          ? `the budget is on its ${groups.length} ad groups (${groups.map((g) => g.id).join(', ')}), each its own`
          : `its ad group has a ${String(groups[0]!.goal_type ?? 'non-daily').toLowerCase()} goal, not a daily budget`;
    return {
      ...base,
      dailyBudgetMicros: null,
      budget: { level: 'none' as const, id: null, shared: false, sharedBy: null, note },
    };
  });
}

export const redditCampaigns: CampaignOps = {
  list,
  async setDailyBudget(app, token, target, change, options) {
    const campaign = findCampaign(await list(app, token, target, options), change.campaignId, 'reddit_ads');
    assertSettable(campaign, change, 'reddit_ads');
    if (change.dailyBudgetMicros > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new InvalidInputError('that daily budget is larger than Reddit can take');
    }
    if (change.validateOnly) {
      checkDailyBudget('reddit_ads', change.dailyBudgetMicros, campaign.currency);
      return simulated(campaign, change);
    }
    const level = campaign.budget.level as 'campaign' | 'ad_group';
    const id = campaign.budget.id!;
    await apiRequest({
      method: 'PATCH',
      // Single objects at their bare paths; an account-scoped path would be a 404.
      url: api(app, `/${level === 'ad_group' ? 'ad_groups' : 'campaigns'}/${encodeURIComponent(id)}`),
      headers: redditHeaders(app, token),
      json: { data: { goal_type: 'DAILY_SPEND', goal_value: Number(change.dailyBudgetMicros) } },
      signal: options.signal,
      secrets: [token.reveal()],
      what: `changing the budget of Reddit ${level === 'ad_group' ? `ad group ${id} (campaign ${campaign.id})` : `campaign ${campaign.id}`}`,
      readError: readRedditError,
    });
    return {
      campaign,
      previousMicros: campaign.dailyBudgetMicros,
      newMicros: change.dailyBudgetMicros,
      mode: 'applied',
      target: { level, id },
    };
  },
};
