/**
 * `credvault campaigns` on LinkedIn Ads, end to end: the built binary against the LinkedIn double
 * (adCampaigns search with Rest.li 2.0 paging, PARTIAL_UPDATE of dailyBudget as a decimal string, no
 * dry run). One vault, one grant and three ad accounts (USD, EUR, JPY) shared by every test: each CLI
 * call costs about a second on the embedded database.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CampaignJson, BudgetResultJson as ResultJson } from '../../src/cli/commands/campaigns.js';
import type { RecordedRequest } from '../doubles/index.js';
import {
  type LinkedInAccounts,
  type LinkedInCampaign,
  type LinkedInDouble,
  linkedInCampaign,
  startLinkedInDouble,
} from '../doubles/linkedin.js';
import { addAppFor, adoptGrant } from '../helpers/flows.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { createVault, type TestVault } from '../helpers/vault.js';

const USD = { id: 7001, currency: 'USD' };
const EUR = { id: 7002, currency: 'EUR' };
const JPY = { id: 7003, currency: 'JPY' };
/** More campaigns than one page of 100 (credvault's pageSize). */
const MANY = 150;
const TOTAL_ONLY = 70019001;
const ARCHIVED = 70019002;

function accounts(): LinkedInAccounts {
  const account = (a: { id: number; currency: string }, name: string) => ({
    id: a.id,
    name,
    currency: a.currency,
    status: 'ACTIVE',
    type: 'BUSINESS',
    reference: 'urn:li:organization:77',
    test: false,
  });
  const campaigns: LinkedInCampaign[] = [];
  for (let i = 1; i <= MANY; i++)
    campaigns.push(
      linkedInCampaign(USD, {
        id: 70010000 + i,
        name: `US campaign ${i}`,
        status: i % 3 === 0 ? 'PAUSED' : 'ACTIVE',
        dailyBudget: '50.00',
      }),
    );
  campaigns.push(
    linkedInCampaign(USD, {
      id: TOTAL_ONLY,
      name: 'US lifetime',
      status: 'DRAFT',
      dailyBudget: null,
      totalBudget: '1000.00',
    }),
    linkedInCampaign(USD, { id: ARCHIVED, name: 'US archived', status: 'ARCHIVED', dailyBudget: '40.00' }),
    linkedInCampaign(EUR, { id: 70020001, name: 'EU awareness', dailyBudget: '30.00' }),
    linkedInCampaign(JPY, { id: 70030001, name: 'JP awareness', dailyBudget: '5000' }),
  );
  return {
    member: 'urn:li:person:op',
    adAccounts: [account(USD, 'US account'), account(EUR, 'EU account'), account(JPY, 'JP account')],
    roles: [USD, EUR, JPY].map((a) => ({ account: a.id, role: 'ACCOUNT_MANAGER' })),
    campaigns,
  };
}

let double: LinkedInDouble;
let v: TestVault;
let secrets: string[] = [];

beforeAll(async () => {
  // LinkedIn's minimum daily budget is known for USD only; the double is told one for JPY so that a
  // budget credvault lets through is refused by the platform (its 400, passed on).
  double = await startLinkedInDouble({
    accounts: accounts(),
    minDailyBudget: { USD: '10.00', JPY: '1000' },
  });
  v = await createVault();
  const app = await addAppFor(v, 'linkedin_ads', double as never);
  const grant = double.issueGrant({ clientId: app.clientId, scope: ['r_ads', 'rw_ads'] });
  secrets = [grant.refreshToken, grant.accessToken, app.clientSecret];
  await adoptGrant(v, 'linkedin_ads', app.label, grant.refreshToken, {
    accounts: [USD, EUR, JPY].map((account) => String(account.id)),
    json: true,
  });
});

afterAll(async () => {
  if (v) {
    await expectNoSecretsLeaked(v, [...secrets, ...double.accessTokens.keys()]);
    await v.destroy();
  }
  await double?.close();
});

let mark = 0;
beforeEach(() => {
  mark = double.requests.length;
});

/** The Marketing API requests since the test began. */
function apiCalls(method?: string): RecordedRequest[] {
  return double.requests
    .slice(mark)
    .filter((r) => r.path.startsWith('/rest/') && (method === undefined || r.method === method));
}

function campaign(id: number): LinkedInCampaign {
  return double.accounts.campaigns!.find((c) => c.id === id)!;
}

async function setBudget(conn: { id: number }, id: number, daily: string, ...flags: string[]) {
  return v.cli([
    'campaigns',
    'set-budget',
    `linkedin_ads:${conn.id}`,
    String(id),
    '--daily',
    daily,
    ...flags,
  ]);
}

describe('campaigns list', () => {
  it('pages through adCampaigns search with pageSize/pageToken, Rest.li 2.0 syntax and the version headers', async () => {
    const list = await v.json<CampaignJson[]>(['campaigns', 'list', `linkedin_ads:${USD.id}`]);
    // 150 with a daily budget + the lifetime one; ARCHIVED is not asked for.
    expect(list).toHaveLength(MANY + 1);
    expect(list.map((c) => c.id)).not.toContain(String(ARCHIVED));
    expect(list[0]).toEqual({
      id: '70010001',
      name: 'US campaign 1',
      status: 'ACTIVE',
      currency: 'USD',
      daily_budget: '50.00',
      daily_budget_micros: '50000000',
      budget_level: 'campaign',
      budget_id: null,
      shared_budget: false,
      shared_by: null,
      budget_note: null,
    });
    expect(list.find((c) => c.id === '70010003')).toMatchObject({ status: 'PAUSED' });
    expect(list.find((c) => c.id === String(TOTAL_ONLY))).toMatchObject({
      status: 'DRAFT',
      currency: 'USD',
      daily_budget: null,
      daily_budget_micros: null,
      budget_level: 'none',
      budget_note: 'it has only a total budget of 1,000.00 USD for its whole run',
    });

    const pages = apiCalls('GET').filter((r) => r.path === `/rest/adAccounts/${USD.id}/adCampaigns`);
    expect(pages).toHaveLength(2);
    const [first, second] = pages as [RecordedRequest, RecordedRequest];
    expect(first.query.get('q')).toBe('search');
    expect(first.query.get('search')).toBe('(status:(values:List(ACTIVE,PAUSED,DRAFT)))');
    expect(first.query.get('pageSize')).toBe('100');
    expect(first.query.get('pageToken')).toBeNull();
    expect(second.query.get('pageToken')).toBeTruthy();
    for (const r of apiCalls()) {
      expect(r.headers['linkedin-version']).toBe('202608');
      expect(r.headers['x-restli-protocol-version']).toBe('2.0.0');
      expect(r.headers.authorization).toMatch(/^Bearer AQV/);
    }
  });

  it('shows a campaign with only a total budget as having no daily budget in the table', async () => {
    const table = await v.cli(['campaigns', 'list', `linkedin_ads:${USD.id}`]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/DAILY BUDGET/);
    expect(table.stdout).toMatch(/70010001\s+US campaign 1\s+ACTIVE\s+50\.00 USD\s+no\s+campaign/);
    expect(table.stdout).toMatch(/70019001\s+US lifetime\s+DRAFT\s+-\s+no\s+none/);
  });
});

describe('campaigns list without a known currency', () => {
  it('reads the currency from the ad account when the connection does not know it (an imported token)', async () => {
    await v.sql(
      "update ad_account_connections set details = details - 'currency' where external_account_id = $1",
      [String(JPY.id)],
    );
    const list = await v.json<CampaignJson[]>(['campaigns', 'list', `linkedin_ads:${JPY.id}`]);
    expect(list).toEqual([
      expect.objectContaining({
        id: '70030001',
        currency: 'JPY',
        daily_budget: '5000',
        daily_budget_micros: '5000000000',
      }),
    ]);
    expect(apiCalls('GET').map((r) => r.path)).toEqual([
      `/rest/adAccounts/${JPY.id}`,
      `/rest/adAccounts/${JPY.id}/adCampaigns`,
    ]);
  });
});

describe('campaigns set-budget', () => {
  it('--validate-only is simulated: checked locally, no write sent, the answer says "simulated"', async () => {
    const json = await setBudget(USD, 70010008, '75', '--validate-only', '--json');
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout) as ResultJson).toMatchObject({
      mode: 'simulated',
      previous_daily_budget: '50.00',
      new_daily_budget: '75.00',
      new_micros: '75000000',
    });
    const text = await setBudget(USD, 70010008, '75', '--validate-only');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout + text.stderr).toContain('50.00 USD → 75.00 USD');
    expect(text.stdout + text.stderr).toMatch(/simulated.*nothing was sent/);
    // Below LinkedIn's minimum: refused by the simulation too, still nothing sent.
    const low = await setBudget(USD, 70010008, '9.99', '--validate-only');
    expect(low.code).toBe(2);
    expect(low.stderr).toContain('below 10.00 USD');
    expect(apiCalls('POST')).toHaveLength(0);
    expect(apiCalls().every((r) => r.method === 'GET')).toBe(true);
    expect(campaign(70010008).dailyBudget).toEqual({ amount: '50.00', currencyCode: 'USD' });
  });

  it('sends a PARTIAL_UPDATE of dailyBudget as an exact decimal string (1234567.89), answered 204; list shows it; audited', async () => {
    const result = await setBudget(USD, 70010007, '1234567.89', '--yes', '--json');
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout) as ResultJson).toMatchObject({
      campaign_id: '70010007',
      mode: 'applied',
      currency: 'USD',
      previous_daily_budget: '50.00',
      new_daily_budget: '1234567.89',
      previous_micros: '50000000',
      new_micros: '1234567890000',
      budget_level: 'campaign',
    });
    const writes = apiCalls('POST');
    expect(writes).toHaveLength(1);
    const write = writes[0]!;
    expect(write.path).toBe(`/rest/adAccounts/${USD.id}/adCampaigns/70010007`);
    expect(write.headers['x-restli-method']).toBe('PARTIAL_UPDATE');
    expect(write.headers['linkedin-version']).toBe('202608');
    expect(write.headers['content-type']).toMatch(/^application\/json/);
    expect(JSON.parse(write.body)).toEqual({
      patch: { $set: { dailyBudget: { amount: '1234567.89', currencyCode: 'USD' } } },
    });
    expect(double.budgetWrites().at(-1)).toMatchObject({
      campaignId: 70010007,
      from: { amount: '50.00', currencyCode: 'USD' },
      to: { amount: '1234567.89', currencyCode: 'USD' },
    });
    expect(campaign(70010007).dailyBudget).toEqual({ amount: '1234567.89', currencyCode: 'USD' });

    const list = await v.json<CampaignJson[]>(['campaigns', 'list', `linkedin_ads:${USD.id}`]);
    expect(list.find((c) => c.id === '70010007')).toMatchObject({
      daily_budget: '1234567.89',
      daily_budget_micros: '1234567890000',
    });

    const audit = await v.json<
      Array<{ action: string; outcome: string; target_id: string; detail: Record<string, unknown> }>
    >(['audit', 'list', '--limit', '20']);
    // The validate-only runs of the test before are audited too, with their own action.
    expect(
      audit.find((a) => a.action === 'campaign.budget.validate' && a.outcome === 'success'),
    ).toMatchObject({
      target_id: '70010008',
      detail: { mode: 'simulated', previous_micros: '50000000', new_micros: '75000000' },
    });
    const row = audit.find((a) => a.action === 'campaign.budget' && a.target_id === '70010007');
    expect(row).toMatchObject({
      outcome: 'success',
      detail: {
        platform: 'linkedin_ads',
        account: String(USD.id),
        mode: 'applied',
        currency: 'USD',
        previous_micros: '50000000',
        new_micros: '1234567890000',
      },
    });
  });

  it('converts amounts exactly at the edges: 0.01 EUR, 5000 JPY; refuses 1000.5 JPY and 0.01 USD locally', async () => {
    const cent = await setBudget(EUR, 70020001, '0.01', '--yes', '--json');
    expect(cent.code, cent.stderr).toBe(0);
    expect(JSON.parse(cent.stdout) as ResultJson).toMatchObject({
      previous_daily_budget: '30.00',
      new_daily_budget: '0.01',
      new_micros: '10000',
    });
    const yen = await setBudget(JPY, 70030001, '7000', '--yes', '--json');
    expect(yen.code, yen.stderr).toBe(0);
    expect(JSON.parse(yen.stdout) as ResultJson).toMatchObject({
      currency: 'JPY',
      previous_daily_budget: '5000',
      new_daily_budget: '7000',
      previous_micros: '5000000000',
      new_micros: '7000000000',
    });
    expect(apiCalls('POST').map((r) => JSON.parse(r.body))).toEqual([
      { patch: { $set: { dailyBudget: { amount: '0.01', currencyCode: 'EUR' } } } },
      { patch: { $set: { dailyBudget: { amount: '7000', currencyCode: 'JPY' } } } },
    ]);

    mark = double.requests.length;
    const half = await setBudget(JPY, 70030001, '1000.5', '--yes');
    expect(half.code).toBe(2);
    expect(half.stderr).toContain('JPY has no minor unit');
    const low = await setBudget(USD, 70010009, '0.01', '--yes');
    expect(low.code).toBe(2);
    expect(low.stderr).toContain('LinkedIn Ads refuses a daily budget below 10.00 USD');
    expect(apiCalls('POST')).toHaveLength(0);
    expect(campaign(70030001).dailyBudget).toEqual({ amount: '7000', currencyCode: 'JPY' });
    expect(campaign(70010009).dailyBudget).toEqual({ amount: '50.00', currencyCode: 'USD' });
  });

  it("passes LinkedIn's own validation error on with exit 2 and its message; nothing changed", async () => {
    const result = await setBudget(JPY, 70030001, '500', '--yes');
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('Daily budget 500 JPY is below the minimum daily budget of 1000 JPY');
    expect(result.stderr).toContain('FIELD_VALUE_TOO_LOW');
    expect(apiCalls('POST')).toHaveLength(1);
    expect(campaign(70030001).dailyBudget).toEqual({ amount: '7000', currencyCode: 'JPY' });
  });

  it('refuses clearly a campaign that has only a total budget, without sending anything', async () => {
    const result = await setBudget(USD, TOTAL_ONLY, '50', '--yes');
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      `LinkedIn Ads campaign ${TOTAL_ONLY} has no daily budget to change: it has only a total budget of 1,000.00 USD for its whole run`,
    );
    expect(apiCalls('POST')).toHaveLength(0);
    expect(campaign(TOTAL_ONLY).dailyBudget).toBeNull();
  });

  it('off a terminal without --yes: exit 2, and the platform is not even asked', async () => {
    const result = await setBudget(USD, 70010010, '99');
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--yes');
    expect(double.requests.length).toBe(mark);
    expect(campaign(70010010).dailyBudget).toEqual({ amount: '50.00', currencyCode: 'USD' });
  });
});

describe('LinkedIn API failures', () => {
  it('a request without LinkedIn-Version is refused by the double as by LinkedIn (400 VERSION_MISSING)', async () => {
    const token = [...double.accessTokens.values()].find((t) => !t.revoked && t.expiresAt > double.now());
    const response = await fetch(
      `${double.url}/rest/adAccounts/${USD.id}/adCampaigns?q=search&search=(status:(values:List(ACTIVE)))`,
      { headers: { authorization: `Bearer ${token!.token}`, 'x-restli-protocol-version': '2.0.0' } },
    );
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ status: 400, code: 'VERSION_MISSING' });
  });

  it("429 on the write: exit 5 with LinkedIn's daily reset as the wait; nothing changed", async () => {
    double.throttleNext(1, { path: `/rest/adAccounts/${USD.id}/adCampaigns/` });
    const result = await setBudget(USD, 70010011, '60', '--yes');
    expect(result.code).toBe(5);
    expect(result.stderr).toContain('throttle limit');
    expect(result.stderr).toMatch(/reset at midnight UTC \(in \d+ (h \d+ )?min\)/);
    expect(double.faults.pending.failures).toBe(0);
    expect(campaign(70010011).dailyBudget).toEqual({ amount: '50.00', currencyCode: 'USD' });
  });

  it('401 from the API: exactly one refresh, and the retry succeeds', async () => {
    double.expireAccessTokens();
    const refreshes = double.refreshAttempts;
    const result = await setBudget(EUR, 70020001, '12.50', '--yes', '--json');
    expect(result.code, result.stderr).toBe(0);
    expect(double.refreshAttempts - refreshes).toBe(1);
    expect(JSON.parse(result.stdout) as ResultJson).toMatchObject({
      mode: 'applied',
      new_daily_budget: '12.50',
    });
    const calls = apiCalls();
    // The first call met the expired token; every later one carried the refreshed token.
    expect(calls[0]!.headers.authorization).not.toBe(calls[1]!.headers.authorization);
    expect(new Set(calls.slice(1).map((r) => r.headers.authorization)).size).toBe(1);
    expect(campaign(70020001).dailyBudget).toEqual({ amount: '12.50', currencyCode: 'EUR' });
  });

  it('a second 401 after the forced refresh: exit 4, one refresh only', async () => {
    const expired = {
      status: 401,
      serviceErrorCode: 65601,
      code: 'EXPIRED_ACCESS_TOKEN',
      message: 'The token used in the request has expired',
    };
    double.faults.failNext(2, { status: 401, body: expired, path: '/rest/' });
    const refreshes = double.refreshAttempts;
    const result = await v.cli(['campaigns', 'list', `linkedin_ads:${EUR.id}`]);
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('The token used in the request has expired');
    expect(result.stderr).toContain('credvault connect');
    expect(double.refreshAttempts - refreshes).toBe(1);
    expect(apiCalls()).toHaveLength(2);
  });
});
