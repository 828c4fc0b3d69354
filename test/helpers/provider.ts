import { expect } from 'vitest';
import { ProviderError } from '../../src/providers/errors.js';

/** The ProviderError a platform call was refused with (the test fails if it succeeded, or threw else). */
export function refusal(promise: Promise<unknown>): Promise<ProviderError> {
  return promise.then(
    () => {
      throw new Error('expected a refusal');
    },
    (error: unknown) => {
      expect(error).toBeInstanceOf(ProviderError);
      return error as ProviderError;
    },
  );
}
