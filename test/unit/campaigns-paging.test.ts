import { describe, expect, it } from 'vitest';
import { Secret } from '../../src/crypto/secret.js';
import { ProviderError } from '../../src/providers/errors.js';
import { PageGuard } from '../../src/providers/paging.js';
import { providerFor } from '../../src/providers/registry.js';
import type { ProviderApp } from '../../src/providers/types.js';
import { MICROSOFT_ADS_SCOPE, startMicrosoftDouble } from '../doubles/microsoft.js';

/** The one guard every platform's paging goes through (Google, LinkedIn, Reddit). */
describe('PageGuard', () => {
  it('a cursor seen before is the platform looping: invalid_response, never a silent stop', () => {
    const guard = new PageGuard('LinkedIn', 'listing the campaigns of LinkedIn ad account 5101');
    guard.next('a');
    guard.next('b');
    const error = (() => {
      try {
        guard.next('a');
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({ kind: 'invalid_response' });
    expect((error as Error).message).toBe(
      'listing the campaigns of LinkedIn ad account 5101: LinkedIn gave the same next page twice (after page 3), so its list never ends; stopped rather than ask again',
    );
  });

  it('allows `max` pages and refuses the one after', () => {
    const guard = new PageGuard('Reddit', 'listing', 3);
    guard.next('2');
    guard.next('3');
    expect(() => guard.next('4')).toThrow('Reddit still had more after 3 pages');
  });
});

describe('Microsoft Advertising account discovery (SearchAccounts, paged by index)', () => {
  it('a server answering the same full page again is looping: exit 5 (invalid_response), not requests without end', async () => {
    const double = await startMicrosoftDouble();
    try {
      const client = double.defaultClient!;
      const grant = double.issueGrant({
        clientId: client.clientId,
        scope: `${MICROSOFT_ADS_SCOPE} offline_access`,
      });
      const app: ProviderApp = {
        id: 'a',
        platform: 'microsoft_ads',
        label: 'a',
        clientId: client.clientId,
        clientSecret: new Secret(client.clientSecret ?? 's'),
        developerToken: new Secret('dev-token'),
        redirectUri: client.redirectUris[0]!,
        scopes: [MICROSOFT_ADS_SCOPE, 'offline_access'],
        loginCustomerId: null,
        userAgent: null,
        apiVersion: 'v13',
        endpoints: {
          authorize: double.endpoints.authorize,
          token: double.endpoints.token,
          revoke: null,
          apiBase: double.url,
        },
      };
      const page = {
        Accounts: Array.from({ length: 100 }, (_, i) => ({
          Id: 5000 + i,
          Name: `A${i}`,
          CurrencyCode: 'USD',
        })),
      };
      double.faults.failNext(50, {
        path: '/CustomerManagement/v13/Accounts/Search',
        status: 200,
        body: page,
      });
      const provider = await providerFor('microsoft_ads');
      const failure = await provider
        .discoverAccounts(app, new Secret(grant.accessToken), { signal: AbortSignal.timeout(10_000) })
        .catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(ProviderError);
      expect(failure).toMatchObject({ kind: 'invalid_response' });
      expect((failure as Error).message).toContain('Microsoft Advertising gave the same next page twice');
      // The first page, and the second that repeated it: then nothing more was asked.
      expect(double.requestsTo('/CustomerManagement/v13/Accounts/Search')).toHaveLength(2);
    } finally {
      await double.close();
    }
  });
});
