// Builds dist/ with esbuild: one ESM bundle per entry point, split into lazily loaded chunks so a
// command loads only what it runs. Type checking is `npm run typecheck` (tsc), not part of the build.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { build } from 'esbuild';
import { postgresGuard } from './postgres-guard.mjs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
await build({
  // The CLI and the library (`import { openVault } from 'credvault'`) share their chunks.
  entryPoints: { cli: 'src/cli/main.ts', index: 'src/index.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Dependencies are bundled too: resolving and compiling hundreds of small ESM files (drizzle-orm
  // alone has ~400) costs more start-up time than any command's work. PGlite stays external: it loads
  // its WebAssembly and data files from beside its own module.
  // The KMS clients stay external too: loaded only with CREDENTIAL_KMS_URI, and @google-cloud/kms
  // reads its API descriptions from files beside its modules.
  external: [
    '@electric-sql/pglite',
    '@electric-sql/pglite/*',
    '@electric-sql/pglite-socket',
    '@aws-sdk/client-kms',
    '@aws-sdk/credential-provider-node',
    '@google-cloud/kms',
    'google-auth-library',
  ],
  // CommonJS dependencies bundled into ESM still call require() for Node's built-ins.
  banner: {
    js: "import { createRequire as __cvCreateRequire } from 'node:module'; const require = __cvCreateRequire(import.meta.url);",
  },
  sourcemap: 'linked',
  chunkNames: 'chunks/[name]-[hash]',
  define: { __CREDVAULT_VERSION__: JSON.stringify(pkg.version) },
  // postgres.js with a guard for a known crash (see scripts/postgres-guard.mjs).
  plugins: [postgresGuard],
  logLevel: 'warning',
});

// `token get` through a running daemon, in CommonJS for bin/credvault to require before anything else.
await build({
  entryPoints: { 'fast-token': 'src/cli/fast-token.ts' },
  outdir: 'dist',
  outExtension: { '.js': '.cjs' },
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
});

// The library's type declarations (dist/types/index.d.ts), from the same sources by tsc.
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const types = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.types.json'], { stdio: 'inherit' });
if (types.status !== 0) process.exit(types.status ?? 1);
