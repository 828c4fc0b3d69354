import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/crypto/secret.js';
import { linkedInAds } from '../../src/providers/platforms/linkedin-ads.js';
import type { ProviderApp } from '../../src/providers/types.js';
import { LINKEDIN_DEFAULT_CLIENT, type LinkedInDouble, startLinkedInDouble } from '../doubles/linkedin.js';
import { refusal } from '../helpers/provider.js';

// LinkedIn answers a dead refresh token with invalid_request, as it does a request missing the app's
// credentials: only the first means a person must reconnect.
describe('LinkedIn refresh errors', () => {
  let double: LinkedInDouble;
  const options = () => ({ signal: AbortSignal.timeout(5000) });
  const app = (): ProviderApp => ({
    id: 'app',
    platform: 'linkedin_ads',
    label: 'test',
    clientId: LINKEDIN_DEFAULT_CLIENT.clientId,
    clientSecret: new Secret(LINKEDIN_DEFAULT_CLIENT.clientSecret),
    developerToken: null,
    redirectUri: LINKEDIN_DEFAULT_CLIENT.redirectUris[0]!,
    scopes: ['r_ads', 'rw_ads'],
    loginCustomerId: null,
    userAgent: null,
    apiVersion: '202601',
    endpoints: { ...double.endpoints, apiBase: double.url },
  });
  /** Refreshes at the double, as credvault does. */
  const refresh = (refreshToken: string) => linkedInAds.refresh(app(), new Secret(refreshToken), options());
  /** Revokes both of a grant's tokens at the double, as `connections revoke` does. */
  const revoke = (grant: { refreshToken: string; accessToken: string }) =>
    linkedInAds.revoke(
      app(),
      { refreshToken: new Secret(grant.refreshToken), accessToken: new Secret(grant.accessToken) },
      options(),
    );

  beforeAll(async () => {
    double = await startLinkedInDouble();
  });
  afterAll(() => double.close());

  it('refreshes a live grant', async () => {
    const grant = double.issueGrant({ scope: 'r_ads,rw_ads' });
    const tokens = await refresh(grant.refreshToken);
    expect(double.accessTokens.get(tokens.accessToken.reveal())?.revoked).toBe(false);
  });

  it('a dead refresh token (invalid_request) is a dead grant', async () => {
    const grant = double.issueGrant({ scope: 'r_ads,rw_ads' });
    double.revokeGrant(grant.refreshToken);
    const error = await refusal(refresh(grant.refreshToken));
    expect(error.kind).toBe('dead_grant');
    expect(error.platformCode).toBe('invalid_request');
  });

  it('a refused request naming a missing client_id (invalid_request too) is the app’s problem, not the grant’s', async () => {
    // What LinkedIn answers a request without the app's credentials (providers.md, LinkedIn errors).
    const grant = double.issueGrant({ scope: 'r_ads,rw_ads' });
    double.faults.failNext(1, {
      status: 400,
      body: { error: 'invalid_request', error_description: 'A required parameter "client_id" is missing' },
    });
    const error = await refusal(refresh(grant.refreshToken));
    expect(error.kind).toBe('client');
    expect(error.platformCode).toBe('invalid_request');
    // The grant itself is still good.
    await refresh(grant.refreshToken);
  });

  it('revoke: a refused refresh token is reported (the grant lives on), though its access token is revoked too', async () => {
    const grant = double.issueGrant({ scope: 'r_ads,rw_ads' });
    double.faults.failNext(1, { status: 400, path: '/oauth/v2/revoke', body: { error: 'invalid_request' } });
    const refused = await refusal(revoke(grant));
    expect(refused.message).toContain('invalid_request');
    expect(double.accessTokens.get(grant.accessToken)?.revoked).toBe(true);
    expect(double.findGrant(grant.grantId)?.revoked).toBe(false);
    // Both refused: the refusal is reported, not "revoked".
    const other = double.issueGrant({ scope: 'r_ads,rw_ads' });
    double.faults.failNext(2, { status: 503, path: '/oauth/v2/revoke' });
    const error = await refusal(revoke(other));
    expect(error.kind).not.toBe('dead_grant');
  });
});
