/**
 * Campaign operations on Reddit Ads through the built binary, against the Reddit double (Ads API v3):
 * campaigns and ad groups paged by `pagination.next_url`, the daily budget on the ad group unless the
 * campaign uses campaign budget optimisation (CBO), `goal_value` in micro-currency, PATCH with
 * `{"data":{"goal_type","goal_value"}}`, a descriptive User-Agent on every call, and no dry run (a
 * validate-only change is simulated: nothing is sent). One vault and one grant serve the whole file;
 * the double's data is put back before each test.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CampaignJson, BudgetResultJson as ResultJson } from '../../src/cli/commands/campaigns.js';
import {
  REDDIT_DEFAULT_ACCOUNTS,
  REDDIT_SCOPES,
  REDDIT_SEED,
  REDDIT_TEST_USER_AGENT,
  type RecordedRequest,
  type RedditAccounts,
  type RedditDouble,
  redditAdGroup,
  redditCampaign,
  startRedditDouble,
} from '../doubles/index.js';
import { addAppFor, adoptGrant } from '../helpers/flows.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { createVault, type TestVault } from '../helpers/vault.js';

const S = REDDIT_SEED;
const USD = 'reddit_ads:a2_xyz';
const EUR = 'reddit_ads:a2_uvw';
const JPY = 'reddit_ads:a2_jpy';
const JPY_CAMPAIGN = '2000000000000000201';
const JPY_AD_GROUP = '1000000000000000211';
/** Campaigns and ad groups are served two to a page: a2_xyz's five campaigns take three pages. */
const PAGE_SIZE = 2;

/** The seed (two ad accounts) plus a yen account: JPY has no minor unit. */
const ACCOUNTS: RedditAccounts = {
  ...structuredClone(REDDIT_DEFAULT_ACCOUNTS),
  adAccounts: [
    ...REDDIT_DEFAULT_ACCOUNTS.adAccounts,
    { id: 'a2_jpy', name: 'Acme Reddit JP', currency: 'JPY', business_id: 'biz_1' },
  ],
  campaigns: [
    ...(REDDIT_DEFAULT_ACCOUNTS.campaigns ?? []),
    redditCampaign({ id: JPY_CAMPAIGN, ad_account_id: 'a2_jpy', name: 'JP launch' }),
  ],
  adGroups: [
    ...(REDDIT_DEFAULT_ACCOUNTS.adGroups ?? []),
    redditAdGroup({
      id: JPY_AD_GROUP,
      ad_account_id: 'a2_jpy',
      campaign_id: JPY_CAMPAIGN,
      goal_value: 3_000_000_000, // 3,000 JPY a day
    }),
  ],
};

interface AuditJson {
  action: string;
  target_id: string;
  outcome: string;
  detail: Record<string, unknown>;
}

let double: RedditDouble;
let v: TestVault;
let app: Awaited<ReturnType<typeof addAppFor>>;
let refreshToken: string;
/** Index into double.requests where the current test began. */
let mark = 0;

beforeAll(async () => {
  double = await startRedditDouble({ pageSize: PAGE_SIZE, accounts: structuredClone(ACCOUNTS) });
  v = await createVault();
  app = await addAppFor(v, 'reddit_ads', double as never);
  const grant = double.issueGrant({ clientId: app.clientId, scope: REDDIT_SCOPES });
  refreshToken = grant.refreshToken;
  // One grant, three ad accounts: three connections sharing it.
  await adoptGrant(v, 'reddit_ads', app.label, refreshToken, {
    accounts: ['a2_xyz', 'a2_uvw', 'a2_jpy'],
    json: true,
  });
});

afterAll(async () => {
  await double?.close();
  await v?.destroy();
});

beforeEach(() => {
  double.accounts = structuredClone(ACCOUNTS);
  double.settings.minDailyBudgetMicros = 5_000_000;
  double.faults.reset();
  mark = double.requests.length;
});

/** The Ads API calls the double received since the test began. */
function apiCalls(): RecordedRequest[] {
  return double.requests.slice(mark).filter((r) => r.path.startsWith('/api/v3/'));
}

function patches(): RecordedRequest[] {
  return apiCalls().filter((r) => r.method === 'PATCH');
}

async function list(ref: string): Promise<CampaignJson[]> {
  return v.json<CampaignJson[]>(['campaigns', 'list', ref]);
}

function byId(campaigns: CampaignJson[], id: string): CampaignJson {
  const found = campaigns.find((c) => c.id === id);
  expect(found, `campaign ${id} in the list`).toBeDefined();
  return found!;
}

/** The audit rows of one campaign's budget changes (applied and validated), newest first. */
async function auditRows(campaign: string): Promise<AuditJson[]> {
  const rows = await v.json<AuditJson[]>(['audit', 'list', '--limit', '200']);
  return rows.filter((r) => r.action.startsWith('campaign.budget') && r.target_id === campaign);
}

describe('campaigns list', () => {
  it('pages campaigns and ad groups by next_url, shows where each budget lives and why some have none', async () => {
    const table = await v.cli(['campaigns', 'list', USD]);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+NAME\s+STATUS\s+DAILY BUDGET\s+SHARED\s+BUDGET ON$/);
    expect(lines).toHaveLength(6);
    const row = (id: string) => lines.find((l) => l.startsWith(id)) ?? '';
    expect(row(S.cboCampaign)).toMatch(/Brand - CBO\s+ACTIVE\s+100\.00 USD\s+no\s+campaign$/);
    expect(row(S.singleDailyCampaign)).toMatch(/Retargeting\s+ACTIVE\s+50\.00 USD\s+no\s+ad group$/);
    expect(row(S.pausedCampaign)).toMatch(/Spring promo\s+PAUSED\s+10\.00 USD\s+no\s+ad group$/);
    expect(row(S.twoAdGroupsCampaign)).toMatch(/Prospecting\s+ACTIVE\s+-\s+no\s+ad group$/);
    expect(row(S.lifetimeCampaign)).toMatch(/Launch week\s+ACTIVE\s+-\s+no\s+none$/);
    // What the table cannot say is said below it, on stderr.
    const split = `no single daily budget: it is split over its 2 ad groups, each with its own: ${S.twoAdGroupsFirst} (r/programming) 25.00 USD a day, ${S.twoAdGroupsSecond} (r/devops) 30.00 USD a day`;
    expect(table.stderr).toContain(`${S.twoAdGroupsCampaign}: ${split}`);
    expect(table.stderr).toContain(
      `${S.lifetimeCampaign}: its ad group ${S.lifetimeAdGroup} has a lifetime budget of 1,000.00 USD, not a daily one`,
    );

    // Five campaigns and six ad groups, two to a page: 3 + 3 pages, each next one by its next_url.
    const calls = apiCalls();
    const campaignPages = calls.filter((r) => r.path === '/api/v3/ad_accounts/a2_xyz/campaigns');
    const groupPages = calls.filter((r) => r.path === '/api/v3/ad_accounts/a2_xyz/ad_groups');
    expect(campaignPages).toHaveLength(3);
    expect(groupPages).toHaveLength(3);
    expect(calls).toHaveLength(6);
    expect(campaignPages.filter((r) => r.query.has('page.token'))).toHaveLength(2);
    expect(groupPages.filter((r) => r.query.has('page.token'))).toHaveLength(2);
    for (const call of calls) {
      expect(call.method).toBe('GET');
      expect(call.headers['user-agent']).toBe(REDDIT_TEST_USER_AGENT);
      expect(call.headers.authorization).toMatch(/^Bearer eyJ/);
    }

    const campaigns = await list(USD);
    expect(campaigns.map((c) => c.id)).toEqual([
      S.cboCampaign,
      S.singleDailyCampaign,
      S.twoAdGroupsCampaign,
      S.lifetimeCampaign,
      S.pausedCampaign,
    ]);
    expect(byId(campaigns, S.cboCampaign)).toMatchObject({
      status: 'ACTIVE',
      currency: 'USD',
      daily_budget: '100.00',
      daily_budget_micros: '100000000',
      budget_level: 'campaign',
      budget_id: S.cboCampaign,
      shared_budget: false,
      budget_note: null,
    });
    expect(byId(campaigns, S.singleDailyCampaign)).toMatchObject({
      daily_budget: '50.00',
      daily_budget_micros: '50000000',
      budget_level: 'ad_group',
      budget_id: S.singleDailyAdGroup,
    });
    // Several ad groups without CBO: no one daily budget, each ad group named with its own.
    expect(byId(campaigns, S.twoAdGroupsCampaign)).toMatchObject({
      daily_budget: null,
      daily_budget_micros: null,
      budget_level: 'ad_group',
      budget_id: null,
      budget_note: split,
    });
    expect(byId(campaigns, S.lifetimeCampaign)).toMatchObject({
      daily_budget: null,
      budget_level: 'none',
      budget_id: null,
    });
  });
});

describe('campaigns set-budget', () => {
  it('--validate-only is simulated (nothing sent); for real it PATCHes the ad group (no CBO) with {data:{goal_type,goal_value}}; both audited', async () => {
    const dry = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.singleDailyCampaign,
      '--daily',
      '80',
      '--validate-only',
    ]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stderr).toContain(
      `${USD} campaign ${S.singleDailyCampaign} (Retargeting): daily budget 50.00 USD → 80.00 USD passes credvault's checks (simulated: the platform has no dry run, nothing was sent)`,
    );
    expect(apiCalls().every((r) => r.method === 'GET')).toBe(true);
    expect(double.adGroup(S.singleDailyAdGroup)!.goal_value).toBe(50_000_000);

    const result = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.singleDailyCampaign,
      '--daily',
      '75',
      '--yes',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(
      `${USD} campaign ${S.singleDailyCampaign} (Retargeting): daily budget 50.00 USD → 75.00 USD`,
    );
    const [patch, ...more] = patches();
    expect(more).toHaveLength(0);
    expect(patch!.path).toBe(`/api/v3/ad_groups/${S.singleDailyAdGroup}`);
    expect(patch!.json).toEqual({ data: { goal_type: 'DAILY_SPEND', goal_value: 75_000_000 } });
    expect(patch!.headers['user-agent']).toBe(REDDIT_TEST_USER_AGENT);
    expect(patch!.headers['content-type']).toContain('application/json');
    expect(double.adGroup(S.singleDailyAdGroup)!.goal_value).toBe(75_000_000);
    expect(double.campaign(S.singleDailyCampaign)!.goal_value).toBeNull();

    const rows = await auditRows(S.singleDailyCampaign);
    const validated = rows.find((r) => r.action === 'campaign.budget.validate');
    expect(validated).toMatchObject({
      outcome: 'success',
      detail: { mode: 'simulated', previous_micros: '50000000', new_micros: '80000000' },
    });
    const applied = rows.find((r) => r.action === 'campaign.budget');
    expect(applied).toMatchObject({
      outcome: 'success',
      detail: {
        platform: 'reddit_ads',
        account: 'a2_xyz',
        mode: 'applied',
        currency: 'USD',
        previous_micros: '50000000',
        new_micros: '75000000',
        budget_level: 'ad_group',
        budget_id: S.singleDailyAdGroup,
      },
    });
  });

  it('changes the campaign itself when it uses CBO (--json); its ad group is left alone', async () => {
    const result = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      USD,
      S.cboCampaign,
      '--daily',
      '120.50',
      '--yes',
    ]);
    expect(result).toMatchObject({
      campaign_id: S.cboCampaign,
      mode: 'applied',
      currency: 'USD',
      previous_daily_budget: '100.00',
      new_daily_budget: '120.50',
      previous_micros: '100000000',
      new_micros: '120500000',
      budget_level: 'campaign',
      budget_id: S.cboCampaign,
    });
    expect(patches().map((p) => [p.path, p.json])).toEqual([
      [`/api/v3/campaigns/${S.cboCampaign}`, { data: { goal_type: 'DAILY_SPEND', goal_value: 120_500_000 } }],
    ]);
    expect(double.campaign(S.cboCampaign)!.goal_value).toBe(120_500_000);
    expect(double.adGroup(S.cboAdGroup)!.goal_value).toBeNull();
  });

  it('the simulation refuses what Reddit would: less than its daily minimum (exit 2, nothing sent)', async () => {
    const low = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.cboCampaign,
      '--daily',
      '4.99',
      '--validate-only',
    ]);
    expect(low.code).toBe(2);
    expect(low.stderr).toContain('Reddit Ads refuses a daily budget below 5.00 USD (asked: 4.99 USD)');
    expect(patches()).toHaveLength(0);
  });

  it('several ad groups without CBO: refused with each ad group named, nothing sent, for real or validate-only', async () => {
    const real = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.twoAdGroupsCampaign,
      '--daily',
      '100',
      '--yes',
    ]);
    expect(real.code).toBe(2);
    expect(real.stderr).toContain(
      `Reddit Ads campaign ${S.twoAdGroupsCampaign} (Prospecting) has no single daily budget: it is split over its 2 ad groups, each with its own: ${S.twoAdGroupsFirst} (r/programming) 25.00 USD a day, ${S.twoAdGroupsSecond} (r/devops) 30.00 USD a day; credvault does not divide one amount between ad groups, so nothing was changed`,
    );
    expect(real.stderr).toContain('turn on campaign budget optimization');
    const dry = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.twoAdGroupsCampaign,
      '--daily',
      '100',
      '--validate-only',
      '--json',
    ]);
    expect(dry.code).toBe(2);
    expect(JSON.parse(dry.stderr).error.code).toBe('invalid_input');
    expect(patches()).toHaveLength(0);
    expect(double.adGroup(S.twoAdGroupsFirst)!.goal_value).toBe(25_000_000);
    expect(double.adGroup(S.twoAdGroupsSecond)!.goal_value).toBe(30_000_000);
  });

  it('without --yes off a terminal: exit 2, Reddit not even asked', async () => {
    const result = await v.cli(['campaigns', 'set-budget', USD, S.singleDailyCampaign, '--daily', '90']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('needs confirmation');
    expect(result.stderr).toContain('--yes');
    expect(apiCalls()).toHaveLength(0);
    expect(double.adGroup(S.singleDailyAdGroup)!.goal_value).toBe(50_000_000);
  });
});

describe('amounts at the edges', () => {
  it('1234567.89 USD is 1234567890000 micro-currency, and campaigns list shows it back', async () => {
    const result = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.singleDailyCampaign,
      '--daily',
      '1234567.89',
      '--yes',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('50.00 USD → 1,234,567.89 USD');
    expect(patches().map((p) => p.json)).toEqual([
      { data: { goal_type: 'DAILY_SPEND', goal_value: 1_234_567_890_000 } },
    ]);
    expect(double.adGroup(S.singleDailyAdGroup)!.goal_value).toBe(1_234_567_890_000);
    const table = await v.cli(['campaigns', 'list', USD]);
    expect(table.stdout).toMatch(
      new RegExp(`${S.singleDailyCampaign}\\s+Retargeting\\s+ACTIVE\\s+1,234,567\\.89 USD\\s+no\\s+ad group`),
    );
  });

  it('0.01 is 10000 micro-currency; below Reddit`s minimum it is Reddit that refuses, with its own message (exit 2)', async () => {
    // The simulation knows no minimum for EUR (none is documented): it passes, and says so in JSON.
    const dry = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      EUR,
      S.eurCampaign,
      '--daily',
      '0.01',
      '--validate-only',
    ]);
    expect(dry).toMatchObject({
      mode: 'simulated',
      currency: 'EUR',
      previous_daily_budget: '20.00',
      new_daily_budget: '0.01',
      new_micros: '10000',
      budget_level: 'ad_group',
      budget_id: S.eurAdGroup,
    });
    expect(patches()).toHaveLength(0);

    const refused = await v.cli(['campaigns', 'set-budget', EUR, S.eurCampaign, '--daily', '0.01', '--yes']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      `changing the budget of Reddit ad group ${S.eurAdGroup} (campaign ${S.eurCampaign}) failed with HTTP 400: goal_value 10000 (0.01 EUR) is below the minimum daily budget of 5000000 (5.00 EUR)`,
    );
    expect(patches().map((p) => p.json)).toEqual([
      { data: { goal_type: 'DAILY_SPEND', goal_value: 10_000 } },
    ]);
    expect(double.adGroup(S.eurAdGroup)!.goal_value).toBe(20_000_000);
  });

  it('JPY has no minor unit: 1500 is 1500000000 micro-currency; 1000.5 is refused (exit 2) before anything is sent', async () => {
    // As a connection imported from a .env file: it knows no currency, and Reddit's accounts say it.
    await v.sql(
      `update ad_account_connections set details = details - 'currency' where external_account_id = 'a2_jpy'`,
    );
    const fraction = await v.cli([
      'campaigns',
      'set-budget',
      JPY,
      JPY_CAMPAIGN,
      '--daily',
      '1000.5',
      '--yes',
    ]);
    expect(fraction.code).toBe(2);
    expect(fraction.stderr).toContain('JPY has no minor unit: "1000.5" cannot be charged');
    expect(patches()).toHaveLength(0);

    const result = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      JPY,
      JPY_CAMPAIGN,
      '--daily',
      '1500',
      '--yes',
    ]);
    expect(result).toMatchObject({
      mode: 'applied',
      currency: 'JPY',
      previous_daily_budget: '3000',
      new_daily_budget: '1500',
      previous_micros: '3000000000',
      new_micros: '1500000000',
    });
    expect(patches().map((p) => [p.path, p.json])).toEqual([
      [
        `/api/v3/ad_groups/${JPY_AD_GROUP}`,
        { data: { goal_type: 'DAILY_SPEND', goal_value: 1_500_000_000 } },
      ],
    ]);
    expect(double.adGroup(JPY_AD_GROUP)!.goal_value).toBe(1_500_000_000);
  });
});

describe('errors from the API', () => {
  it('401: exactly one refresh, then the retry succeeds; a second 401 is exit 4', async () => {
    // Reddit stops taking the access token credvault holds (revoked elsewhere).
    for (const token of double.accessTokens.values()) token.revoked = true;
    let refreshes = double.refreshCount;
    const listed = await v.cli(['campaigns', 'list', USD, '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toHaveLength(5);
    expect(double.refreshCount - refreshes).toBe(1);
    const refresh = double.requests.slice(mark).filter((r) => r.path === '/api/v1/access_token');
    expect(refresh).toHaveLength(1);
    expect(refresh[0]!.headers['user-agent']).toBe(REDDIT_TEST_USER_AGENT);

    // The PATCH itself refused once: one refresh, the change made once.
    refreshes = double.refreshCount;
    const writes = double.appliedBudgetWrites.length;
    double.faults.failNext(1, {
      path: '/api/v3/ad_groups/',
      status: 401,
      body: { message: 'Unauthorized', error: 401 },
    });
    const set = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.singleDailyCampaign,
      '--daily',
      '66',
      '--yes',
    ]);
    expect(set.code, set.stderr).toBe(0);
    expect(double.refreshCount - refreshes).toBe(1);
    expect(double.appliedBudgetWrites.length - writes).toBe(1);
    expect(double.adGroup(S.singleDailyAdGroup)!.goal_value).toBe(66_000_000);

    // Refused again after the refresh: a person must connect again.
    refreshes = double.refreshCount;
    double.faults.failNext(100, {
      path: '/api/v3/',
      status: 401,
      body: { message: 'Unauthorized', error: 401 },
    });
    const failed = await v.cli(['campaigns', 'list', USD]);
    expect(failed.code).toBe(4);
    expect(failed.stderr).toContain('failed with HTTP 401: Unauthorized');
    expect(failed.stderr).toContain('credvault connect');
    expect(double.refreshCount - refreshes).toBe(1);
  });

  it('429: exit 5 with the wait from x-ratelimit-reset; no refresh, nothing changed', async () => {
    const refreshes = double.refreshCount;
    double.throttleAdsApi(1, { resetSeconds: 42 });
    const listed = await v.cli(['campaigns', 'list', USD]);
    expect(listed.code).toBe(5);
    expect(listed.stderr).toContain('failed with HTTP 429: Too Many Requests');
    expect(listed.stderr).toContain('The platform asks to wait 42 s before trying again.');

    // The reads before the PATCH go through; the PATCH is throttled.
    double.faults.failNext(1, {
      path: '/api/v3/ad_groups/',
      status: 429,
      body: { message: 'Too Many Requests', error: 429 },
      headers: { 'x-ratelimit-used': '400', 'x-ratelimit-remaining': '0.0', 'x-ratelimit-reset': '17' },
    });
    const set = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.singleDailyCampaign,
      '--daily',
      '77',
      '--yes',
    ]);
    expect(set.code).toBe(5);
    expect(set.stderr).toContain(`changing the budget of Reddit ad group ${S.singleDailyAdGroup}`);
    expect(set.stderr).toContain('The platform asks to wait 17 s before trying again.');
    expect(double.refreshCount).toBe(refreshes);
    expect(double.adGroup(S.singleDailyAdGroup)!.goal_value).toBe(50_000_000);
    expect(double.faults.pending.failures).toBe(0);
  });

  it('a 200 whose object does not carry the new budget is not taken for a change (exit 5)', async () => {
    // Reddit answers with the object as it is now; one that still has the old goal_value did not change.
    double.faults.failNext(1, {
      path: '/api/v3/ad_groups/',
      status: 200,
      body: { data: structuredClone(double.adGroup(S.singleDailyAdGroup)) },
    });
    const set = await v.cli([
      'campaigns',
      'set-budget',
      USD,
      S.singleDailyCampaign,
      '--daily',
      '60',
      '--yes',
    ]);
    expect(set.code).toBe(5);
    expect(set.stderr).toContain(
      'Reddit answered 200 but reports goal_type DAILY_SPEND, goal_value 50000000 (sent DAILY_SPEND, 60000000): the budget may not have changed',
    );
  });

  it('more pages than the bound: exit 5 and nothing changed, not a list cut short (a second ad group past it missed)', async () => {
    // JP launch gets a second ad group behind 2,000 others: 1,001 pages of two, past the 1,000-page bound.
    const filler = '2000000000000000299';
    double.accounts.campaigns!.push(redditCampaign({ id: filler, ad_account_id: 'a2_jpy', name: 'Filler' }));
    for (let i = 0; i < 2_000; i++) {
      const id = String(1_000_000_000_000_100_000n + BigInt(i));
      double.accounts.adGroups!.push(redditAdGroup({ id, ad_account_id: 'a2_jpy', campaign_id: filler }));
    }
    double.accounts.adGroups!.push(
      redditAdGroup({ id: '1000000000000000212', ad_account_id: 'a2_jpy', campaign_id: JPY_CAMPAIGN }),
    );
    const listed = await v.cli(['campaigns', 'list', JPY]);
    expect(listed.code, listed.stderr.slice(0, 500)).toBe(5);
    expect(listed.stdout).toBe('');
    expect(listed.stderr).toContain('Reddit still had more after 1000 pages');
    // Before the bound was an error, JP launch looked like one ad group and that one was changed.
    const change = await v.cli(['campaigns', 'set-budget', JPY, JPY_CAMPAIGN, '--daily', '1500', '--yes']);
    expect(change.code, change.stderr.slice(0, 500)).toBe(5);
    expect(patches()).toHaveLength(0);
  });

  it('a currency that could not be looked up says why: a 403 is the grant (connect again, exit 4), a 5xx a retry (exit 5)', async () => {
    // As a connection imported from a .env file: no currency stored, so Reddit's businesses are asked.
    await v.sql(
      `update ad_account_connections set details = details - 'currency' where external_account_id = 'a2_uvw'`,
    );
    const setBudget = () =>
      v.cli(['campaigns', 'set-budget', EUR, S.eurCampaign, '--daily', '25', '--validate-only']);
    double.faults.failNext(1, {
      status: 403,
      body: { message: 'Forbidden', error: 403 },
      path: '/api/v3/me/businesses',
    });
    const forbidden = await setBudget();
    expect(forbidden.code, forbidden.stderr).toBe(4);
    expect(forbidden.stderr).toContain(
      `the currency of campaign ${S.eurCampaign} is not known (the connection has none stored), and looking it up failed`,
    );
    expect(forbidden.stderr).toContain('HTTP 403');
    expect(forbidden.stderr).toContain('credvault connect reddit_ads --account a2_uvw');
    expect(forbidden.stderr).not.toContain('bug worth reporting');

    double.faults.failNext(1, { status: 503, body: 'Service Unavailable', path: '/api/v3/me/businesses' });
    const unavailable = await setBudget();
    expect(unavailable.code, unavailable.stderr).toBe(5);
    expect(unavailable.stderr).toContain('looking it up failed');
    expect(unavailable.stderr).not.toContain('bug worth reporting');

    // Once Reddit answers, the currency is found and the check goes on.
    const fine = await setBudget();
    expect(fine.code, fine.stderr).toBe(0);
    expect(patches()).toHaveLength(0);
  });

  it('leaves no secret in the output or the database', async () => {
    await expectNoSecretsLeaked(v, [refreshToken, app.clientSecret, ...double.accessTokens.keys()]);
  });

  // Last: it leaves the app with a User-Agent that Reddit throttles.
  it('Reddit refuses a generic User-Agent; credvault sends the app`s own on every call', async () => {
    // Until now, every call (token endpoint and Ads API alike) carried the app's descriptive one.
    expect(new Set(double.requests.map((r) => r.headers['user-agent']))).toEqual(
      new Set([REDDIT_TEST_USER_AGENT]),
    );
    const update = await v.cli(['apps', 'update', app.label, '--user-agent', 'python-requests/2.32.3']);
    expect(update.code, update.stderr).toBe(0);
    const refused = await v.cli(['campaigns', 'list', USD]);
    expect(refused.code).toBe(5);
    expect(refused.stderr).toContain('HTTP 429');
    expect(new Set(apiCalls().map((r) => r.headers['user-agent']))).toEqual(
      new Set(['python-requests/2.32.3']),
    );
  });
});
