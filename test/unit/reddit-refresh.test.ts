import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/crypto/secret.js';
import { redditAds } from '../../src/providers/platforms/reddit-ads.js';
import type { ProviderApp } from '../../src/providers/types.js';
import { REDDIT_DEFAULT_CLIENT, type RedditDouble, startRedditDouble } from '../doubles/reddit.js';
import { refusal } from '../helpers/provider.js';

// Reddit refuses a dead refresh token with HTTP 400 and `{"error": 400}`, no OAuth error code: that
// shape is a dead grant; any other 400 (a proxy's page, another JSON) is not, so no grant is given up
// on an answer that does not say so.
describe('Reddit refresh errors', () => {
  let double: RedditDouble;
  const app = (): ProviderApp => ({
    id: 'app',
    platform: 'reddit_ads',
    label: 'test',
    clientId: REDDIT_DEFAULT_CLIENT.clientId,
    clientSecret: new Secret(REDDIT_DEFAULT_CLIENT.clientSecret),
    developerToken: null,
    redirectUri: REDDIT_DEFAULT_CLIENT.redirectUris[0]!,
    scopes: ['adsread'],
    loginCustomerId: null,
    userAgent: 'web:credvault-test:v1 (by /u/credvault)',
    apiVersion: 'v3',
    endpoints: { ...double.endpoints, apiBase: double.url },
  });
  const refused = (refreshToken: string) =>
    refusal(redditAds.refresh(app(), new Secret(refreshToken), { signal: AbortSignal.timeout(5000) }));

  beforeAll(async () => {
    double = await startRedditDouble();
  });
  afterAll(() => double.close());

  it('a revoked refresh token ({"error": 400}) is a dead grant', async () => {
    const grant = double.issueGrant({ clientId: REDDIT_DEFAULT_CLIENT.clientId, scope: 'adsread' });
    double.revokeGrant(grant.refreshToken);
    expect((await refused(grant.refreshToken)).kind).toBe('dead_grant');
  });

  it('a 400 of another shape (a proxy’s page, other JSON) is not', async () => {
    const grant = double.issueGrant({ clientId: REDDIT_DEFAULT_CLIENT.clientId, scope: 'adsread' });
    double.faults.failNext(1, { status: 400, body: '<html><body>Bad Request</body></html>' });
    expect((await refused(grant.refreshToken)).kind).not.toBe('dead_grant');
    double.faults.failNext(1, { status: 400, body: { message: 'Bad Request', error: 'blocked' } });
    expect((await refused(grant.refreshToken)).kind).not.toBe('dead_grant');
    // The grant itself still works.
    const tokens = await redditAds.refresh(app(), new Secret(grant.refreshToken), {
      signal: AbortSignal.timeout(5000),
    });
    expect(tokens.accessToken.reveal()).toBeTruthy();
  });
});
