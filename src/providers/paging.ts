import { ProviderError } from './errors.js';

/**
 * Pages a platform's list may take before credvault gives up on it. Far above any real account
 * (Google serves 10,000 rows a page, LinkedIn 5,000 campaigns an account in 50 pages of 100): reaching
 * it means the platform is looping, not that the account is that large.
 */
export const MAX_PAGES = 1000;

/**
 * The one guard on every platform's paging: a next-page cursor (token, URL or offset) seen before, or
 * more than `max` pages, is the platform looping. Either ends the list with an error
 * (`invalid_response`, exit 5) rather than requests without end, or a part of the list taken for the
 * whole (a budget change judged on half the ad groups).
 */
export class PageGuard {
  private readonly seen = new Set<string>();
  private pages = 1;

  constructor(
    private readonly platform: string,
    private readonly what: string,
    private readonly max = MAX_PAGES,
  ) {}

  /** Before following `cursor` to the next page: throws when the platform is looping. */
  next(cursor: string): void {
    if (this.seen.has(cursor)) {
      throw new ProviderError(
        'invalid_response',
        `${this.what}: ${this.platform} gave the same next page twice (after page ${this.pages}), so its list never ends; stopped rather than ask again`,
      );
    }
    if (this.pages >= this.max) {
      throw new ProviderError(
        'invalid_response',
        `${this.what}: ${this.platform} still had more after ${this.max} pages; stopped rather than take part of the list for all of it`,
      );
    }
    this.seen.add(cursor);
    this.pages += 1;
  }
}
