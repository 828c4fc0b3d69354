import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CampaignJson, BudgetResultJson as ResultJson } from '../../src/cli/commands/campaigns.js';
import {
  addGoogleCampaign,
  exhaustGoogleAdsQuota,
  GOOGLE_ADWORDS_SCOPE,
  type GoogleDouble,
  googleQuotaFailure,
  googleUnauthenticatedBody,
  startGoogleDouble,
} from '../doubles/google.js';
import type { RecordedRequest } from '../doubles/index.js';
import { type AppSetup, addAppFor, adoptGrant } from '../helpers/flows.js';
import { atTerminal, HAS_SCRIPT } from '../helpers/terminal.js';
import { createVault, type TestVault } from '../helpers/vault.js';

const MANAGER = '1112223334';
const US = '1234567890'; // USD, granted directly: no login-customer-id
const JP = '2345678901'; // JPY, reached through the manager
const BULK = '3456789012'; // EUR, through the manager, more campaigns than one search page holds
const BULK_CAMPAIGNS = 10_001;
const OWN = '6667778889'; // granted directly and not under the manager, connected through the managed app

let double: GoogleDouble;
let v: TestVault;
/** The app with a developer token and no manager, on the default API version. */
let direct: AppSetup & { id: string };
/** The app with a login customer id (the manager), no developer token, API version v24. */
let managed: AppSetup & { id: string };
const refreshTokens: Record<string, string> = {};

function budgetOf(customerId: string, budgetId: string) {
  const budget = double.accounts.budgets?.find((b) => b.customerId === customerId && b.id === budgetId);
  if (!budget) throw new Error(`no budget ${budgetId}`);
  return budget;
}

/** Requests the double received since `mark` (an index into double.requests). */
function since(mark: number, path?: string): RecordedRequest[] {
  return double.requests.slice(mark).filter((r) => path === undefined || r.path === path);
}

const searchPath = (version: string, cid: string) => `/${version}/customers/${cid}/googleAds:search`;
const mutatePath = (version: string, cid: string) => `/${version}/customers/${cid}/campaignBudgets:mutate`;

function mutateBody(cid: string, budgetId: string, micros: string, validateOnly: boolean) {
  return {
    operations: [
      {
        update: { resourceName: `customers/${cid}/campaignBudgets/${budgetId}`, amountMicros: micros },
        updateMask: 'amountMicros',
      },
    ],
    validateOnly,
    partialFailure: false,
  };
}

async function adopt(app: AppSetup, account: string, name: string): Promise<void> {
  const grant = double.issueGrant({ clientId: app.clientId, scope: GOOGLE_ADWORDS_SCOPE });
  refreshTokens[name] = grant.refreshToken;
  await adoptGrant(v, 'google_ads', app.label, grant.refreshToken, { accounts: [account], name });
}

beforeAll(async () => {
  [double, v] = await Promise.all([startGoogleDouble(), createVault()]);
  // A third client account under the manager with 10,001 campaigns, each on its own budget: two pages
  // at the API's fixed page size.
  const accounts = double.accounts;
  accounts.customers.push({
    id: BULK,
    descriptiveName: 'Acme Bulk',
    currencyCode: 'EUR',
    timeZone: 'Europe/Berlin',
    manager: false,
    testAccount: false,
    status: 'ENABLED',
  });
  accounts.links.push({ managerId: MANAGER, clientId: BULK });
  for (let i = 1; i <= BULK_CAMPAIGNS; i++) {
    const budgetId = String(14_000_000_000 + i);
    accounts.budgets!.push({
      customerId: BULK,
      id: budgetId,
      name: `Bulk ${i}`,
      amountMicros: String(i * 10_000),
      explicitlyShared: false,
    });
    accounts.campaigns!.push({
      customerId: BULK,
      id: String(22_000_000_000 + i),
      name: `Bulk ${i}`,
      status: i % 3 === 0 ? 'PAUSED' : 'ENABLED',
      budgetId,
    });
  }
  accounts.customers.push({
    id: OWN,
    descriptiveName: 'Acme Own',
    currencyCode: 'USD',
    timeZone: 'America/New_York',
    manager: false,
    testAccount: false,
    status: 'ENABLED',
  });
  accounts.accessible.push(OWN);
  accounts.budgets!.push({
    customerId: OWN,
    id: '15000000001',
    name: 'Own',
    amountMicros: '5000000',
    explicitlyShared: false,
  });
  accounts.campaigns!.push({
    customerId: OWN,
    id: '23000000001',
    name: 'Own Search',
    status: 'ENABLED',
    budgetId: '15000000001',
  });
  direct = await addAppFor(v, 'google_ads', double as never, { label: 'google-direct' });
  managed = await addAppFor(v, 'google_ads', double as never, {
    label: 'google-managed',
    // No developer token (optional since 2026-09), the manager as login customer id, an older version.
    extra: { developer_token: undefined, login_customer_id: MANAGER, api_version: 'v24' },
  });
  await adopt(direct, US, 'us');
  await adopt(managed, JP, 'jp');
  await adopt(managed, BULK, 'bulk');
  await adopt(managed, OWN, 'own');
});

afterAll(async () => {
  await double?.close();
  await v?.destroy();
});

describe('campaigns list on Google Ads', () => {
  it('an account granted directly, outside the app’s manager: its calls carry no login-customer-id', async () => {
    const mark = double.requests.length;
    const campaigns = await v.json<CampaignJson[]>(['campaigns', 'list', 'own']);
    expect(campaigns.map((c) => c.id)).toEqual(['23000000001']);
    const [search] = since(mark, searchPath('v24', OWN));
    expect(search!.headers['login-customer-id']).toBeUndefined();
    // Through the manager, it is sent.
    const jp = double.requests.length;
    expect((await v.cli(['campaigns', 'list', 'jp', '--json'])).code).toBe(0);
    expect(since(jp, searchPath('v24', JP))[0]!.headers['login-customer-id']).toBe(MANAGER);
    // The credentials handed to Google's own client libraries say the same.
    const env = async (name: string) =>
      (await v.cli(['token', 'get', name, '--format', 'env'], { secretOutput: true })).stdout;
    expect(await env('own')).not.toContain('GOOGLE_ADS_LOGIN_CUSTOMER_ID');
    expect(await env('jp')).toContain(`GOOGLE_ADS_LOGIN_CUSTOMER_ID=${MANAGER}`);
  });

  it('pages googleAds:search by nextPageToken (never pageSize), through the manager, on the app’s API version', async () => {
    const mark = double.requests.length;
    const campaigns = await v.json<CampaignJson[]>(['campaigns', 'list', 'bulk']);
    expect(campaigns).toHaveLength(BULK_CAMPAIGNS);
    expect(new Set(campaigns.map((c) => c.id)).size).toBe(BULK_CAMPAIGNS);
    expect(campaigns.at(-1)).toMatchObject({
      id: String(22_000_000_000 + BULK_CAMPAIGNS),
      currency: 'EUR',
      daily_budget: '100.01',
      daily_budget_micros: '100010000',
      budget_level: 'campaign_budget',
      shared_budget: false,
    });

    const searches = since(mark, searchPath('v24', BULK));
    expect(searches).toHaveLength(2);
    const [first, second] = searches as [RecordedRequest, RecordedRequest];
    const query = (first.json as { query: string }).query;
    expect(query).toMatch(/^SELECT .*campaign_budget\.amount_micros.* FROM campaign WHERE /);
    expect(first.json).toEqual({ query });
    expect(second.json).toEqual({ query, pageToken: expect.any(String) });
    for (const request of searches) {
      expect(request.json).not.toHaveProperty('pageSize');
      expect(request.headers['login-customer-id']).toBe(MANAGER);
      // The app has no developer token: the header is not sent at all.
      expect(request.headers).not.toHaveProperty('developer-token');
    }
    // Nothing went to the default version.
    expect(since(mark).filter((r) => r.path.startsWith('/v26/'))).toEqual([]);
  });

  it('a search that keeps answering the same nextPageToken is stopped at its repeat: exit 5, no partial list', async () => {
    const mark = double.requests.length;
    double.settings.searchLoopToken = 'same-token';
    try {
      // Killed after 20 s: before the guard it asked without end (tens of thousands of searches).
      const looping = await v.cli(['campaigns', 'list', 'us', '--json'], { timeoutMs: 20_000 });
      expect(looping.code, looping.stderr).toBe(5);
      expect(looping.stdout).toBe('');
      expect(JSON.parse(looping.stderr).error).toMatchObject({ code: 'unavailable' });
      expect(JSON.parse(looping.stderr).error.message).toContain('Google Ads gave the same next page twice');
    } finally {
      double.settings.searchLoopToken = null;
    }
    // The first page gave the token, the second gave it again: two searches, not a loop.
    expect(since(mark, searchPath('v26', US))).toHaveLength(2);
  });

  it('shows daily budgets in the currency, micros as strings, and flags a shared budget', async () => {
    const mark = double.requests.length;
    const table = await v.cli(['campaigns', 'list', 'us']);
    expect(table.code, table.stderr).toBe(0);
    const row = (name: string) => table.stdout.split('\n').find((l) => l.includes(name)) ?? '';
    expect(row('Brand Search')).toMatch(/21000000001\s+Brand Search\s+ENABLED\s+[\d,.]+ USD\s+no\b/);
    expect(row('Generic Search')).toMatch(/120\.00 USD\s+yes \(2 campaigns\)/);
    expect(row('Display Prospecting')).toMatch(/PAUSED\s+120\.00 USD\s+yes \(2 campaigns\)/);
    expect(table.stdout).not.toContain('Summer Sale 2025'); // removed

    const campaigns = await v.json<CampaignJson[]>(['campaigns', 'list', 'us']);
    expect(campaigns.map((c) => c.id)).toEqual(['21000000001', '21000000002', '21000000003', '21000000005']);
    const generic = campaigns.find((c) => c.id === '21000000002')!;
    expect(generic).toEqual({
      id: '21000000002',
      name: 'Generic Search',
      status: 'ENABLED',
      currency: 'USD',
      daily_budget: '120.00',
      daily_budget_micros: '120000000',
      budget_level: 'campaign_budget',
      budget_id: '13000000002',
      shared_budget: true,
      shared_by: 2,
      budget_note: null,
    });
    expect(typeof campaigns[0]!.daily_budget_micros).toBe('string');

    const searches = since(mark, searchPath('v26', US));
    expect(searches).toHaveLength(2); // one page each
    for (const request of searches) {
      // A customer granted directly: no login-customer-id; the app's developer token is sent.
      expect(request.headers).not.toHaveProperty('login-customer-id');
      expect(request.headers['developer-token']).toBe(direct.developerToken);
      expect(request.headers['authorization']).toMatch(/^Bearer ya29\./);
    }
  });
});

describe('campaigns set-budget on Google Ads', () => {
  it('refuses an amount that is no amount before asking the platform anything', async () => {
    const mark = double.requests.length;
    for (const daily of ['abc', '0', '-5', '']) {
      const run = await v.cli(['campaigns', 'set-budget', 'us', '21000000001', '--daily', daily, '--yes']);
      expect(run.code, run.stderr).toBe(2);
      expect(double.requests.slice(mark).map((r) => `${daily}: ${r.method} ${r.path}`)).toEqual([]);
    }
  });

  // At a terminal (script(1) gives it one): the end of input at a prompt is a "no", as Ctrl-C is.
  it.skipIf(!HAS_SCRIPT)(
    'Ctrl-D at the "Change it?" prompt, or at a hidden one, cancels: exit 2, nothing changed (not an internal error)',
    async () => {
      const mark = double.requests.length;
      const change = await atTerminal(
        v,
        'campaigns set-budget us 21000000001 --daily 61',
        'Change it?',
        '\x04',
      );
      expect(change, change).toMatch(/exit=2\b/);
      expect(change).toContain('error: cancelled');
      expect(change).not.toContain('internal');
      expect(since(mark, mutatePath('v26', US))).toEqual([]);

      const before = await v.sql<{ updated_at: Date }>(
        "select updated_at from oauth_app_credentials where label = 'google-direct'",
      );
      const secret = await atTerminal(
        v,
        'apps update google_ads/google-direct --new-client-secret',
        'client secret',
        '\x04',
      );
      expect(secret, secret).toMatch(/exit=2\b/);
      expect(secret).toContain('error: cancelled');
      const after = await v.sql<{ updated_at: Date }>(
        "select updated_at from oauth_app_credentials where label = 'google-direct'",
      );
      expect(after).toEqual(before);
    },
  );

  it('changes the budget for real at the edges (0.01, 1234567.89 USD), validates with Google’s dry run; list and audit show it', async () => {
    const before = budgetOf(US, '13000000001').amountMicros;
    let mark = double.requests.length;
    const small = await v.cli(['campaigns', 'set-budget', 'us', '21000000001', '--daily', '0.01', '--yes']);
    expect(small.code, small.stderr).toBe(0);
    expect(small.stderr).toContain('us campaign 21000000001 (Brand Search): daily budget');
    expect(small.stderr).toContain('→ 0.01 USD');
    const [write] = since(mark, mutatePath('v26', US));
    expect(write?.json).toEqual(mutateBody(US, '13000000001', '10000', false));
    expect(double.settings.budgetWrites.at(-1)).toMatchObject({
      budgetId: '13000000001',
      previousAmountMicros: before,
      amountMicros: '10000',
    });

    mark = double.requests.length;
    const large = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      'us',
      '21000000005',
      '--daily',
      '1234567.89',
      '--yes',
    ]);
    expect(large).toMatchObject({
      campaign_id: '21000000005',
      mode: 'applied',
      currency: 'USD',
      previous_daily_budget: '80.00',
      new_daily_budget: '1234567.89',
      previous_micros: '80000000',
      new_micros: '1234567890000',
      budget_level: 'campaign_budget',
      budget_id: '13000000004',
    });
    expect(since(mark, mutatePath('v26', US))[0]?.json).toEqual(
      mutateBody(US, '13000000004', '1234567890000', false),
    );
    expect(budgetOf(US, '13000000004').amountMicros).toBe('1234567890000');

    // --validate-only: campaignBudgets:mutate with validateOnly, Google's own dry run; nothing changes.
    const writes = double.settings.budgetWrites.length;
    mark = double.requests.length;
    const validated = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      'us',
      '21000000001',
      '--daily',
      '99.99',
      '--validate-only',
    ]);
    expect(validated).toMatchObject({ mode: 'validated', previous_micros: '10000', new_micros: '99990000' });
    expect(since(mark, mutatePath('v26', US)).map((r) => r.json)).toEqual([
      mutateBody(US, '13000000001', '99990000', true),
    ]);
    expect(double.settings.budgetWrites).toHaveLength(writes);
    expect(budgetOf(US, '13000000001').amountMicros).toBe('10000');

    const campaigns = await v.json<CampaignJson[]>(['campaigns', 'list', 'us']);
    const byId = new Map(campaigns.map((c) => [c.id, c]));
    expect(byId.get('21000000001')).toMatchObject({ daily_budget: '0.01', daily_budget_micros: '10000' });
    expect(byId.get('21000000005')).toMatchObject({
      daily_budget: '1234567.89',
      daily_budget_micros: '1234567890000',
    });

    const audit = await v.json<
      Array<{ action: string; outcome: string; actor: string; detail: Record<string, unknown> }>
    >(['audit', 'list', '--connection', 'us']);
    const rows = audit.filter((a) => a.action === 'campaign.budget' && a.outcome === 'success');
    expect(rows.map((a) => a.detail)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          campaign: '21000000001',
          mode: 'applied',
          currency: 'USD',
          previous_micros: before,
          new_micros: '10000',
          budget_id: '13000000001',
        }),
        expect.objectContaining({
          campaign: '21000000005',
          previous_micros: '80000000',
          new_micros: '1234567890000',
        }),
      ]),
    );
    expect(rows[0]?.actor).toBe('test-operator');
    expect(audit.find((a) => a.action === 'campaign.budget.validate')).toMatchObject({
      outcome: 'success',
      detail: { mode: 'validated', previous_micros: '10000', new_micros: '99990000' },
    });
  });

  it('a value Google refuses exits 2 with Google’s code and message, dry run or not, nothing written', async () => {
    const before = budgetOf(US, '13000000001').amountMicros;
    const writes = double.settings.budgetWrites.length;
    const max = double.settings.maxBudgetAmountMicros;
    double.settings.maxBudgetAmountMicros = 1_000_000_000_000n; // 1,000,000 a day
    try {
      for (const flag of ['--validate-only', '--yes']) {
        const mark = double.requests.length;
        const refused = await v.cli([
          'campaigns',
          'set-budget',
          'us',
          '21000000001',
          '--daily',
          '1234567.89',
          flag,
        ]);
        expect(refused.code, refused.stderr).toBe(2);
        expect(refused.stderr).toContain('MONEY_AMOUNT_TOO_LARGE');
        expect(refused.stderr).toContain('A money amount was greater than the maximum allowed.');
        expect(
          since(mark, mutatePath('v26', US)).map((r) => (r.json as { validateOnly: boolean }).validateOnly),
        ).toEqual([flag === '--validate-only']);
      }
    } finally {
      double.settings.maxBudgetAmountMicros = max;
    }
    expect(double.settings.budgetWrites).toHaveLength(writes);
    expect(budgetOf(US, '13000000001').amountMicros).toBe(before);
  });

  it('a campaign total budget (CUSTOM_PERIOD) is listed as such, and set-budget refuses it with nothing sent', async () => {
    const campaign = addGoogleCampaign(double.accounts, { customerId: US, name: 'Launch (total budget)' });
    const budget = double.accounts.budgets!.find((b) => b.id === campaign.budgetId)!;
    Object.assign(budget, { period: 'CUSTOM_PERIOD', totalAmountMicros: '500000000' });
    try {
      const listed = await v.json<CampaignJson[]>(['campaigns', 'list', 'us']);
      expect(listed.find((c) => c.id === campaign.id)).toMatchObject({
        daily_budget: null,
        budget_level: 'none',
        budget_note: 'the campaign has a total budget of 500.00 USD for its whole run, not a daily one',
      });
      const mark = double.requests.length;
      const refused = await v.cli(['campaigns', 'set-budget', 'us', campaign.id, '--daily', '20', '--yes']);
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toContain('has no daily budget to change: the campaign has a total budget');
      expect(since(mark, mutatePath('v26', US))).toEqual([]);
      expect(budget.amountMicros).toBe('10000000');
    } finally {
      double.accounts.campaigns!.splice(double.accounts.campaigns!.indexOf(campaign), 1);
      double.accounts.budgets!.splice(double.accounts.budgets!.indexOf(budget), 1);
    }
  });

  it('a shared budget is refused without --shared (exit 2, nothing sent) and changed for all with it', async () => {
    expect(budgetOf(US, '13000000002').explicitlyShared).toBe(true);
    let mark = double.requests.length;
    const refused = await v.cli(['campaigns', 'set-budget', 'us', '21000000002', '--daily', '150', '--yes']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('shared by 2 campaigns');
    expect(refused.stderr).toContain('--shared');
    expect(since(mark, mutatePath('v26', US))).toEqual([]);
    expect(budgetOf(US, '13000000002').amountMicros).toBe('120000000');
    type Row = { action: string; outcome: string; detail: Record<string, unknown> };
    const rows = (n: number) =>
      v.sql<Row>(
        `select action, outcome, detail from credential_access_audit where target_id = '21000000002' and action like 'campaign.budget%' order by id desc limit ${n}`,
      );
    // Refused by credvault's rule, and on record as a refused change: shared, with which campaigns.
    expect((await rows(1))[0]).toMatchObject({
      action: 'campaign.budget',
      outcome: 'failure',
      detail: {
        requested_micros: '150000000',
        previous_micros: '120000000',
        shared: true,
        shared_by: 2,
        shared_with: ['21000000003'],
        refused_by: 'credvault',
      },
    });

    mark = double.requests.length;
    const changed = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      'us',
      '21000000002',
      '--daily',
      '150',
      '--yes',
      '--shared',
    ]);
    expect(changed).toMatchObject({ mode: 'applied', budget_id: '13000000002', new_daily_budget: '150.00' });
    expect(since(mark, mutatePath('v26', US)).map((r) => r.json)).toEqual([
      mutateBody(US, '13000000002', '150000000', false),
    ]);
    // One budget, two campaigns: both now spend up to 150 a day.
    expect(budgetOf(US, '13000000002').amountMicros).toBe('150000000');
    expect(double.accounts.campaigns!.filter((c) => c.budgetId === '13000000002').map((c) => c.id)).toEqual([
      '21000000002',
      '21000000003',
    ]);
    // The request and its outcome say the budget was shared, which other campaign it changed, and what
    // it was before.
    const [outcome, request] = await rows(2);
    const shared = { previous_micros: '120000000', shared: true, shared_by: 2, shared_with: ['21000000003'] };
    expect(request).toMatchObject({
      action: 'campaign.budget.request',
      detail: { requested_micros: '150000000', ...shared },
    });
    expect(outcome).toMatchObject({
      action: 'campaign.budget',
      outcome: 'success',
      detail: { new_micros: '150000000', ...shared },
    });
  });

  it('without --yes and without a terminal: exit 2, and nothing is asked of Google', async () => {
    const mark = double.requests.length;
    const result = await v.cli(['campaigns', 'set-budget', 'us', '21000000001', '--daily', '5']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--yes');
    expect(since(mark)).toEqual([]);
  });

  it('JPY has no minor unit: 1000 is 1,000,000,000 micros, "1000.5" is refused before anything is sent', async () => {
    const before = budgetOf(JP, '13000000011').amountMicros;
    let mark = double.requests.length;
    const refused = await v.cli([
      'campaigns',
      'set-budget',
      'jp',
      '21000000011',
      '--daily',
      '1000.5',
      '--yes',
    ]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('JPY has no minor unit');
    expect(since(mark, mutatePath('v24', JP))).toEqual([]);
    expect(budgetOf(JP, '13000000011').amountMicros).toBe(before);

    mark = double.requests.length;
    const result = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      'jp',
      '21000000011',
      '--daily',
      '1000',
      '--yes',
    ]);
    expect(result).toMatchObject({
      mode: 'applied',
      currency: 'JPY',
      previous_daily_budget: '5000',
      previous_micros: '5000000000',
      new_daily_budget: '1000',
      new_micros: '1000000000',
    });
    const [write] = since(mark, mutatePath('v24', JP));
    expect(write?.json).toEqual(mutateBody(JP, '13000000011', '1000000000', false));
    expect(write?.headers['login-customer-id']).toBe(MANAGER);
    expect(write?.headers).not.toHaveProperty('developer-token');
    expect(budgetOf(JP, '13000000011').amountMicros).toBe('1000000000');
  });
});

describe('Google Ads API errors', () => {
  /** Expires, at Google, the access tokens of one connection's grant (the vault still thinks them valid). */
  function expireAtGoogle(name: string) {
    const grant = double.findGrant(refreshTokens[name]!)!;
    for (const token of grant.accessTokens) {
      const record = double.accessTokens.get(token)!;
      record.expiresAt = Math.min(record.expiresAt, double.now() - 1);
    }
  }

  it('401 → exactly one refresh and a retry that succeeds; a second 401 → exit 4', async () => {
    expireAtGoogle('us');
    let refreshes = double.refreshAttempts;
    let mark = double.requests.length;
    const list = await v.cli(['campaigns', 'list', 'us', '--json']);
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toHaveLength(4);
    expect(double.refreshAttempts - refreshes).toBe(1);
    const [refused, retried] = since(mark, searchPath('v26', US));
    expect(since(mark, searchPath('v26', US))).toHaveLength(2);
    expect(retried!.headers['authorization']).not.toBe(refused!.headers['authorization']);
    // The retry carried the new token: the double accepts it.
    expect(double.authenticate(retried!).ok).toBe(true);

    refreshes = double.refreshAttempts;
    mark = double.requests.length;
    double.faults.failNext(2, {
      status: 401,
      body: googleUnauthenticatedBody(),
      headers: { 'www-authenticate': 'Bearer' },
      path: `/v26/customers/${US}/`,
    });
    const writes = double.settings.budgetWrites.length;
    const failed = await v.cli(['campaigns', 'set-budget', 'us', '21000000001', '--daily', '7', '--yes']);
    expect(failed.code, failed.stderr).toBe(4);
    expect(failed.stderr).toContain('Request had invalid authentication credentials');
    expect(double.refreshAttempts - refreshes).toBe(1);
    expect(since(mark, searchPath('v26', US))).toHaveLength(2);
    expect(since(mark, mutatePath('v26', US))).toEqual([]);
    expect(double.faults.pending.failures).toBe(0);
    expect(double.settings.budgetWrites).toHaveLength(writes);
  });

  it('429 RESOURCE_EXHAUSTED → exit 5 with Google’s retry delay; no refresh, nothing written', async () => {
    const refreshes = double.refreshAttempts;
    exhaustGoogleAdsQuota(double, 1, { retryDelaySeconds: 42 });
    const list = await v.cli(['campaigns', 'list', 'us']);
    expect(list.code, list.stderr).toBe(5);
    expect(list.stderr).toContain('RESOURCE_EXHAUSTED');
    expect(list.stderr).toContain('Too many requests. Retry in 42 seconds.');
    expect(list.stderr).toContain('wait 42 s');

    // The short-term variant on the write itself (the campaign was read fine): exit 5, budget unchanged.
    const before = budgetOf(US, '13000000001').amountMicros;
    const quota = googleQuotaFailure('v26', {
      quotaError: 'RESOURCE_TEMPORARILY_EXHAUSTED',
      retryDelaySeconds: 7,
    });
    double.faults.failNext(1, {
      status: quota.status,
      body: JSON.parse(quota.body!),
      path: mutatePath('v26', US),
    });
    const set = await v.cli([
      'campaigns',
      'set-budget',
      'us',
      '21000000001',
      '--daily',
      '8',
      '--yes',
      '--json',
    ]);
    expect(set.code, set.stderr).toBe(5);
    expect(JSON.parse(set.stderr)).toEqual({
      error: { code: 'unavailable', message: expect.stringContaining('RESOURCE_TEMPORARILY_EXHAUSTED') },
    });
    expect(budgetOf(US, '13000000001').amountMicros).toBe(before);
    expect(double.refreshAttempts).toBe(refreshes);
  });

  it('a change is on record before it is sent; an outcome the log refuses is reported, not denied; an unanswered write may have happened', async () => {
    const budget = () => budgetOf(US, '13000000001').amountMicros;
    const setBudget = (daily: string, env: Record<string, string> = {}) =>
      v.cli(['campaigns', 'set-budget', 'us', '21000000001', '--daily', daily, '--yes'], { env });

    // The audit log refuses everything: nothing reaches Google.
    await v.refuseAuditWrites();
    let mark = double.requests.length;
    const before = budget();
    try {
      const refused = await setBudget('9');
      expect(refused.code, refused.stderr).toBe(8);
      expect(since(mark, mutatePath('v26', US))).toEqual([]);
      expect(budget()).toBe(before);
    } finally {
      await v.sql('drop trigger refuse_audit on credential_access_audit');
    }

    // Only the outcome row is refused: the change was made, and the command says so (exit 0).
    await v.sql(`create or replace function refuse_outcome() returns trigger language plpgsql as $$
      begin if new.action = 'campaign.budget' then raise exception 'audit is read-only' using errcode = '42501'; end if;
      return new; end $$`);
    await v.sql(
      'create trigger refuse_outcome before insert on credential_access_audit for each row execute function refuse_outcome()',
    );
    try {
      const made = await setBudget('9');
      expect(made.code, made.stderr).toBe(0);
      expect(made.stderr).toContain(
        'the change was made, but its outcome could not be written to the audit log',
      );
      expect(budget()).toBe('9000000');
    } finally {
      await v.sql('drop trigger refuse_outcome on credential_access_audit');
    }
    const requests = await v.sql<{ detail: { requested_micros: string } }>(
      "select detail from credential_access_audit where action = 'campaign.budget.request' order by id desc limit 1",
    );
    expect(requests[0]?.detail.requested_micros).toBe('9000000');

    // Google takes the write and never answers: the budget may have changed, and the command says so.
    mark = double.requests.length;
    double.faults.hangNext(1, { path: mutatePath('v26', US) });
    const hung = await setBudget('11', { CREDVAULT_HTTP_TIMEOUT: '2' });
    expect(hung.code, hung.stderr).toBe(5);
    expect(hung.stderr).toContain('may or may not have changed the budget of campaign 21000000001');
    expect(hung.stderr).toContain('credvault campaigns list us');
    expect(since(mark, mutatePath('v26', US))).toHaveLength(1);
    const unknown = await v.sql<{ outcome: string; detail: { result?: string } }>(
      "select outcome, detail from credential_access_audit where action = 'campaign.budget' order by id desc limit 1",
    );
    // With the budget before, which the CLI had just read: what an operator restores after an unknown outcome.
    expect(unknown[0]).toMatchObject({
      outcome: 'failure',
      detail: { result: 'unknown', requested_micros: '11000000', previous_micros: '9000000', shared: false },
    });
    const [asked] = await v.sql<{ detail: Record<string, unknown> }>(
      "select detail from credential_access_audit where action = 'campaign.budget.request' order by id desc limit 1",
    );
    expect(asked!.detail).toMatchObject({ requested_micros: '11000000', previous_micros: '9000000' });
    // A write answered with a server's failure (500, a gateway's 502 or 504) may have been made too.
    double.faults.failNext(1, { status: 502, body: 'Bad Gateway', path: mutatePath('v26', US) });
    const gateway = await setBudget('11');
    expect(gateway.code, gateway.stderr).toBe(5);
    expect(gateway.stderr).toContain('may or may not have changed the budget of campaign 21000000001');
    // A read that was not answered leaves nothing in doubt: nothing was sent to change.
    // (Each request has its own deadline: a hung read is given up after CREDVAULT_HTTP_TIMEOUT, not
    // after the whole operation's.)
    // Timed from before the command starts, which alone can take seconds on a slow, busy machine:
    // 40 s, half of the operation's deadline (40 requests' worth, 80 s) that a hung read would wait for.
    double.faults.hangNext(1, { path: searchPath('v26', US) });
    const started = Date.now();
    const unread = await setBudget('12', { CREDVAULT_HTTP_TIMEOUT: '2' });
    expect(unread.code, unread.stderr).toBe(5);
    expect(Date.now() - started).toBeLessThan(40_000);
    double.faults.hangNext(1, { path: searchPath('v26', US) });
    const listing = Date.now();
    const list = await v.cli(['campaigns', 'list', 'us'], { env: { CREDVAULT_HTTP_TIMEOUT: '2' } });
    expect(list.code, list.stderr).toBe(5);
    expect(Date.now() - listing).toBeLessThan(40_000);
    expect(unread.stderr).not.toContain('may or may not');
  });

  it('a retired API version: apps update warns as it is set, and a campaign command exits 2 saying how to set a served one', async () => {
    const app = 'google_ads/google-direct';
    try {
      // A warning, not a refusal (a sandbox may still serve it).
      const update = await v.cli(['apps', 'update', app, '--api-version', 'v21']);
      expect(update.code, update.stderr).toBe(0);
      expect(update.stderr).toContain(
        `${app} uses API version v21, which the platform no longer serves (since 2026-08-05)`,
      );
      expect(update.stderr).toContain(`credvault apps update ${app} --api-version`);
      // Google's 404 "API version v21 is not available" is the app's setting, not a missing account.
      const listed = await v.cli(['campaigns', 'list', 'us']);
      expect(listed.code, listed.stderr).toBe(2);
      expect(listed.stderr).toContain('API version v21 is not available');
      expect(listed.stderr).toContain(
        `Google Ads no longer serves API version v21: set a current one with \`credvault apps update ${app} --api-version v26\``,
      );
    } finally {
      const back = await v.cli(['apps', 'update', app, '--api-version', '']);
      expect(back.code, back.stderr).toBe(0);
      expect(back.stderr).not.toContain('no longer serves');
    }
    expect((await v.cli(['campaigns', 'list', 'us'])).code).toBe(0);
  });

  it('a developer token Google insists on but the app lacks: exit 4 naming it, and no refresh', async () => {
    const refreshes = double.refreshAttempts;
    double.settings.requireDeveloperToken = true;
    try {
      const list = await v.cli(['campaigns', 'list', 'jp']);
      expect(list.code, list.stderr).toBe(4);
      expect(list.stderr).toContain('DEVELOPER_TOKEN_PARAMETER_MISSING');
      expect(list.stderr).toContain('developer-token parameter is missing.');
      expect(list.stderr).toContain('--new-developer-token');
      expect(list.stderr).not.toContain('--new-client-secret');
    } finally {
      double.settings.requireDeveloperToken = false;
    }
    expect(double.refreshAttempts).toBe(refreshes);
  });

  it('prints no secret (tokens, client secret, developer token) in any output, errors included', () => {
    // The full scan of tables and database files (expectNoSecretsLeaked) is the token tests' job;
    // here the error paths above are what could have echoed a header or a body.
    const printed = v.printed.join('\n');
    // The error paths' output is in what is scanned (run with the tests above, not alone with -t).
    for (const error of [
      'Request had invalid authentication credentials',
      'RESOURCE_EXHAUSTED',
      'MONEY_AMOUNT_TOO_LARGE',
      'DEVELOPER_TOKEN_PARAMETER_MISSING',
      'may or may not have changed the budget',
    ])
      expect(printed).toContain(error);
    const secrets = [
      ...Object.values(refreshTokens),
      direct.clientSecret,
      direct.developerToken!,
      ...double.accessTokens.keys(),
    ];
    for (const secret of secrets) expect(printed).not.toContain(secret);
  });
});
