// Builds dist/ with esbuild: one ESM bundle per entry point, split into lazily loaded chunks so a
// command loads only what it runs. Type checking is `npm run typecheck` (tsc), not part of the build.
import { readFileSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
await build({
  entryPoints: { cli: 'src/cli/main.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  chunkNames: 'chunks/[name]-[hash]',
  define: { __CREDVAULT_VERSION__: JSON.stringify(pkg.version) },
  logLevel: 'warning',
});
