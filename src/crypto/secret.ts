import { inspect } from 'node:util';

const REDACTED = '[redacted]';

/**
 * A secret in memory. It prints as "[redacted]" through toString, JSON.stringify, template strings,
 * console.log and util.inspect; the only way to the value is `reveal()`, so every place a secret
 * leaves the program is greppable.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  get length(): number {
    return this.#value.length;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return 'Secret([redacted])';
  }
}
