import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Secret } from '../../src/crypto/secret.js';
import { InvalidInputError } from '../../src/errors.js';
import { loopbackTarget } from '../../src/oauth/loopback.js';
import { codeChallenge, hashState, newCodeVerifier, newState } from '../../src/oauth/pkce.js';
import { parseRetryAfter } from '../../src/providers/errors.js';
import { exchangeCode } from '../../src/providers/oauth.js';
import { refreshTokenExpiry } from '../../src/services/grants.js';
import { excerpt, redact } from '../../src/util/redact.js';

describe('PKCE', () => {
  it('matches the RFC 7636 Appendix B test vector', async () => {
    expect(await codeChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk')).toBe(
      'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    );
  });

  it('makes verifiers of 43+ unreserved characters, different every time', () => {
    const a = newCodeVerifier();
    expect(a).toMatch(/^[A-Za-z0-9._~-]{43,128}$/);
    expect(newCodeVerifier()).not.toBe(a);
  });
});

describe('state', () => {
  it('is 32 random bytes, with a SHA-256 hex digest to store instead of it', () => {
    const state = newState();
    expect(Buffer.from(state, 'base64url')).toHaveLength(32);
    expect(hashState(state)).toBe(createHash('sha256').update(state).digest('hex'));
    expect(hashState(newState())).not.toBe(hashState(state));
  });
});

describe('loopbackTarget', () => {
  it('keeps an explicit port and path', () => {
    const t = loopbackTarget('http://localhost:8080/callback', false)!;
    expect(t).toMatchObject({ bindHosts: ['127.0.0.1', '::1'], port: 8080, path: '/callback' });
    expect(t.redirectUri(8080)).toBe('http://localhost:8080/callback');
  });

  it('binds the address the URI names; a name, both loopback addresses a browser may try', () => {
    expect(loopbackTarget('http://127.0.0.2:9000/cb', false)!.bindHosts).toEqual(['127.0.0.2']);
    expect(loopbackTarget('http://[::1]:9000/cb', false)!.bindHosts).toEqual(['::1']);
    expect(loopbackTarget('http://localhost:9000/cb', false)!.bindHosts).toEqual(['127.0.0.1', '::1']);
  });

  it('takes a free port when the platform accepts any loopback port and the URI has none', () => {
    const t = loopbackTarget('http://127.0.0.1', true)!;
    expect(t.port).toBe(0);
    expect(t.redirectUri(53123)).toBe('http://127.0.0.1:53123');
    expect(loopbackTarget('http://[::1]/cb', true)!.redirectUri(4000)).toBe('http://[::1]:4000/cb');
  });

  it('refuses a port-less URI where the platform needs the exact one', () => {
    expect(() => loopbackTarget('http://localhost/callback', false)).toThrow(
      /needs the exact registered one/,
    );
  });

  it('is null for a redirect URI that is not on this machine (paste mode)', () => {
    expect(loopbackTarget('https://ops.example.com/oauth/callback', true)).toBeNull();
  });
});

describe('exchangeCode', () => {
  it('refuses a callback oauth4webapi will not take (a repeated code) as invalid input, sending nothing', async () => {
    // Port 9 (discard): a request that did go out would fail as a network error, not as this.
    const app = {
      id: 'a',
      platform: 'reddit_ads' as const,
      label: 'a',
      clientId: 'c',
      clientSecret: new Secret('s'),
      developerToken: null,
      redirectUri: 'http://127.0.0.1:1/cb',
      scopes: [],
      loginCustomerId: null,
      userAgent: null,
      apiVersion: 'v3',
      endpoints: {
        authorize: 'http://127.0.0.1:9/a',
        token: 'http://127.0.0.1:9/t',
        revoke: null,
        apiBase: null,
      },
    };
    const exchange = {
      callback: new URLSearchParams('code=a&code=b&state=s'),
      state: 's',
      redirectUri: app.redirectUri,
      codeVerifier: null,
    };
    const failure = await exchangeCode({ clientAuth: 'basic_raw' }, app, exchange, {
      signal: AbortSignal.timeout(5_000),
    }).catch((e) => e);
    expect(failure, String(failure)).toBeInstanceOf(InvalidInputError);
    expect(failure.message).toContain('"code" parameter must be provided only once');
    expect(failure.message).toContain('nothing was sent to reddit_ads');
  });
});

describe('refreshTokenExpiry', () => {
  const now = new Date('2026-11-26T00:00:00Z');
  const tokens = (refreshTokenExpiresAt: Date | null) => ({
    accessToken: new Secret('a'),
    refreshToken: new Secret('r'),
    tokenType: 'Bearer',
    expiresAt: null,
    refreshTokenExpiresAt,
    scope: null,
  });

  it("keeps LinkedIn's end fixed at the first consent: a refresh never moves it later", () => {
    const first = new Date('2027-11-26T00:00:00Z');
    const later = new Date('2027-12-26T00:00:00Z');
    const fixed = { at: first, fixed: true };
    expect(refreshTokenExpiry('linkedin_ads', tokens(first), now, null)).toEqual(fixed);
    expect(refreshTokenExpiry('linkedin_ads', tokens(later), now, fixed)).toEqual(fixed);
    expect(refreshTokenExpiry('linkedin_ads', tokens(null), now, fixed)).toEqual(fixed);
  });

  it('counts idle lifetimes from the last use: Microsoft 90 days, Google 180', () => {
    expect(refreshTokenExpiry('microsoft_ads', tokens(null), now, null)).toEqual({
      at: new Date('2027-02-24T00:00:00Z'),
      fixed: false,
    });
    const estimate = { at: new Date('2027-05-25T00:00:00Z'), fixed: false };
    expect(refreshTokenExpiry('google_ads', tokens(null), now, null)).toEqual(estimate);
    // An estimate moves on with every refresh.
    const later = new Date('2026-12-26T00:00:00Z');
    expect(refreshTokenExpiry('google_ads', tokens(null), later, estimate)).toEqual({
      at: new Date('2027-06-24T00:00:00Z'),
      fixed: false,
    });
    expect(refreshTokenExpiry('reddit_ads', tokens(null), now, null)).toEqual({ at: null, fixed: false });
  });

  it("keeps an end Google gave (an app in Testing: 7 days) when a refresh's answer says nothing of it", () => {
    const sevenDays = new Date('2026-12-03T00:00:00Z');
    const given = refreshTokenExpiry('google_ads', tokens(sevenDays), now, null);
    expect(given).toEqual({ at: sevenDays, fixed: true });
    expect(refreshTokenExpiry('google_ads', tokens(null), new Date('2026-11-30T00:00:00Z'), given)).toEqual(
      given,
    );
    // A new end from the platform replaces it (Google has no fixed-at-consent rule like LinkedIn's).
    const renewed = new Date('2026-12-07T00:00:00Z');
    expect(refreshTokenExpiry('google_ads', tokens(renewed), now, given)).toEqual({
      at: renewed,
      fixed: true,
    });
  });
});

describe('redact', () => {
  it('removes known secrets and anything shaped like a token from platform text', () => {
    const text =
      'invalid token ya29.a0AfH6SMBx-very-long-google-token-1234567890 for client s3cr3t-value and eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.sig';
    const out = redact(text, ['s3cr3t-value']);
    expect(out).not.toContain('ya29.a0AfH6SMBx');
    expect(out).not.toContain('s3cr3t-value');
    expect(out).not.toContain('eyJhbGci');
    expect(out).toContain('invalid token');
  });

  it("keeps credvault's own ids (UUIDs) in a log line, and still hides a long opaque run around one", () => {
    const id = '8f34682f-4996-4e20-9c93-491cb2b0d699';
    expect(redact(`refresh of grant ${id} (microsoft_ads) failed`)).toBe(
      `refresh of grant ${id} (microsoft_ads) failed`,
    );
    expect(redact(`token x${id}y`)).toBe('token [redacted]');
    expect(redact('opaque 0123456789abcdef0123456789abcdef0123')).toBe('opaque [redacted]');
  });

  it('keeps a path under a folder the caller names (a key file, a socket), and hides any other token-shaped run', () => {
    const keepUnder = ['/run/credentials/credvault.service', '/var/lib/credvault'];
    const key = '/run/credentials/credvault.service/credential_master_key';
    expect(redact(`the master key from ${key} is not 32 bytes`, [], { keepUnder })).toBe(
      `the master key from ${key} is not 32 bytes`,
    );
    expect(redact('listening on unix:/var/lib/credvault/run/daemon.sock', [], { keepUnder })).toBe(
      'listening on unix:/var/lib/credvault/run/daemon.sock',
    );
    expect(redact(`the master key from ${key} is not 32 bytes`)).toBe(
      'the master key from [redacted] is not 32 bytes',
    );
    // A base64 secret that starts with a slash looks like a path, and is not kept.
    expect(
      redact('signing key /wJalrXUtnFEMIK7MDENGbPxRfiCY/EXAMPLEKEY was refused', [], { keepUnder }),
    ).toBe('signing key [redacted] was refused');
    expect(redact('/var/lib/credvaultX/0123456789abcdef0123456789', [], { keepUnder })).toBe('[redacted]');
    // The folder itself too: "there is no vault at /home/alice/.local/share/credvault".
    const home = ['/home/alice/.local/share/credvault'];
    expect(
      redact('there is no vault at /home/alice/.local/share/credvault (no', [], { keepUnder: home }),
    ).toBe('there is no vault at /home/alice/.local/share/credvault (no');
  });

  it('keeps the metric names its log lines quote, and nothing else of their shape (a passphrase)', () => {
    expect(redact('credvault_database_gauges_updated_timestamp_seconds says how old')).toBe(
      'credvault_database_gauges_updated_timestamp_seconds says how old',
    );
    expect(redact('db password correct_horse_battery_staple_orange_kite leaked')).toBe(
      'db password [redacted] leaked',
    );
    expect(excerpt('{"secret":"purple_monkey_dishwasher_battery_staple"}')).toBe('{"secret":"[redacted]"}');
  });
});

describe("excerpt (a platform's error text)", () => {
  it('hides shorter token-shaped runs too: an API key, 30 characters of base64; keeps error names, ids and words', () => {
    const body =
      'AADSTS700082: key sk_live_abcdefghijklmnop123456 and Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA and Zm9vYmFyYmF6+cXV4cXV1eHh5eXp6== were refused at /api/v1/access_token (OAUTH_TOKEN_INVALID_OR_EXPIRED, request 8f34682f-4996-4e20-9c93-491cb2b0d699)';
    expect(excerpt(body)).toBe(
      'AADSTS700082: key [redacted] and [redacted] and [redacted] were refused at /api/v1/access_token (OAUTH_TOKEN_INVALID_OR_EXPIRED, request 8f34682f-4996-4e20-9c93-491cb2b0d699)',
    );
    // credvault's own log lines keep a label of that shape.
    expect(redact('refreshed google-ads-1234567890-main')).toBe('refreshed google-ads-1234567890-main');
  });
});

describe('parseRetryAfter', () => {
  it('reads delta-seconds and HTTP dates', () => {
    expect(parseRetryAfter('2')).toBe(2);
    expect(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString())).toBeGreaterThanOrEqual(9);
    expect(parseRetryAfter('soon')).toBeNull();
    expect(parseRetryAfter(null)).toBeNull();
  });
});
