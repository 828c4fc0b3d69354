import { describe, expect, it } from 'vitest';
import { ProviderError } from '../../src/providers/errors.js';
import { PageGuard } from '../../src/providers/paging.js';

/** The one guard every platform's paging goes through (Google, LinkedIn, Reddit). */
describe('PageGuard', () => {
  it('a cursor seen before is the platform looping: invalid_response, never a silent stop', () => {
    const guard = new PageGuard('LinkedIn', 'listing the campaigns of LinkedIn ad account 5101');
    guard.next('a');
    guard.next('b');
    const error = (() => {
      try {
        guard.next('a');
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({ kind: 'invalid_response' });
    expect((error as Error).message).toBe(
      'listing the campaigns of LinkedIn ad account 5101: LinkedIn gave the same next page twice (after page 3), so its list never ends; stopped rather than ask again',
    );
  });

  it('allows `max` pages and refuses the one after', () => {
    const guard = new PageGuard('Reddit', 'listing', 3);
    guard.next('2');
    guard.next('3');
    expect(() => guard.next('4')).toThrow('Reddit still had more after 3 pages');
  });
});
