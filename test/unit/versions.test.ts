import { describe, expect, it } from 'vitest';
import { describeAtRisk, fixForAtRisk, versionAtRisk, versionSunset } from '../../src/providers/versions.js';

/** API versions near their end: the platforms' announced dates, LinkedIn's year, the 90-day warning. */
describe('API version sunsets', () => {
  const at = (day: string) => new Date(`${day}T12:00:00Z`);

  it('knows announced dates, LinkedIn’s year for its other months, and nothing for the rest', () => {
    expect(versionSunset('linkedin_ads', '202601')).toEqual({ date: '2027-01-15', announced: true });
    expect(versionSunset('linkedin_ads', '202602')).toEqual({ date: '2027-02-15', announced: true });
    expect(versionSunset('linkedin_ads', '202608')).toEqual({ date: '2027-08-01', announced: false });
    expect(versionSunset('linkedin_ads', '202412')).toEqual({ date: '2025-12-01', announced: false });
    expect(versionSunset('linkedin_ads', '202413')).toBeNull();
    expect(versionSunset('google_ads', 'v21')).toEqual({ date: '2026-08-05', announced: true });
    expect(versionSunset('google_ads', 'v26')).toBeNull();
    expect(versionSunset('microsoft_ads', 'v13')).toBeNull();
    expect(versionSunset('reddit_ads', 'v3')).toBeNull();
  });

  it('warns within 90 days of the end and after it, counting whole days', () => {
    const li = { platform: 'linkedin_ads', label: 'acme', apiVersion: null };
    // The default, 202608: LinkedIn's year from its month.
    expect(versionAtRisk(li, at('2026-11-28'))).toBeNull();
    expect(versionAtRisk(li, at('2027-05-02'))).toBeNull(); // 91 days ahead
    const ending = versionAtRisk(li, at('2027-05-03'));
    expect(ending).toMatchObject({ version: '202608', isDefault: true, days: 90 });
    expect(describeAtRisk(ending!)).toBe(
      "linkedin_ads/acme uses LinkedIn-Version 202608 (credvault's default), which LinkedIn promises to serve only until about 2027-08-01 (a year from its month; in 90 days)",
    );
    // No later version is announced: none is offered, and upgrading credvault is.
    const later = fixForAtRisk([ending!], at('2027-05-03'));
    expect(later).toContain('pins a later version after reading what changed');
    expect(later).toContain('or upgrade credvault');
    // Pinned to 202601 while the default is not near its end: back to the default.
    const risk = versionAtRisk({ ...li, apiVersion: '202601' }, at('2026-11-28'));
    expect(risk).toMatchObject({ app: 'linkedin_ads/acme', version: '202601', isDefault: false, days: 48 });
    expect(describeAtRisk(risk!)).toBe(
      'linkedin_ads/acme uses LinkedIn-Version 202601, which the platform stops serving on 2027-01-15 (in 48 days)',
    );
    expect(fixForAtRisk([risk!], at('2026-11-28'))).toContain(
      "`credvault apps update linkedin_ads/acme --api-version ''` moves it to the default 202608",
    );
    // With the default near its end too, later announced versions are offered, not those near theirs.
    const both = versionAtRisk({ ...li, apiVersion: '202511' }, at('2027-05-03'))!;
    expect(fixForAtRisk([both], at('2027-05-03'))).not.toContain('announced');
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
