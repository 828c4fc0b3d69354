import { describe, expect, it } from 'vitest';
import { Secret } from '../../src/crypto/secret.js';
import { microsoftHeaders, microsoftServiceBase } from '../../src/providers/platforms/microsoft-ads.js';
import type { ProviderApp } from '../../src/providers/types.js';

const app = (apiBase: string | null) => ({ endpoints: { apiBase } }) as unknown as ProviderApp;

describe("Microsoft Advertising's two service hosts", () => {
  it('production by default: clientcenter for Customer Management, campaign for Campaign Management', () => {
    expect(microsoftServiceBase(app(null), 'clientcenter')).toBe(
      'https://clientcenter.api.bingads.microsoft.com',
    );
    expect(microsoftServiceBase(app(null), 'campaign')).toBe('https://campaign.api.bingads.microsoft.com');
  });

  it('a sandbox override naming either host stands for both', () => {
    for (const given of [
      'https://campaign.api.sandbox.bingads.microsoft.com',
      'https://clientcenter.api.sandbox.bingads.microsoft.com/',
    ]) {
      expect(microsoftServiceBase(app(given), 'clientcenter')).toBe(
        'https://clientcenter.api.sandbox.bingads.microsoft.com',
      );
      expect(microsoftServiceBase(app(given), 'campaign')).toBe(
        'https://campaign.api.sandbox.bingads.microsoft.com',
      );
    }
  });

  it('any other override (a proxy, a test server) serves both as given', () => {
    expect(microsoftServiceBase(app('http://127.0.0.1:9000/ms'), 'clientcenter')).toBe(
      'http://127.0.0.1:9000/ms',
    );
    expect(microsoftServiceBase(app('http://127.0.0.1:9000/ms'), 'campaign')).toBe(
      'http://127.0.0.1:9000/ms',
    );
  });
});

describe('Microsoft Advertising headers', () => {
  it('carry the developer token, and without one refuse before any call (no empty header)', () => {
    const withToken = { label: 'ms', developerToken: new Secret('dev-123') } as unknown as ProviderApp;
    expect(microsoftHeaders(withToken, new Secret('at'))).toEqual({
      authorization: 'Bearer at',
      developertoken: 'dev-123',
    });
    const without = { label: 'ms', developerToken: null } as unknown as ProviderApp;
    expect(() => microsoftHeaders(without, new Secret('at'))).toThrow(
      'app ms has no developer token, which Microsoft Advertising requires on every call',
    );
  });
});
