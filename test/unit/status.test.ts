import { describe, expect, it } from 'vitest';
import { tokenTimes } from '../../src/cli/commands/connections.js';
import type { ConnectionView } from '../../src/db/store/connections.js';
import { assess } from '../../src/services/status.js';

const NOW = Date.parse('2026-11-27T12:00:00Z');
const DAY = 86_400_000;

function view(overrides: Partial<ConnectionView>): ConnectionView {
  return {
    id: '00000000-0000-4000-8000-000000000001',
    platform: 'linkedin_ads',
    appId: '00000000-0000-4000-8000-000000000002',
    tokenId: '00000000-0000-4000-8000-000000000003',
    externalAccountId: '5101',
    accountName: 'Acme',
    name: 'acme',
    status: 'active',
    statusMessage: null,
    consecutiveFailures: 0,
    details: {},
    connectedBy: 'ops',
    createdAt: new Date(NOW - 30 * DAY),
    updatedAt: new Date(NOW - DAY),
    appLabel: 'staging',
    accessTokenExpiresAt: new Date(NOW + 50 * DAY),
    refreshTokenExpiresAt: null,
    refreshTokenExpiryFixed: false,
    lastRefreshedAt: new Date(NOW - 10 * DAY),
    hasRefreshToken: true,
    refreshInFlightSince: null,
    leaseExpiresAt: null,
    cooldownUntil: null,
    lastErrorCode: null,
    lastErrorMessage: null,
    lastErrorAt: null,
    ...overrides,
  };
}

describe('status advice', () => {
  it('names the app in every reconnect command (connect asks which app when a platform has several)', () => {
    const health = assess(view({ status: 'needs_reauth' }), NOW);
    expect(health.action).toBe('credvault connect linkedin_ads --app staging --account 5101');
  });

  it('an access token nothing can renew: fine while far off, a warning within 14 days, critical within 3 and after', () => {
    const at = (days: number) =>
      assess(view({ hasRefreshToken: false, accessTokenExpiresAt: new Date(NOW + days * DAY) }), NOW);
    expect(at(50).urgency).toBe('ok');
    expect(at(10)).toMatchObject({
      urgency: 'warning',
      action: 'credvault connect linkedin_ads --app staging --account 5101 before then',
    });
    expect(at(10).problem).toContain('no refresh token to renew it');
    expect(at(2).urgency).toBe('critical');
    expect(at(-1)).toMatchObject({
      urgency: 'critical',
      action: 'credvault connect linkedin_ads --app staging --account 5101',
    });
    expect(at(-1).problem).toContain('expired');
    // With a refresh token, an access token's end is only the next refresh.
    expect(assess(view({ accessTokenExpiresAt: new Date(NOW - DAY) }), NOW).urgency).toBe('ok');
  });
});

describe('the token columns of status and connections list', () => {
  const times = {
    accessTokenExpiresAt: new Date(NOW + 3_600_000),
    refreshTokenExpiresAt: new Date(NOW + 180 * DAY),
    hasRefreshToken: true,
    cooldownUntil: null,
  };

  it('shows the times of a connection token get serves', () => {
    expect(tokenTimes({ ...times, status: 'active' }, NOW)).toEqual({ access: 'in 60m', refresh: 'in 180d' });
  });

  // token get exits 4 for them, whatever time the tokens had left (it showed "in 60m", "in 180d").
  it.each(['needs_reauth', 'revoked'])('shows no usable time for %s', (status) => {
    expect(tokenTimes({ ...times, status }, NOW)).toEqual({ access: 'refused', refresh: 'refused' });
  });

  it('in error: the access token is refused while it cools down, then refreshed before it is served', () => {
    expect(tokenTimes({ ...times, status: 'error', cooldownUntil: new Date(NOW + 240_000) }, NOW)).toEqual({
      access: 'refused, retry in 4m',
      refresh: 'in 180d',
    });
    expect(tokenTimes({ ...times, status: 'error', cooldownUntil: new Date(NOW - 1000) }, NOW)).toEqual({
      access: 'refreshed first',
      refresh: 'in 180d',
    });
  });
});
