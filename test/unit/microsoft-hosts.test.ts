import { describe, expect, it } from 'vitest';
import { microsoftServiceBase } from '../../src/providers/platforms/microsoft-ads.js';
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
