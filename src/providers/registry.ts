import type { PlatformId } from './catalog.js';
import type { Provider } from './types.js';

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
