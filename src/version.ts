import { readFileSync } from 'node:fs';

declare const __CREDVAULT_VERSION__: string | undefined;

/** Inlined by the build; read from package.json when running from source (tsx, vitest). */
export const VERSION: string =
  typeof __CREDVAULT_VERSION__ === 'string'
    ? __CREDVAULT_VERSION__
    : (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string })
        .version;
