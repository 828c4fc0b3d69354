import { basename } from 'node:path';

/**
 * This process is `credvault …` (bin/credvault, under whatever link npm made to it), not a program
 * using the library: read off the script Node runs, so that nothing has to set it first.
 */
export const isCredvaultProcess = basename(process.argv[1] ?? '') === 'credvault';
