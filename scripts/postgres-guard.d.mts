import type { Plugin } from 'esbuild';

/** The patched text of postgres.js's src/connection.js (see postgres-guard.mjs). */
export declare function guardConnection(text: string): string;
/** The esbuild plugin that applies guardConnection to postgres.js as it is bundled. */
export declare const postgresGuard: Plugin;
