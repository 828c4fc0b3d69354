import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  REDDIT_SEED,
  REDDIT_TEST_USER_AGENT,
  type RedditDouble,
  redditAdGroup,
  redditCampaign,
  startRedditDouble,
} from '../doubles/reddit.js';

const UA = { 'user-agent': REDDIT_TEST_USER_AGENT };
const S = REDDIT_SEED;

interface Body {
  [key: string]: unknown;
}

interface Page {
  data: Array<Record<string, unknown>>;
  pagination: { next_url: string | null };
}

async function call(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: unknown },
) {
  const res = await fetch(url, {
    method: init.method ?? 'GET',
    headers: {
      ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...init.headers,
    },
    body:
      init.body === undefined
        ? undefined
        : typeof init.body === 'string'
          ? init.body
          : JSON.stringify(init.body),
  });
  const text = await res.text();
  let body: Body | null = null;
  try {
    body = JSON.parse(text) as Body;
  } catch {
    body = null;
  }
  return { status: res.status, headers: res.headers, body };
}

describe('Reddit double: campaigns and ad groups', () => {
  let r: RedditDouble;
  let headers: Record<string, string>;
  const api = (path: string) => `${r.url}/api/v3${path}`;
  const patch = (path: string, body: unknown, extra: Record<string, string> = {}) =>
    call(api(path), { method: 'PATCH', headers: { ...headers, ...extra }, body });

  /** Follows pagination.next_url from `first` and returns every page. */
  async function allPages(first: string): Promise<Page[]> {
    const pages: Page[] = [];
    let next: string | null = first;
    while (next) {
      expect(next.startsWith(`${r.url}/api/v3/`)).toBe(true);
      const res = await call(next, { headers });
      expect(res.status).toBe(200);
      const page = res.body as unknown as Page;
      pages.push(page);
      next = page.pagination.next_url;
    }
    return pages;
  }

  beforeEach(async () => {
    r = await startRedditDouble();
    headers = { authorization: `Bearer ${r.issueGrant({ scope: 'adsread adsedit' }).accessToken}`, ...UA };
  });
  afterEach(() => r.close());

  it('lists the campaigns of an ad account over several pages with absolute next_url values', async () => {
    // Default pageSize 1: one campaign a page.
    const pages = await allPages(api('/ad_accounts/a2_xyz/campaigns'));
    expect(pages).toHaveLength(5);
    const campaigns = pages.flatMap((p) => p.data);
    expect(campaigns.map((c) => c['id'])).toEqual([
      S.cboCampaign,
      S.singleDailyCampaign,
      S.twoAdGroupsCampaign,
      S.lifetimeCampaign,
      S.pausedCampaign,
    ]);
    for (const c of campaigns) {
      expect(c['ad_account_id']).toBe('a2_xyz');
      expect(typeof c['name']).toBe('string');
      expect(['ACTIVE', 'PAUSED']).toContain(c['configured_status']);
      expect(typeof c['objective']).toBe('string');
      expect(typeof c['is_campaign_budget_optimization']).toBe('boolean');
      const value = c['goal_value'];
      expect(value === null || Number.isInteger(value)).toBe(true);
      expect(c).toHaveProperty('spend_cap');
    }
    expect(campaigns[0]).toMatchObject({
      is_campaign_budget_optimization: true,
      goal_type: 'DAILY_SPEND',
      goal_value: 100_000_000,
    });
    expect(campaigns[1]).toMatchObject({
      is_campaign_budget_optimization: false,
      goal_type: null,
      goal_value: null,
    });
    expect(campaigns[2]).toMatchObject({ spend_cap: 5_000_000_000 });

    // page.size lowers the page size and is kept in next_url.
    r.settings.pageSize = 100;
    const bySize = await allPages(`${api('/ad_accounts/a2_xyz/campaigns')}?page.size=2`);
    expect(bySize.map((p) => p.data.length)).toEqual([2, 2, 1]);
    expect(new URL(bySize[0]!.pagination.next_url!).searchParams.get('page.size')).toBe('2');
    expect(bySize[2]!.pagination.next_url).toBeNull();
    const eur = await allPages(api('/ad_accounts/a2_uvw/campaigns'));
    expect(eur.flatMap((p) => p.data).map((c) => c['id'])).toEqual([S.eurCboCampaign, S.eurCampaign]);
  });

  it('lists ad groups over pages, filtered by campaign_id, with the CBO flag of their campaign', async () => {
    r.settings.pageSize = 4;
    const pages = await allPages(api('/ad_accounts/a2_xyz/ad_groups'));
    expect(pages.map((p) => p.data.length)).toEqual([4, 2]);
    const groups = pages.flatMap((p) => p.data);
    expect(groups).toHaveLength(6);
    const byId = new Map(groups.map((g) => [g['id'], g]));
    expect(byId.get(S.cboAdGroup)).toMatchObject({
      campaign_id: S.cboCampaign,
      is_campaign_budget_optimization: true,
      goal_type: null,
      goal_value: null,
    });
    expect(byId.get(S.singleDailyAdGroup)).toMatchObject({
      ad_account_id: 'a2_xyz',
      campaign_id: S.singleDailyCampaign,
      is_campaign_budget_optimization: false,
      goal_type: 'DAILY_SPEND',
      goal_value: 50_000_000,
      bid_value: 1_500_000,
    });
    expect(byId.get(S.lifetimeAdGroup)).toMatchObject({
      goal_type: 'LIFETIME_SPEND',
      goal_value: 1_000_000_000,
    });

    const two = await allPages(
      `${api('/ad_accounts/a2_xyz/ad_groups')}?campaign_id=${S.twoAdGroupsCampaign}`,
    );
    expect(two.flatMap((p) => p.data).map((g) => g['id'])).toEqual([S.twoAdGroupsFirst, S.twoAdGroupsSecond]);
    r.settings.pageSize = 1;
    const paged = await allPages(
      `${api('/ad_accounts/a2_xyz/ad_groups')}?campaign_id=${S.twoAdGroupsCampaign}`,
    );
    expect(paged).toHaveLength(2);
    expect(new URL(paged[0]!.pagination.next_url!).searchParams.get('campaign_id')).toBe(
      S.twoAdGroupsCampaign,
    );

    expect((await call(api('/ad_accounts/a2_nope/ad_groups'), { headers })).status).toBe(404);
  });

  it('serves single campaigns and ad groups on bare paths', async () => {
    const campaign = await call(api(`/campaigns/${S.cboCampaign}`), { headers });
    expect(campaign.status).toBe(200);
    expect(campaign.body).toMatchObject({ data: { id: S.cboCampaign, goal_value: 100_000_000 } });
    const group = await call(api(`/ad_groups/${S.singleDailyAdGroup}`), { headers });
    expect(group.body).toMatchObject({ data: { id: S.singleDailyAdGroup, goal_type: 'DAILY_SPEND' } });
    expect((await call(api(`/ad_accounts/a2_xyz/campaigns/${S.cboCampaign}`), { headers })).status).toBe(404);
  });

  it('refuses a generic User-Agent on the campaign routes, reads and writes alike', async () => {
    const bearer = { authorization: headers['authorization']! };
    const list = await call(api('/ad_accounts/a2_xyz/campaigns'), { headers: bearer }); // fetch sends "node"
    expect(list.status).toBe(429);
    expect(list.body).toEqual({ message: 'Too Many Requests', error: 429 });
    const write = await call(api(`/ad_groups/${S.singleDailyAdGroup}`), {
      method: 'PATCH',
      headers: { ...bearer, 'user-agent': 'python-requests/2.32' },
      body: { data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 } },
    });
    expect(write.status).toBe(429);
    expect(r.appliedWrites).toEqual([]);
    expect(r.adGroup(S.singleDailyAdGroup)!.goal_value).toBe(50_000_000);
  });

  it('applies a daily budget PATCH on an ad group and records it', async () => {
    const res = await patch(`/ad_groups/${S.singleDailyAdGroup}`, {
      data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      data: {
        id: S.singleDailyAdGroup,
        campaign_id: S.singleDailyCampaign,
        goal_type: 'DAILY_SPEND',
        goal_value: 75_000_000,
        is_campaign_budget_optimization: false,
      },
    });
    const read = await call(api(`/ad_groups/${S.singleDailyAdGroup}`), { headers });
    expect((read.body!['data'] as Body)['goal_value']).toBe(75_000_000);
    expect(r.appliedBudgetWrites).toHaveLength(1);
    expect(r.appliedBudgetWrites[0]).toMatchObject({
      kind: 'ad_group',
      id: S.singleDailyAdGroup,
      ad_account_id: 'a2_xyz',
      data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 },
      before: { goal_type: 'DAILY_SPEND', goal_value: 50_000_000 },
      budget: true,
    });
    // A write that is not about money is recorded as a write, not as a budget write.
    expect(
      (await patch(`/ad_groups/${S.singleDailyAdGroup}`, { data: { configured_status: 'PAUSED' } })).status,
    ).toBe(200);
    expect(r.appliedWrites).toHaveLength(2);
    expect(r.appliedBudgetWrites).toHaveLength(1);
  });

  it('applies a daily budget PATCH on a CBO campaign', async () => {
    const res = await patch(`/campaigns/${S.cboCampaign}`, {
      data: { goal_type: 'DAILY_SPEND', goal_value: 150_000_000 },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      data: { id: S.cboCampaign, is_campaign_budget_optimization: true, goal_value: 150_000_000 },
    });
    expect(r.campaign(S.cboCampaign)!.goal_value).toBe(150_000_000);
    expect(r.appliedBudgetWrites).toMatchObject([
      { kind: 'campaign', id: S.cboCampaign, before: { goal_value: 100_000_000 } },
    ]);
  });

  it('answers 404 to account-scoped single-object paths and to unsupported methods', async () => {
    const body = { data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 } };
    expect((await patch(`/ad_accounts/a2_xyz/campaigns/${S.cboCampaign}`, body)).status).toBe(404);
    expect((await patch(`/ad_accounts/a2_xyz/ad_groups/${S.singleDailyAdGroup}`, body)).status).toBe(404);
    const put = await call(api(`/ad_groups/${S.singleDailyAdGroup}`), { method: 'PUT', headers, body });
    expect(put.status).toBe(404);
    expect(put.headers.get('allow')).toBeNull();
    expect(r.appliedWrites).toEqual([]);
  });

  it('refuses bad budgets with Reddit’s error envelope and writes nothing', async () => {
    const before = structuredClone({ campaigns: r.accounts.campaigns, adGroups: r.accounts.adGroups });
    const refusals: Array<[string, unknown, number, string, RegExp]> = [
      // [path, body, status, error field, message]
      [
        `/ad_groups/${S.singleDailyAdGroup}`,
        { data: { goal_value: 75_000_000.5 } },
        400,
        'data/goal_value',
        /integer/,
      ],
      [
        `/ad_groups/${S.singleDailyAdGroup}`,
        { data: { goal_value: '75000000' } },
        400,
        'data/goal_value',
        /integer/,
      ],
      [
        `/ad_groups/${S.singleDailyAdGroup}`,
        { data: { goal_value: 4_999_999 } },
        400,
        'data/goal_value',
        /minimum/,
      ],
      [
        `/ad_groups/${S.singleDailyAdGroup}`,
        { data: { goal_type: 'WEEKLY' } },
        400,
        'data/goal_type',
        /not one of/,
      ],
      [
        `/ad_groups/${S.cboAdGroup}`,
        { data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 } },
        400,
        'data/goal_type',
        /campaign budget optimization/,
      ],
      [
        `/campaigns/${S.singleDailyCampaign}`,
        { data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 } },
        400,
        'data/goal_type',
        /does not use campaign budget optimization/,
      ],
      [
        `/ad_groups/${S.lifetimeAdGroup}`,
        { data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 } },
        400,
        'data/goal_type',
        /LIFETIME_SPEND/,
      ],
      [
        `/campaigns/${S.cboCampaign}`,
        { data: { goal_type: 'LIFETIME_SPEND' } },
        400,
        'data/goal_type',
        /cannot be changed/,
      ],
      [`/campaigns/${S.cboCampaign}`, { data: { goal_value: 1_000_000 } }, 400, 'data/goal_value', /minimum/],
      [`/ad_groups/${S.singleDailyAdGroup}`, { daily_budget: 75 }, 400, 'data', /required/],
      [
        `/ad_groups/${S.singleDailyAdGroup}`,
        { data: { daily_budget: 75 } },
        400,
        'data/daily_budget',
        /not allowed/,
      ],
      [
        `/ad_groups/${S.singleDailyAdGroup}`,
        { data: { is_campaign_budget_optimization: true } },
        400,
        'data/is_campaign_budget_optimization',
        /read-only/,
      ],
    ];
    for (const [path, body, status, field, message] of refusals) {
      const res = await patch(path, body);
      expect(res.status, `${path} ${JSON.stringify(body)}`).toBe(status);
      const error = res.body!['error'] as {
        code: number;
        message: string;
        fields: Array<{ field: string; message: string }>;
      };
      expect(error.code).toBe(400);
      expect(error.fields[0]!.field).toBe(field);
      expect(error.fields[0]!.message).toMatch(message);
    }
    // In EUR the minimum is the same number of micros, in EUR.
    const eur = await patch(`/ad_groups/${S.eurAdGroup}`, { data: { goal_value: 1_000_000 } });
    expect((eur.body!['error'] as { message: string }).message).toMatch(/\(1\.00 EUR\).*\(5\.00 EUR\)/);
    const unknown = await patch('/ad_groups/999', { data: { goal_value: 75_000_000 } });
    expect(unknown.status).toBe(404);
    expect(unknown.body).toEqual({ message: 'Not Found', error: 404 });
    expect((await patch('/campaigns/999', { data: { goal_value: 75_000_000 } })).status).toBe(404);
    const notJson = await patch(`/ad_groups/${S.singleDailyAdGroup}`, '{"data":');
    expect(notJson.status).toBe(400);
    // Writing needs adsedit.
    const readOnly = { authorization: `Bearer ${r.issueGrant({ scope: 'adsread' }).accessToken}` };
    const forbidden = await patch(
      `/ad_groups/${S.singleDailyAdGroup}`,
      { data: { goal_value: 75_000_000 } },
      readOnly,
    );
    expect(forbidden.status).toBe(403);

    expect(r.appliedWrites).toEqual([]);
    expect(r.appliedBudgetWrites).toEqual([]);
    expect({ campaigns: r.accounts.campaigns, adGroups: r.accounts.adGroups }).toEqual(before);
  });

  it('can ignore a campaign budget on a non-CBO campaign instead of refusing it, and switch goal types', async () => {
    r.settings.campaignGoalWithoutCbo = 'ignore';
    const res = await patch(`/campaigns/${S.singleDailyCampaign}`, {
      data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ data: { goal_type: null, goal_value: null } });
    expect(r.appliedWrites).toEqual([]);
    r.settings.adGroupGoalTypeChangeable = true;
    const lifetime = await patch(`/ad_groups/${S.lifetimeAdGroup}`, {
      data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 },
    });
    expect(lifetime.status).toBe(200);
    expect(r.appliedBudgetWrites).toMatchObject([{ before: { goal_type: 'LIFETIME_SPEND' } }]);
  });

  it('serves seeded data given through accounts and the builders', async () => {
    const accounts = structuredClone(r.accounts);
    accounts.campaigns = [
      redditCampaign({
        id: 'c1',
        ad_account_id: 'a2_xyz',
        is_campaign_budget_optimization: true,
        goal_type: 'DAILY_SPEND',
        goal_value: 9_000_000,
      }),
    ];
    accounts.adGroups = [
      redditAdGroup({
        id: 'g1',
        ad_account_id: 'a2_xyz',
        campaign_id: 'c1',
        goal_type: null,
        goal_value: null,
      }),
    ];
    const own = {
      authorization: `Bearer ${r.issueGrant({ scope: 'adsread', accounts }).accessToken}`,
      ...UA,
    };
    const list = await call(api('/ad_accounts/a2_xyz/ad_groups'), { headers: own });
    expect(list.body).toEqual({
      data: [
        expect.objectContaining({
          id: 'g1',
          is_campaign_budget_optimization: true,
          campaign_objective_type: 'CONVERSIONS',
        }),
      ],
      pagination: { next_url: null },
    });
  });

  it('answers 429 with rate-limit headers to the next N Ads API calls', async () => {
    r.throttleAdsApi(2, { resetSeconds: 42 });
    const first = await call(api('/ad_accounts/a2_xyz/campaigns'), { headers });
    expect(first.status).toBe(429);
    expect(first.body).toEqual({ message: 'Too Many Requests', error: 429 });
    expect(first.headers.get('x-ratelimit-remaining')).toBe('0.0');
    expect(first.headers.get('x-ratelimit-reset')).toBe('42');
    expect(first.headers.get('x-ratelimit-used')).toBe('400');
    expect(first.headers.get('retry-after')).toBeNull();
    const second = await patch(`/ad_groups/${S.singleDailyAdGroup}`, { data: { goal_value: 75_000_000 } });
    expect(second.status).toBe(429);
    expect(r.appliedWrites).toEqual([]);
    expect(r.faults.pending.failures).toBe(0);
    expect((await call(api('/ad_accounts/a2_xyz/campaigns'), { headers })).status).toBe(200);
    // The token endpoint is not throttled.
    r.throttleAdsApi(1, { retryAfterSeconds: 7 });
    const client = r.defaultClient!;
    const token = await fetch(r.endpoints.token, {
      method: 'POST',
      headers: {
        ...UA,
        authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`,
      },
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: r.issueGrant({ scope: 'adsread' }).refreshToken,
      }),
    });
    expect(token.status).toBe(200);
    const third = await call(api('/me'), { headers });
    expect(third.status).toBe(429);
    expect(third.headers.get('retry-after')).toBe('7');
  });

  it('answers 401 to an invalidated or expired token, and a refreshed token works', async () => {
    const grant = r.issueGrant({ scope: 'adsread adsedit' });
    const bearer = (token: string) => ({ authorization: `Bearer ${token}`, ...UA });
    r.expireAccessTokens();
    const expired = await call(api('/ad_accounts/a2_xyz/campaigns'), { headers: bearer(grant.accessToken) });
    expect(expired.status).toBe(401);
    expect(expired.body).toEqual({ message: 'Unauthorized', error: 401 });
    const client = r.defaultClient!;
    const refreshed = await fetch(r.endpoints.token, {
      method: 'POST',
      headers: {
        ...UA,
        authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString('base64')}`,
      },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: grant.refreshToken }),
    });
    const accessToken = ((await refreshed.json()) as { access_token: string }).access_token;
    expect((await call(api('/ad_accounts/a2_xyz/campaigns'), { headers: bearer(accessToken) })).status).toBe(
      200,
    );

    r.invalidateGrants({ accessTokens: true });
    const invalidated = await patch(
      `/ad_groups/${S.singleDailyAdGroup}`,
      { data: { goal_value: 75_000_000 } },
      bearer(accessToken),
    );
    expect(invalidated.status).toBe(401);
    expect(invalidated.body).toEqual({ message: 'Unauthorized', error: 401 });
    expect(r.appliedWrites).toEqual([]);
  });
});
