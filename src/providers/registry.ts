import type { PlatformId } from './catalog.js';
import type { CampaignOps, Provider } from './types.js';

/**
 * The one switch on platform name. Modules load on demand: `token get` on a valid token loads none,
 * a refresh loads one.
 */
export async function providerFor(platform: PlatformId): Promise<Provider> {
  switch (platform) {
    case 'google_ads':
      return (await import('./platforms/google-ads.js')).googleAds;
    case 'microsoft_ads':
      return (await import('./platforms/microsoft-ads.js')).microsoftAds;
    case 'linkedin_ads':
      return (await import('./platforms/linkedin-ads.js')).linkedInAds;
    case 'reddit_ads':
      return (await import('./platforms/reddit-ads.js')).redditAds;
  }
}

/** A platform's campaign operations, loaded only by the commands that use them. */
export async function campaignOpsFor(platform: PlatformId): Promise<CampaignOps> {
  switch (platform) {
    case 'google_ads':
      return (await import('./campaigns/google-ads.js')).googleCampaigns;
    case 'microsoft_ads':
      return (await import('./campaigns/microsoft-ads.js')).microsoftCampaigns;
    case 'linkedin_ads':
      return (await import('./campaigns/linkedin-ads.js')).linkedInCampaigns;
    case 'reddit_ads':
      return (await import('./campaigns/reddit-ads.js')).redditCampaigns;
  }
}
