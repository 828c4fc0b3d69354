/**
 * `credvault campaigns list | set-budget` on Microsoft Advertising, end to end: the built binary against
 * the Microsoft double's Campaign Management REST endpoints (GetCampaignsByAccountId, UpdateCampaigns).
 * One vault and one grant (three ad accounts: USD, GBP and CLP, a currency with no minor unit) serve
 * every test, in order; each test looks only at the requests it caused.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CampaignJson, BudgetResultJson as ResultJson } from '../../src/cli/commands/campaigns.js';
import type { RecordedRequest } from '../doubles/index.js';
import {
  adApiFault,
  MICROSOFT_ADS_SCOPE,
  MICROSOFT_DEFAULT_ACCOUNTS,
  type MicrosoftAccounts,
  type MicrosoftCampaign,
  type MicrosoftDouble,
  startMicrosoftDouble,
  throttleCampaignManagement,
} from '../doubles/microsoft.js';
import { type AppSetup, addAppFor, adoptGrant } from '../helpers/flows.js';
import { expectNoSecretsLeaked } from '../helpers/secrets.js';
import { createVault, type TestVault } from '../helpers/vault.js';

const QUERY = '/CampaignManagement/v13/Campaigns/QueryByAccountId';
const UPDATE = '/CampaignManagement/v13/Campaigns';
const US = 'microsoft_ads:987';
const UK = 'microsoft_ads:988';
const CL = 'microsoft_ads:989';
/** More campaigns than any page a paged API would send at once: GetCampaignsByAccountId has no paging. */
const MANY = 250;

interface Fault {
  Errors?: Array<Record<string, unknown>>;
  OperationErrors?: Array<Record<string, unknown>>;
}

function searchCampaign(accountId: string, id: string, name: string, dailyBudget: number): MicrosoftCampaign {
  return {
    accountId,
    id,
    name,
    status: 'Active',
    campaignType: 'Search',
    budgetType: 'DailyBudgetStandard',
    dailyBudget,
    budgetId: null,
  };
}

function accountsData(): MicrosoftAccounts {
  const base = structuredClone(MICROSOFT_DEFAULT_ACCOUNTS);
  base.accounts.push({
    Id: '989',
    Name: 'Acme Búsqueda CL',
    Number: 'F12ABCDG',
    CurrencyCode: 'CLP',
    ParentCustomerId: '456',
    AccountLifeCycleStatus: 'Active',
    PauseReason: null,
  });
  base.campaigns!.push(
    { ...searchCampaign('987', '700000008', 'Hotels - Lisbon', 1), campaignType: 'Hotel', dailyBudget: 35 },
    searchCampaign('989', '700000201', 'CL Marca', 15_000),
  );
  for (let i = 0; i < MANY; i++) {
    // Budgets with cents, read back from a JSON double (12.34, 12.35 …).
    base.campaigns!.push(searchCampaign('987', String(710_000_000 + i), `Bulk ${i}`, 12.34 + i / 100));
  }
  return base;
}

let double: MicrosoftDouble;
let v: TestVault;
let app: AppSetup;
let refreshToken: string;
let mark = 0;

/** Requests the double received since the test began, to a path (prefix) and method. */
function sent(path: string, method?: string): RecordedRequest[] {
  return double.requests
    .slice(mark)
    .filter((r) => (method === 'PUT' ? r.path === path : r.path.startsWith(path)))
    .filter((r) => !method || r.method === method);
}

function campaign(accountId: string, id: string): MicrosoftCampaign {
  return double.accounts.campaigns!.find((c) => c.accountId === accountId && c.id === id)!;
}

beforeAll(async () => {
  double = await startMicrosoftDouble({ accounts: accountsData() });
  v = await createVault();
  app = await addAppFor(v, 'microsoft_ads', double as never);
  const grant = double.issueGrant({ clientId: app.clientId, scope: `${MICROSOFT_ADS_SCOPE} offline_access` });
  refreshToken = grant.refreshToken;
  await adoptGrant(v, 'microsoft_ads', app.label, grant.refreshToken, { accounts: ['987', '988', '989'] });
});

afterAll(async () => {
  await v?.destroy();
  await double?.close();
});

beforeEach(() => {
  mark = double.requests.length;
  double.faults.reset();
});

describe('campaigns list', () => {
  it('asks GetCampaignsByAccountId for every campaign type, with the ids and the developer token in headers', async () => {
    const listed = await v.json<CampaignJson[]>(['campaigns', 'list', US]);
    const [query, ...more] = sent(QUERY, 'POST');
    // No paging: all of them in one answer, the deleted one left out by Microsoft.
    expect(more).toHaveLength(0);
    const expected = double.accounts.campaigns!.filter(
      (c) => c.accountId === '987' && c.status !== 'Deleted',
    );
    expect(expected.length).toBeGreaterThan(MANY);
    expect(listed.map((c) => c.id).sort()).toEqual(expected.map((c) => c.id).sort());
    expect(query!.headers).toMatchObject({
      customerid: '456',
      customeraccountid: '987',
      developertoken: app.developerToken!,
    });
    expect(query!.headers.authorization).toMatch(/^Bearer EwB/);
    const body = query!.json as { AccountId: string; CampaignType: string };
    expect(body.AccountId).toBe('987');
    expect(body.CampaignType.split(' ').sort()).toEqual(
      ['Audience', 'DynamicSearchAds', 'Hotel', 'PerformanceMax', 'Search', 'Shopping'].sort(),
    );
    // Types other than Search are there because they were asked for.
    const byId = new Map(listed.map((c) => [c.id, c]));
    for (const id of ['700000004', '700000005', '700000006', '700000008']) expect(byId.has(id)).toBe(true);
    expect(byId.get('700000001')).toMatchObject({
      name: 'Brand - Exact',
      status: 'Active',
      currency: 'USD',
      daily_budget: '50.00',
      daily_budget_micros: '50000000',
      shared_budget: false,
    });
    expect(byId.get(String(710_000_000 + 249))).toMatchObject({
      daily_budget: '14.83',
      daily_budget_micros: '14830000',
    });
    // On a shared budget: its amount, flagged.
    expect(byId.get('700000003')).toMatchObject({
      daily_budget: '100.00',
      shared_budget: true,
      budget_id: '800000001',
    });
    expect(byId.get('700000003')!.budget_note).toContain('800000001');
  });

  it('prints a table with the budget in the account currency and the shared flag', async () => {
    const result = await v.cli(['campaigns', 'list', UK]);
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/ID\s+NAME\s+STATUS\s+DAILY BUDGET\s+SHARED/);
    expect(lines.find((l) => l.startsWith('700000101'))).toMatch(
      /UK Brand - Exact\s+Active\s+40\.00 GBP\s+no/,
    );
    expect(lines).toHaveLength(3);
    expect(sent(QUERY, 'POST')[0]!.headers.customeraccountid).toBe('988');
  });

  it('the double refuses what the real API refuses: no CustomerAccountId, no CustomerId, no DeveloperToken', async () => {
    const token = [...double.accessTokens.values()].find((t) => !t.revoked && t.expiresAt > double.now())!;
    const post = (headers: Record<string, string>) =>
      fetch(`${double.url}${QUERY}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token.token}`, ...headers },
        body: JSON.stringify({ AccountId: '987', CampaignType: 'Search' }),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as Fault }));
    const all = { developertoken: 'd', customerid: '456', customeraccountid: '987' };
    const noAccount = await post({ developertoken: 'd', customerid: '456' });
    expect(noAccount.status).toBe(400);
    expect(noAccount.body.OperationErrors?.[0]).toMatchObject({
      Code: 1030,
      ErrorCode: 'CampaignServiceAccountIdHasToBeSpecified',
    });
    const noCustomer = await post({ developertoken: 'd', customeraccountid: '987' });
    expect(noCustomer.body.OperationErrors?.[0]).toMatchObject({ Code: 1029 });
    const otherAccount = await post({ ...all, customeraccountid: '988' });
    expect(otherAccount.body.OperationErrors?.[0]).toMatchObject({ Code: 1102 });
    const noDeveloperToken = await post({ customerid: '456', customeraccountid: '987' });
    expect(noDeveloperToken.body.Errors?.[0]).toMatchObject({ Code: 105, ErrorCode: 'InvalidCredentials' });
    expect((await post(all)).status).toBe(200);
  });
});

describe('campaigns set-budget', () => {
  it('PUT Campaigns with DailyBudget a JSON number, exact for 1234567.89; list shows it', async () => {
    const result = await v.cli([
      'campaigns',
      'set-budget',
      US,
      '700000001',
      '--daily',
      '1,234,567.89',
      '--yes',
      '--json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout) as ResultJson).toMatchObject({
      campaign_id: '700000001',
      mode: 'applied',
      currency: 'USD',
      previous_daily_budget: '50.00',
      new_daily_budget: '1234567.89',
      previous_micros: '50000000',
      new_micros: '1234567890000',
    });
    const [put, ...others] = sent(UPDATE, 'PUT');
    expect(others).toHaveLength(0);
    expect(put!.body).toBe('{"AccountId":"987","Campaigns":[{"Id":"700000001","DailyBudget":1234567.89}]}');
    expect(put!.headers).toMatchObject({ customerid: '456', customeraccountid: '987' });
    expect(put!.headers.developertoken).toBe(app.developerToken);
    expect(campaign('987', '700000001').dailyBudget).toBe(1234567.89);
    expect(double.settings.campaignWrites.at(-1)).toMatchObject({
      campaignId: '700000001',
      fields: { DailyBudget: 1234567.89 },
      previous: { DailyBudget: 50 },
    });

    const listed = await v.json<CampaignJson[]>(['campaigns', 'list', US]);
    expect(listed.find((c) => c.id === '700000001')).toMatchObject({
      daily_budget: '1234567.89',
      daily_budget_micros: '1234567890000',
    });
  });

  it('says old → new on stderr, sends 0.05 (the USD minimum) as 0.05, and refuses 0.04 (validate-only too)', async () => {
    const ok = await v.cli(['campaigns', 'set-budget', US, '700000002', '--daily', '0.05', '--yes']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain('campaign 700000002 (Generic - Broad): daily budget 25.50 USD → 0.05 USD');
    expect(sent(UPDATE, 'PUT').map((r) => r.body)).toEqual([
      '{"AccountId":"987","Campaigns":[{"Id":"700000002","DailyBudget":0.05}]}',
    ]);
    expect(campaign('987', '700000002').dailyBudget).toBe(0.05);

    mark = double.requests.length;
    const writes = double.settings.campaignWrites.length;
    // Checked by credvault (Microsoft has no dry run), so validate-only refuses it too.
    const low = await v.cli([
      'campaigns',
      'set-budget',
      US,
      '700000002',
      '--daily',
      '0.04',
      '--validate-only',
    ]);
    expect(low.code).toBe(2);
    expect(low.stderr).toContain(
      'Microsoft Advertising refuses a daily budget below 0.05 USD (asked: 0.04 USD)',
    );
    expect(sent(UPDATE, 'PUT')).toHaveLength(0);
    expect(double.settings.campaignWrites).toHaveLength(writes);
    // credvault's checks are Microsoft's validation here: the refusal is audited as one, with the
    // budget it would have replaced.
    const [refusal] = await v.sql<{ outcome: string; detail: Record<string, unknown> }>(
      "select outcome, detail from credential_access_audit where action = 'campaign.budget.validate' and target_id = '700000002' order by id desc limit 1",
    );
    expect(refusal).toMatchObject({
      outcome: 'failure',
      detail: {
        requested_micros: '40000',
        previous_micros: '50000',
        shared: false,
        error: 'invalid_input',
        refused_by: 'credvault',
        message: 'Microsoft Advertising refuses a daily budget below 0.05 USD (asked: 0.04 USD)',
      },
    });
  });

  it('sends 0.51 exactly; Microsoft’s PartialErrors refusal is exit 2 with its message, nothing changed', async () => {
    // Microsoft's table is "subject to change": here its GBP minimum has risen past the 0.05 that
    // credvault checks, so credvault sends the change and Microsoft's own refusal comes through.
    const before = double.settings.minDailyBudgets.GBP;
    double.settings.minDailyBudgets.GBP = 1;
    const result = await v.cli(['campaigns', 'set-budget', UK, '700000101', '--daily', '0.51', '--yes']);
    double.settings.minDailyBudgets.GBP = before!;
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('CampaignServiceInvalidDailyBudget');
    expect(result.stderr).toContain('The campaign daily budget is not valid.');
    const [put] = sent(UPDATE, 'PUT');
    expect(put!.body).toBe('{"AccountId":"988","Campaigns":[{"Id":"700000101","DailyBudget":0.51}]}');
    expect(put!.headers.customeraccountid).toBe('988');
    expect(campaign('988', '700000101').dailyBudget).toBe(40);
  });

  it('a currency with no minor unit (CLP): 1000.5 is refused (exit 2, nothing sent), so is 5 (below Microsoft’s 5.1), 1000 is sent as 1000', async () => {
    const half = await v.cli(['campaigns', 'set-budget', CL, '700000201', '--daily', '1000.5', '--yes']);
    expect(half.code).toBe(2);
    expect(half.stderr).toContain('CLP has no minor unit');
    expect(sent(UPDATE, 'PUT')).toHaveLength(0);

    // Microsoft's minimum for CLP is 5.1 (its currencies table): the simulated check knows every
    // currency of that table, not only USD.
    const low = await v.cli(['campaigns', 'set-budget', CL, '700000201', '--daily', '5', '--validate-only']);
    expect(low.code).toBe(2);
    expect(low.stderr).toContain('Microsoft Advertising refuses a daily budget below 5.1 CLP (asked: 5 CLP)');
    expect(sent(UPDATE, 'PUT')).toHaveLength(0);

    const whole = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      CL,
      '700000201',
      '--daily',
      '1000',
      '--yes',
    ]);
    expect(whole).toMatchObject({
      mode: 'applied',
      currency: 'CLP',
      previous_daily_budget: '15000',
      new_daily_budget: '1000',
      new_micros: '1000000000',
    });
    expect(sent(UPDATE, 'PUT').map((r) => r.body)).toEqual([
      '{"AccountId":"989","Campaigns":[{"Id":"700000201","DailyBudget":1000}]}',
    ]);
    expect(campaign('989', '700000201').dailyBudget).toBe(1000);
  });

  it('--validate-only is simulated: checked locally, no write sent, and it says so', async () => {
    const json = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      US,
      '700000004',
      '--daily',
      '99.99',
      '--validate-only',
    ]);
    expect(json).toMatchObject({
      campaign_id: '700000004',
      mode: 'simulated',
      currency: 'USD',
      previous_daily_budget: '80.00',
      new_daily_budget: '99.99',
      new_micros: '99990000',
    });
    // Read, never written: every request was GetCampaignsByAccountId.
    expect(sent(QUERY, 'POST').length).toBeGreaterThan(0);
    expect(double.requests.slice(mark).every((r) => r.path === QUERY)).toBe(true);
    expect(campaign('987', '700000004').dailyBudget).toBe(80);
  });

  it('a campaign on a shared budget (BudgetId) is refused with a clear message; no write', async () => {
    const result = await v.cli(['campaigns', 'set-budget', US, '700000003', '--daily', '60', '--yes']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('uses shared budget 800000001');
    expect(result.stderr).toContain('cannot be set on the campaign');
    expect(result.stderr).toContain('Shared library');
    // --shared would not help: the warning does not suggest it.
    expect(result.stderr).not.toContain('--shared');
    expect(sent(UPDATE, 'PUT')).toHaveLength(0);
    expect(double.accounts.budgets![0]!.amount).toBe(100);
    expect(campaign('987', '700000003').budgetId).toBe('800000001');
  });

  it('off a terminal without --yes: exit 2, and the platform is not even asked', async () => {
    const writes = double.settings.campaignWrites.length;
    const result = await v.cli(['campaigns', 'set-budget', US, '700000004', '--daily', '90']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--yes');
    expect(double.requests.length).toBe(mark);
    expect(double.settings.campaignWrites).toHaveLength(writes);
  });
});

describe('the record', () => {
  it('audit list has each change with its old and new micros, refusals and simulations too', async () => {
    type Row = {
      action: string;
      outcome: string;
      target_id: string;
      actor: string;
      detail: Record<string, unknown>;
    };
    const rows = await v.json<Row[]>(['audit', 'list', '--limit', '100']);
    const budget = rows.filter((r) => r.action.startsWith('campaign.budget'));
    // The same rows found by action (one, or a group) and outcome.
    const failed = await v.json<Row[]>(['audit', 'list', '--action', 'campaign.*', '--outcome', 'failure']);
    expect(failed.length).toBeGreaterThan(0);
    expect(failed).toEqual(rows.filter((r) => r.action.startsWith('campaign.') && r.outcome === 'failure'));
    const validated = await v.json<Row[]>(['audit', 'list', '--action', 'campaign.budget.validate']);
    expect(validated.length).toBeGreaterThan(0);
    expect(validated).toEqual(rows.filter((r) => r.action === 'campaign.budget.validate'));
    expect(budget.find((r) => r.target_id === '700000001')).toMatchObject({
      action: 'campaign.budget',
      outcome: 'success',
      actor: 'test-operator',
      detail: {
        platform: 'microsoft_ads',
        account: '987',
        mode: 'applied',
        currency: 'USD',
        previous_micros: '50000000',
        new_micros: '1234567890000',
      },
    });
    expect(budget.find((r) => r.target_id === '700000201')).toMatchObject({
      detail: { currency: 'CLP', previous_micros: '15000000000', new_micros: '1000000000' },
    });
    expect(budget.find((r) => r.target_id === '700000101')).toMatchObject({
      action: 'campaign.budget',
      outcome: 'failure',
      detail: { account: '988', error: 'invalid_input' },
    });
    expect(
      budget.find((r) => r.action === 'campaign.budget.validate' && r.outcome === 'success'),
    ).toMatchObject({
      target_id: '700000004',
      detail: { mode: 'simulated', previous_micros: '80000000', new_micros: '99990000' },
    });
  });

  it('a connection that lost its currency reads it with SearchAccounts; one without a customer id is refused', async () => {
    await v.sql(
      `update ad_account_connections set details = case external_account_id
         when '988' then details - 'currency' else details - 'customer_id' end
       where external_account_id in ('988', '989')`,
    );
    const listed = await v.json<CampaignJson[]>(['campaigns', 'list', UK]);
    expect(listed.map((c) => [c.id, c.currency, c.daily_budget])).toContainEqual([
      '700000101',
      'GBP',
      '40.00',
    ]);
    const [search, ...more] = sent('/CustomerManagement/v13/Accounts/Search', 'POST');
    expect(more).toHaveLength(0);
    expect(search!.json).toMatchObject({
      Predicates: [{ Field: 'AccountId', Operator: 'Equals', Value: '988' }],
    });

    mark = double.requests.length;
    const refused = await v.cli(['campaigns', 'list', CL]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('does not know its customer id');
    expect(double.requests.length).toBe(mark);
  });
});

describe('platform errors', () => {
  it('109 AuthenticationTokenExpired: one refresh, one retry, success', async () => {
    double.expireAccessTokens();
    const refreshes = double.refreshAttempts;
    const result = await v.json<ResultJson>([
      'campaigns',
      'set-budget',
      US,
      '700000004',
      '--daily',
      '81',
      '--yes',
    ]);
    expect(result).toMatchObject({ mode: 'applied', new_daily_budget: '81.00' });
    expect(double.refreshAttempts - refreshes).toBe(1);
    const queries = sent(QUERY, 'POST');
    expect(queries[0]!.headers.authorization).not.toBe(queries[1]!.headers.authorization);
    expect(sent(UPDATE, 'PUT')).toHaveLength(1);
    expect(campaign('987', '700000004').dailyBudget).toBe(81);
  });

  it('a second 401 after the refresh: exit 4, one refresh only', async () => {
    const refreshes = double.refreshAttempts;
    double.faults.failNext(2, {
      path: '/CampaignManagement/',
      ...adApiFault(
        401,
        109,
        'AuthenticationTokenExpired',
        'Authentication token expired. Please renew it or obtain a new token.',
      ),
    });
    const result = await v.cli(['campaigns', 'list', US]);
    expect(result.code).toBe(4);
    expect(result.stderr).toContain('AuthenticationTokenExpired');
    expect(double.refreshAttempts - refreshes).toBe(1);
    expect(sent(QUERY, 'POST')).toHaveLength(2);
  });

  it('117 CallRateExceeded (HTTP 400 or 429): exit 5 with Microsoft’s 60 s wait, nothing written', async () => {
    throttleCampaignManagement(double, 1);
    const listed = await v.cli(['campaigns', 'list', US]);
    expect(listed.code).toBe(5);
    expect(listed.stderr).toContain('CallRateExceeded');
    expect(listed.stderr).toContain('wait 60 s');

    double.settings.throttleStatus = 429;
    try {
      throttleCampaignManagement(double, 1);
      const set = await v.cli([
        'campaigns',
        'set-budget',
        US,
        '700000004',
        '--daily',
        '82',
        '--yes',
        '--json',
      ]);
      expect(set.code).toBe(5);
      expect(JSON.parse(set.stderr)).toMatchObject({ error: { code: 'unavailable' } });
      expect(set.stderr).toContain('CallRateExceeded');
    } finally {
      double.settings.throttleStatus = 400;
    }
    expect(sent(UPDATE, 'PUT')).toHaveLength(0);
    expect(campaign('987', '700000004').dailyBudget).toBe(81);
  });

  it('no secret was printed or stored in the clear', async () => {
    await expectNoSecretsLeaked(v, [
      refreshToken,
      app.clientSecret,
      app.developerToken!,
      ...double.accessTokens.keys(),
    ]);
  });
});
