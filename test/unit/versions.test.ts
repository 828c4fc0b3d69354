import { describe, expect, it } from 'vitest';
import { describeAtRisk, fixForAtRisk, versionAtRisk, versionSunset } from '../../src/providers/versions.js';

/** API versions near their end: the platforms' announced dates, LinkedIn's year, the 90-day warning. */
describe('API version sunsets', () => {
  const at = (day: string) => new Date(`${day}T12:00:00Z`);

  it('knows announced dates, LinkedIn’s year for its other months, and nothing for the rest', () => {
    expect(versionSunset('linkedin_ads', '202601')).toEqual({ date: '2027-01-15', announced: true });
    expect(versionSunset('linkedin_ads', '202412')).toEqual({ date: '2025-12-01', announced: false });
    expect(versionSunset('linkedin_ads', '202413')).toBeNull();
    expect(versionSunset('google_ads', 'v21')).toEqual({ date: '2026-08-05', announced: true });
    expect(versionSunset('google_ads', 'v26')).toBeNull();
    expect(versionSunset('microsoft_ads', 'v13')).toBeNull();
    expect(versionSunset('reddit_ads', 'v3')).toBeNull();
  });

  it('warns within 90 days of the end and after it, counting whole days', () => {
    const li = { platform: 'linkedin_ads', label: 'acme', apiVersion: null };
    expect(versionAtRisk(li, at('2026-10-16'))).toBeNull(); // 91 days ahead
    const risk = versionAtRisk(li, at('2026-11-28'));
    expect(risk).toMatchObject({ app: 'linkedin_ads/acme', version: '202601', isDefault: true, days: 48 });
    expect(describeAtRisk(risk!)).toBe(
      "linkedin_ads/acme uses LinkedIn-Version 202601 (credvault's default), which the platform stops serving on 2027-01-15 (in 48 days)",
    );
    expect(fixForAtRisk([risk!], at('2026-11-28'))).toContain('(announced: 202603 served until 2027-03-16)');
    // A later version is not offered once it is near its own end.
    expect(fixForAtRisk([risk!], at('2027-01-01'))).not.toContain('announced');
    const past = versionAtRisk({ ...li, apiVersion: '202510' }, at('2026-11-28'))!;
    expect(describeAtRisk(past)).toBe(
      'linkedin_ads/acme uses LinkedIn-Version 202510, which the platform no longer serves (since 2026-10-15)',
    );
    // Pinned to a dead version while the default is not near its end: back to the default.
    const pinned = versionAtRisk(
      { platform: 'google_ads', label: 'prod', apiVersion: 'v22' },
      at('2026-11-28'),
    )!;
    expect(fixForAtRisk([pinned], at('2026-11-28'))).toContain(
      "`credvault apps update google_ads/prod --api-version ''` moves it to the default v26",
    );
  });
});
