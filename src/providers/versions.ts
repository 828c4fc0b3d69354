import { PLATFORMS, type PlatformId } from './catalog.js';

/**
 * When a platform stops serving an API version, so that `doctor` can say so ahead of the day instead
 * of the platform's refusal (LinkedIn answers 426) saying it after. Only dates the platforms
 * announced (shared/providers.md quotes the pages), and for LinkedIn's other monthly versions its
 * rule: each is served at least a year from its month.
 */
const ANNOUNCED: Partial<Record<PlatformId, Record<string, string>>> = {
  // https://developers.google.com/google-ads/api/docs/sunset-dates
  google_ads: { v21: '2026-08-05', v22: '2026-10-07' },
  // https://learn.microsoft.com/en-us/linkedin/marketing/integrations/migrations
  linkedin_ads: {
    '202510': '2026-10-15',
    '202511': '2026-11-16',
    '202601': '2027-01-15',
    '202602': '2027-02-15',
    '202603': '2027-03-16',
  },
};

/** Where each platform lists its versions and what changed in each. */
const VERSIONS_PAGE: Partial<Record<PlatformId, string>> = {
  google_ads: 'https://developers.google.com/google-ads/api/docs/sunset-dates',
  linkedin_ads: 'https://learn.microsoft.com/en-us/linkedin/marketing/integrations/migrations',
};

/** How long ahead of a version's end doctor warns. */
const SUNSET_WARNING_DAYS = 90;

export interface VersionSunset {
  /** The day the platform stops serving it (YYYY-MM-DD, UTC). */
  date: string;
  /** Announced by the platform, or only the earliest its rule allows (LinkedIn's year). */
  announced: boolean;
  /**
   * The version is older than every one listed here: it ended before `date`, the end of the oldest
   * listed (which version that is).
   */
  olderThan?: string;
}

/** v21 → 21, 202603 → 202603: versions of one platform in order. */
const versionNumber = (version: string) => Number(version.replace(/^v/, '')) || 0;

export function versionSunset(platform: PlatformId, version: string): VersionSunset | null {
  const date = ANNOUNCED[platform]?.[version];
  if (date) return { date, announced: true };
  // Google serves each version about a year and retires them in order: one older than the oldest
  // listed has already ended (v20 and before are refused with a 404).
  const older = platform === 'google_ads' ? /^v(\d+)$/.exec(version) : null;
  if (older) {
    const [oldest, end] = Object.entries(ANNOUNCED.google_ads ?? {}).sort(
      ([a], [b]) => versionNumber(a) - versionNumber(b),
    )[0] ?? [null, null];
    if (oldest && end && Number(older[1]) < versionNumber(oldest)) {
      return { date: end, announced: true, olderThan: oldest };
    }
  }
  const month = platform === 'linkedin_ads' ? /^(\d{4})(0[1-9]|1[0-2])$/.exec(version) : null;
  if (month) return { date: `${Number(month[1]) + 1}-${month[2]}-01`, announced: false };
  return null;
}

export interface VersionAtRisk {
  platform: PlatformId;
  app: string;
  version: string;
  /** The app's version is the platform's default (none set on the app). */
  isDefault: boolean;
  sunset: VersionSunset;
  /** Whole days from now to the sunset; 0 or less: already past. */
  days: number;
}

const DAY_MS = 86_400_000;

/** Whole days from `now` to the start (UTC) of the day YYYY-MM-DD; 0 or less: that day has come. */
const daysUntil = (day: string, now: Date) =>
  Math.ceil((Date.parse(`${day}T00:00:00Z`) - now.getTime()) / DAY_MS);

/** The app's API version when it ends within SUNSET_WARNING_DAYS of `now` (or has ended), else null. */
export function versionAtRisk(
  app: { platform: string; label: string; apiVersion: string | null },
  now: Date,
): VersionAtRisk | null {
  const platform = app.platform as PlatformId;
  const info = PLATFORMS[platform];
  if (!info) return null;
  const version = app.apiVersion ?? info.defaults.apiVersion;
  const sunset = versionSunset(platform, version);
  if (!sunset) return null;
  const days = daysUntil(sunset.date, now);
  if (days > SUNSET_WARNING_DAYS) return null;
  return {
    platform,
    app: `${platform}/${app.label}`,
    version,
    isDefault: app.apiVersion === null,
    sunset,
    days,
  };
}

/** One line on a version at risk: which app, which version, when. */
export function describeAtRisk(risk: VersionAtRisk): string {
  const name =
    risk.platform === 'linkedin_ads' ? `LinkedIn-Version ${risk.version}` : `API version ${risk.version}`;
  const which = `${risk.app} uses ${name}${risk.isDefault ? " (credvault's default)" : ''}`;
  if (!risk.sunset.announced) {
    return risk.days <= 0
      ? `${which}, which LinkedIn promises to serve only until about ${risk.sunset.date} (a year from its month) and may no longer serve`
      : `${which}, which LinkedIn promises to serve only until about ${risk.sunset.date} (a year from its month; in ${risk.days} day${risk.days === 1 ? '' : 's'})`;
  }
  if (risk.sunset.olderThan) {
    return `${which}, which the platform no longer serves (it is older than ${risk.sunset.olderThan}, which ended on ${risk.sunset.date})`;
  }
  return risk.days <= 0
    ? `${which}, which the platform no longer serves (since ${risk.sunset.date})`
    : `${which}, which the platform stops serving on ${risk.sunset.date} (in ${risk.days} day${risk.days === 1 ? '' : 's'})`;
}

/** What to do about the apps at risk: back to a default that is not, or a later version pinned. */
export function fixForAtRisk(risks: VersionAtRisk[], now: Date): string {
  const lines = risks.map((risk) => {
    const fallback = versionAtRisk({ platform: risk.platform, label: risk.app, apiVersion: null }, now);
    const page = VERSIONS_PAGE[risk.platform];
    const check = page ? ` after reading what changed (${page})` : '';
    if (!risk.isDefault && !fallback) {
      const current = PLATFORMS[risk.platform].defaults.apiVersion;
      return `\`credvault apps update ${risk.app} --api-version ''\` moves it to the default ${current}${check}.`;
    }
    const later = Object.entries(ANNOUNCED[risk.platform] ?? {}).filter(
      ([version, date]) =>
        versionNumber(version) > versionNumber(risk.version) && daysUntil(date, now) > SUNSET_WARNING_DAYS,
    );
    const known = later.length
      ? ` (announced: ${later.map(([version, date]) => `${version} served until ${date}`).join(', ')})`
      : '';
    return `\`credvault apps update ${risk.app} --api-version VERSION\` pins a later version${known}${check}${risk.isDefault ? ', or upgrade credvault' : ''}.`;
  });
  return [
    ...lines,
    'Past that day tokens still refresh (the OAuth endpoints have no version); connecting accounts and campaign commands are refused.',
  ].join(' ');
}
