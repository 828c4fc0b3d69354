import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  addGoogleCampaign,
  exhaustGoogleAdsQuota,
  GOOGLE_ADWORDS_SCOPE,
  type GoogleDouble,
  startGoogleDouble,
} from '../doubles/google.js';

interface Body {
  [key: string]: unknown;
}

const US = '1234567890';
const JP = '2345678901';
const MANAGER = '1112223334';
const V = 'v26';

const CAMPAIGN_QUERY =
  'SELECT campaign.id, campaign.name, campaign.status, campaign.campaign_budget, campaign_budget.amount_micros, campaign_budget.explicitly_shared, campaign_budget.reference_count, customer.currency_code FROM campaign';

describe('Google double: campaigns and budgets', () => {
  let g: GoogleDouble;
  let token: string;

  beforeEach(async () => {
    g = await startGoogleDouble();
    token = g.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE }).accessToken;
  });
  afterEach(() => g.close());

  async function call(
    path: string,
    body: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; headers: Headers; body: Body }> {
    const res = await fetch(`${g.url}/${V}/customers/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
    return { status: res.status, headers: res.headers, body: (await res.json()) as Body };
  }

  const search = (cid: string, body: unknown, headers: Record<string, string> = {}) =>
    call(
      `${cid}/googleAds:search`,
      body,
      cid === JP ? { 'login-customer-id': MANAGER, ...headers } : headers,
    );

  const mutate = (cid: string, body: unknown) =>
    call(`${cid}/campaignBudgets:mutate`, body, cid === JP ? { 'login-customer-id': MANAGER } : {});

  const update = (cid: string, budgetId: string, amountMicros: unknown, extra: Body = {}) =>
    mutate(cid, {
      operations: [
        {
          update: { resourceName: `customers/${cid}/campaignBudgets/${budgetId}`, amountMicros },
          updateMask: 'amountMicros',
        },
      ],
      ...extra,
    });

  /** The GoogleAdsFailure errors of an error answer. */
  function failures(body: Body): Array<{ errorCode: Record<string, string>; message: string } & Body> {
    const error = body['error'] as { details: Array<{ '@type': string; errors: never[] }> };
    const detail = error.details.find((d) => d['@type'].endsWith('.errors.GoogleAdsFailure'));
    return detail?.errors ?? [];
  }

  async function amountOf(cid: string, budgetId: string): Promise<string> {
    const res = await search(cid, {
      query: `SELECT campaign_budget.amount_micros FROM campaign_budget WHERE campaign_budget.id = ${budgetId}`,
    });
    const rows = res.body['results'] as Array<{ campaignBudget: Body }>;
    return rows[0]?.campaignBudget['amountMicros'] as string;
  }

  it('lists campaigns with the joined budget and customer, int64 values as strings', async () => {
    const res = await search(US, { query: CAMPAIGN_QUERY });
    expect(res.status).toBe(200);
    const rows = res.body['results'] as Array<Body>;
    expect(rows).toHaveLength(5);
    expect(rows[0]).toEqual({
      campaign: {
        resourceName: 'customers/1234567890/campaigns/21000000001',
        id: '21000000001',
        name: 'Brand Search',
        status: 'ENABLED',
        campaignBudget: 'customers/1234567890/campaignBudgets/13000000001',
      },
      campaignBudget: {
        resourceName: 'customers/1234567890/campaignBudgets/13000000001',
        amountMicros: '50000000',
        explicitlyShared: false,
        referenceCount: '1',
      },
      customer: { resourceName: 'customers/1234567890', currencyCode: 'USD' },
    });
    expect(res.body['fieldMask']).toBe(
      'campaign.id,campaign.name,campaign.status,campaign.campaignBudget,campaignBudget.amountMicros,campaignBudget.explicitlyShared,campaignBudget.referenceCount,customer.currencyCode',
    );
    expect(res.body['nextPageToken']).toBeUndefined();
    const statuses = rows.map((r) => (r['campaign'] as Body)['status']);
    expect(statuses).toEqual(['ENABLED', 'ENABLED', 'PAUSED', 'REMOVED', 'ENABLED']);

    const live = await search(US, { query: `${CAMPAIGN_QUERY} WHERE campaign.status != 'REMOVED'` });
    expect(live.body['results']).toHaveLength(4);

    // Through the manager: the JPY customer's two campaigns.
    const jp = await search(JP, { query: CAMPAIGN_QUERY });
    expect(jp.status).toBe(200);
    const jpRows = jp.body['results'] as Array<{ campaign: Body; campaignBudget: Body; customer: Body }>;
    expect(
      jpRows.map((r) => [r.campaign['name'], r.campaignBudget['amountMicros'], r.customer['currencyCode']]),
    ).toEqual([
      ['ブランド検索', '5000000000', 'JPY'],
      ['JP Display', '3000000000', 'JPY'],
    ]);
  });

  it('reports a shared budget’s reference_count (removed campaigns do not count)', async () => {
    const res = await search(US, {
      query:
        'SELECT campaign_budget.id, campaign_budget.name, campaign_budget.explicitly_shared, campaign_budget.reference_count, campaign_budget.status FROM campaign_budget ORDER BY campaign_budget.id',
    });
    const rows = (res.body['results'] as Array<{ campaignBudget: Body }>).map((r) => r.campaignBudget);
    expect(rows.map((b) => [b['id'], b['explicitlyShared'], b['referenceCount'], b['status']])).toEqual([
      ['13000000001', false, '1', 'ENABLED'],
      ['13000000002', true, '2', 'ENABLED'],
      ['13000000003', false, '0', 'REMOVED'],
      ['13000000004', false, '1', 'ENABLED'],
    ]);
    // Pausing does not change the count; removing does.
    const display = g.accounts.campaigns!.find((c) => c.id === '21000000003')!;
    display.status = 'REMOVED';
    const after = await search(US, {
      query:
        'SELECT campaign_budget.reference_count FROM campaign_budget WHERE campaign_budget.id = 13000000002',
    });
    expect(
      (after.body['results'] as Array<{ campaignBudget: Body }>)[0]?.campaignBudget['referenceCount'],
    ).toBe('1');
  });

  it('pages search results with nextPageToken at a lowered page size; refuses pageSize', async () => {
    g.settings.searchPageSize = 2;
    const names: unknown[] = [];
    const tokens: string[] = [];
    let pageToken: string | undefined;
    do {
      const res = await search(US, { query: CAMPAIGN_QUERY, ...(pageToken ? { pageToken } : {}) });
      expect(res.status).toBe(200);
      expect(res.body['fieldMask']).toContain('campaign.id');
      names.push(...(res.body['results'] as Array<{ campaign: Body }>).map((r) => r.campaign['name']));
      pageToken = res.body['nextPageToken'] as string | undefined;
      if (pageToken) tokens.push(pageToken);
    } while (pageToken);
    expect(tokens).toHaveLength(2); // 2 + 2 + 1 rows
    expect(names).toEqual([
      'Brand Search',
      'Generic Search',
      'Display Prospecting',
      'Summer Sale 2025',
      'Performance Max',
    ]);

    // A token is bound to its query, unknown tokens are refused, and tokens expire (about two hours).
    const other = await search(US, { query: 'SELECT campaign.id FROM campaign', pageToken: tokens[0] });
    expect(other.status).toBe(400);
    expect(failures(other.body)[0]?.errorCode).toEqual({ requestError: 'INVALID_PAGE_TOKEN' });
    const bogus = await search(US, { query: CAMPAIGN_QUERY, pageToken: 'CN3q9-not-a-token' });
    expect(bogus.status).toBe(400);
    expect(failures(bogus.body)[0]?.errorCode).toEqual({ requestError: 'INVALID_PAGE_TOKEN' });
    g.advanceClock(2 * 3600 * 1000 + 1);
    token = g.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE }).accessToken; // the old one expired too
    const expired = await search(US, { query: CAMPAIGN_QUERY, pageToken: tokens[0] });
    expect(failures(expired.body)[0]?.errorCode).toEqual({ requestError: 'EXPIRED_PAGE_TOKEN' });

    const sized = await search(US, { query: CAMPAIGN_QUERY, pageSize: 2 });
    expect(sized.status).toBe(400);
    expect(failures(sized.body)[0]?.errorCode).toEqual({ requestError: 'PAGE_SIZE_NOT_SUPPORTED' });

    // searchStream is never paged.
    const stream = await call(`${US}/googleAds:searchStream`, { query: CAMPAIGN_QUERY });
    const batches = stream.body as unknown as Array<Body>;
    expect(batches).toHaveLength(1);
    expect(batches[0]?.['results']).toHaveLength(5);
    expect(batches[0]?.['nextPageToken']).toBeUndefined();
  });

  it('serves later pages from the result set of the first request', async () => {
    g.settings.searchPageSize = 3;
    for (let i = 1; i <= 7; i++) addGoogleCampaign(g.accounts, { customerId: US, name: `Bulk ${i}` });
    const first = await search(US, { query: 'SELECT campaign.name FROM campaign' });
    expect(first.body['results']).toHaveLength(3);
    addGoogleCampaign(g.accounts, { customerId: US, name: 'Added between pages' });
    const seen: unknown[] = [];
    let pageToken = first.body['nextPageToken'] as string | undefined;
    while (pageToken) {
      const res = await search(US, { query: 'SELECT campaign.name FROM campaign', pageToken });
      seen.push(...(res.body['results'] as Array<{ campaign: Body }>).map((r) => r.campaign['name']));
      pageToken = res.body['nextPageToken'] as string | undefined;
    }
    expect(seen).toHaveLength(12 - 3);
    expect(seen).not.toContain('Added between pages');
  });

  it('applies a budget update and records it', async () => {
    const res = await update(US, '13000000002', '75000000');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      results: [{ resourceName: 'customers/1234567890/campaignBudgets/13000000002' }],
    });
    expect(g.settings.budgetWrites).toEqual([
      {
        at: expect.any(Number),
        customerId: US,
        budgetId: '13000000002',
        resourceName: 'customers/1234567890/campaignBudgets/13000000002',
        previousAmountMicros: '120000000',
        amountMicros: '75000000',
      },
    ]);
    expect(await amountOf(US, '13000000002')).toBe('75000000');
    // The shared budget changed for both campaigns using it.
    const both = await search(US, {
      query: `SELECT campaign.name, campaign_budget.amount_micros FROM campaign WHERE campaign.campaign_budget = 'customers/1234567890/campaignBudgets/13000000002'`,
    });
    expect(
      (both.body['results'] as Array<{ campaignBudget: Body }>).map((r) => r.campaignBudget['amountMicros']),
    ).toEqual(['75000000', '75000000']);

    // JPY through the manager, int64 as a JSON number, MUTABLE_RESOURCE answer.
    const jp = await update(JP, '13000000011', 7_000_000_000, { responseContentType: 'MUTABLE_RESOURCE' });
    expect(jp.status).toBe(200);
    expect(jp.body['results']).toEqual([
      {
        resourceName: 'customers/2345678901/campaignBudgets/13000000011',
        campaignBudget: expect.objectContaining({ amountMicros: '7000000000', referenceCount: '1' }),
      },
    ]);
    expect(g.settings.budgetWrites).toHaveLength(2);
  });

  it('validateOnly checks everything, answers {} and writes nothing', async () => {
    const ok = await update(US, '13000000001', '60000000', { validateOnly: true });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({});
    expect(g.settings.budgetWrites).toEqual([]);
    expect(await amountOf(US, '13000000001')).toBe('50000000');
    // Still visible in the request log.
    const logged = g.requestsTo(`/${V}/customers/${US}/campaignBudgets:mutate`, 'POST');
    expect(logged).toHaveLength(1);
    expect(logged[0]?.json).toMatchObject({ validateOnly: true });

    const bad = await update(US, '13000000001', '60000001', { validateOnly: true });
    expect(bad.status).toBe(400);
    expect(failures(bad.body)[0]?.errorCode).toEqual({
      campaignBudgetError: 'NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT',
    });
    expect(g.settings.budgetWrites).toEqual([]);
  });

  it('refuses amounts that are not a multiple of the currency unit (USD cents, whole yen)', async () => {
    const usd = await update(US, '13000000001', '75005000');
    expect(usd.status).toBe(400);
    expect(usd.body['error']).toMatchObject({ code: 400, status: 'INVALID_ARGUMENT' });
    expect(failures(usd.body)).toEqual([
      {
        errorCode: { campaignBudgetError: 'NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT' },
        message: 'A money amount was not a multiple of a minimum unit.',
        trigger: { int64Value: '75005000' },
        location: {
          fieldPathElements: [
            { fieldName: 'operations', index: 0 },
            { fieldName: 'update' },
            { fieldName: 'amount_micros' },
          ],
        },
      },
    ]);
    expect((await update(US, '13000000001', '75010000')).status).toBe(200);

    // 0.5 yen is a valid USD amount but not a JPY one.
    const jpy = await update(JP, '13000000011', '5000500000');
    expect(jpy.status).toBe(400);
    expect(failures(jpy.body)[0]?.errorCode).toEqual({
      campaignBudgetError: 'NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT',
    });
    expect((await update(JP, '13000000011', '5001000000')).status).toBe(200);

    const codes = async (amount: unknown) =>
      failures((await update(US, '13000000004', amount)).body)[0]?.errorCode;
    expect(await codes('-10000')).toEqual({ campaignBudgetError: 'NEGATIVE_MONEY_AMOUNT' });
    expect(await codes('0')).toEqual({ campaignBudgetError: 'MONEY_AMOUNT_LESS_THAN_CURRENCY_MINIMUM_CPC' });
    expect(await codes('9000000000000000000')).toEqual({ campaignBudgetError: 'MONEY_AMOUNT_TOO_LARGE' });
    const notInt = await update(US, '13000000004', '75.5');
    expect(notInt.status).toBe(400);
    expect(notInt.body['error']).toMatchObject({ status: 'INVALID_ARGUMENT' });
    expect(failures(notInt.body)).toEqual([]);
    expect(g.settings.budgetWrites.map((w) => w.amountMicros)).toEqual(['75010000', '5001000000']);
  });

  it('answers RESOURCE_NOT_FOUND for an unknown budget, and checks the update mask', async () => {
    const unknown = await update(US, '13999999999', '75000000');
    expect(unknown.status).toBe(400);
    expect(failures(unknown.body)[0]).toMatchObject({
      errorCode: { mutateError: 'RESOURCE_NOT_FOUND' },
      trigger: { stringValue: 'customers/1234567890/campaignBudgets/13999999999' },
    });
    // Another customer's budget is not found through this customer.
    const foreign = await update(US, '13000000011', '75000000');
    expect(failures(foreign.body)[0]?.errorCode).toEqual({
      mutateError: 'RESOURCE_NOT_FOUND',
    });
    // A removed budget.
    const removed = await update(US, '13000000003', '75000000');
    expect(failures(removed.body)[0]?.errorCode).toEqual({ campaignBudgetError: 'CAMPAIGN_BUDGET_REMOVED' });

    const op = (extra: Body) => ({
      operations: [
        {
          update: {
            resourceName: 'customers/1234567890/campaignBudgets/13000000001',
            amountMicros: '70000000',
          },
          ...extra,
        },
      ],
    });
    const noMask = await mutate(US, op({}));
    expect(failures(noMask.body)[0]?.errorCode).toEqual({ fieldMaskError: 'FIELD_MASK_MISSING' });
    const badMask = await mutate(US, op({ updateMask: 'amount' }));
    expect(failures(badMask.body)[0]?.errorCode).toEqual({ fieldMaskError: 'FIELD_NOT_FOUND' });
    const readOnly = await mutate(US, op({ updateMask: 'referenceCount' }));
    expect(failures(readOnly.body)[0]?.errorCode).toEqual({ requestError: 'IMMUTABLE_FIELD' });
    expect(g.settings.budgetWrites).toEqual([]);

    // snake_case paths are accepted by default [guess], refused when the setting says so.
    expect((await mutate(US, op({ updateMask: 'amount_micros' }))).status).toBe(200);
    g.settings.acceptSnakeCaseUpdateMask = false;
    const snake = await mutate(US, op({ update_mask: 'amount_micros' }));
    expect(failures(snake.body)[0]?.errorCode).toEqual({ fieldMaskError: 'FIELD_NOT_FOUND' });

    // Without partialFailure nothing is applied when one operation fails; with it, the rest is.
    const ops = [
      {
        update: {
          resourceName: 'customers/1234567890/campaignBudgets/13000000004',
          amountMicros: '90000000',
        },
        updateMask: 'amountMicros',
      },
      {
        update: {
          resourceName: 'customers/1234567890/campaignBudgets/13999999999',
          amountMicros: '90000000',
        },
        updateMask: 'amountMicros',
      },
    ];
    expect((await mutate(US, { operations: ops })).status).toBe(400);
    expect(await amountOf(US, '13000000004')).toBe('80000000');
    const partial = await mutate(US, { operations: ops, partialFailure: true });
    expect(partial.status).toBe(200);
    expect(partial.body['results']).toEqual([
      { resourceName: 'customers/1234567890/campaignBudgets/13000000004' },
      {},
    ]);
    expect(partial.body['partialFailureError']).toMatchObject({ code: 3 });
    expect(await amountOf(US, '13000000004')).toBe('90000000');
  });

  it('answers the next N Ads API calls with a Google-shaped 429 RESOURCE_EXHAUSTED', async () => {
    exhaustGoogleAdsQuota(g, 2, { retryDelaySeconds: 17 });
    const limited = await update(US, '13000000001', '75000000');
    expect(limited.status).toBe(429);
    expect(limited.body).toEqual({
      error: {
        code: 429,
        message: 'Resource has been exhausted (e.g. check quota).',
        status: 'RESOURCE_EXHAUSTED',
        details: [
          {
            '@type': 'type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure',
            errors: [
              {
                errorCode: { quotaError: 'RESOURCE_EXHAUSTED' },
                message: 'Too many requests. Retry in 17 seconds.',
                details: {
                  quotaErrorDetails: {
                    rateScope: 'DEVELOPER',
                    rateName: 'Number of operations for basic access',
                    retryDelay: '17s',
                  },
                },
              },
            ],
            requestId: expect.any(String),
          },
        ],
      },
    });
    expect(g.settings.budgetWrites).toEqual([]);
    expect((await search(US, { query: CAMPAIGN_QUERY })).status).toBe(429);
    expect((await search(US, { query: CAMPAIGN_QUERY })).status).toBe(200);
    expect(g.settings.quotaFaults.reduce((n, f) => n + f.remaining, 0)).toBe(0);

    exhaustGoogleAdsQuota(g, 1, { quotaError: 'RESOURCE_TEMPORARILY_EXHAUSTED', retryDelaySeconds: null });
    const short = await search(US, { query: CAMPAIGN_QUERY });
    expect(short.status).toBe(429);
    expect(failures(short.body)).toEqual([
      {
        errorCode: { quotaError: 'RESOURCE_TEMPORARILY_EXHAUSTED' },
        message: 'Too many requests in a short amount of time.',
      },
    ]);
  });

  it('answers 401 UNAUTHENTICATED with an expired or revoked access token (before any quota error)', async () => {
    exhaustGoogleAdsQuota(g, 1);
    g.expireAccessTokens();
    const expired = await update(US, '13000000001', '75000000');
    expect(expired.status).toBe(401);
    expect(expired.headers.get('www-authenticate')).toBe('Bearer');
    expect(expired.body).toEqual({
      error: {
        code: 401,
        message: expect.stringContaining('invalid authentication credentials'),
        status: 'UNAUTHENTICATED',
      },
    });
    expect((await search(US, { query: CAMPAIGN_QUERY })).status).toBe(401);
    expect(g.settings.quotaFaults[0]?.remaining).toBe(1);

    // A fresh token works (after the quota error still armed).
    token = g.issueGrant({ scope: GOOGLE_ADWORDS_SCOPE }).accessToken;
    expect((await update(US, '13000000001', '75000000')).status).toBe(429);
    expect((await update(US, '13000000001', '75000000')).status).toBe(200);

    g.faults.invalidateGrants({ accessTokens: true });
    const revoked = await search(US, { query: CAMPAIGN_QUERY });
    expect(revoked.status).toBe(401);
    expect((revoked.body['error'] as Body)['status']).toBe('UNAUTHENTICATED');
    expect(g.settings.budgetWrites).toHaveLength(1);
  });

  it('refuses a search field the request message lacks, and a second campaign on a budget made for one', async () => {
    const res = await search(US, { query: CAMPAIGN_QUERY, pageLimit: 5 });
    expect(res.status).toBe(400);
    expect(res.body['error']).toMatchObject({
      status: 'INVALID_ARGUMENT',
      message: expect.stringContaining('Unknown name "pageLimit"'),
    });
    const stream = await call(`${US}/googleAds:searchStream`, { query: CAMPAIGN_QUERY, pageToken: 'x' });
    expect(stream.status).toBe(400);
    expect(() =>
      addGoogleCampaign(g.accounts, { customerId: US, name: 'Second', budgetId: '13000000001' }),
    ).toThrow(/not explicitly shared/);
    expect(
      addGoogleCampaign(g.accounts, { customerId: US, name: 'Third', budgetId: '13000000002' }).budgetId,
    ).toBe('13000000002');
  });
});
