import { defineConfig } from 'vitest/config';

/**
 * `npm test` runs the database tests on the embedded database; when CREDVAULT_TEST_DATABASE_URL is
 * set, they run again on PostgreSQL, except those of what does not depend on the database (below),
 * which then run on PostgreSQL only. Unit tests need no database and run once.
 */
const databaseTests = ['test/cli/**/*.test.ts', 'test/integration/**/*.test.ts'];
// Tests of what does not depend on the database run once, on PostgreSQL when it is there (the faster
// of the two), else on the embedded database: these whole files (the KMS key sources' calls, errors
// and encryption contexts, the campaign operations of the four platforms, the flows against
// oidc-provider), and the tests marked `ONCE` in the others (test/helpers/vault.ts says which
// qualify). The database only keeps what they store, through statements that tests on both run too.
// Everything about locking, leases, concurrency, transactions, what is on disk and the daemon
// sharing the embedded database runs on both. The suite is to stay well under ten minutes on a 2-core
// CI machine (CI itself allows 90); a command on the embedded database costs about three times one on
// PostgreSQL.
const onceTests = [
  'test/cli/kms.test.ts',
  'test/cli/kms-failures.test.ts',
  'test/cli/campaigns-*.test.ts',
  'test/cli/oidc-provider.test.ts',
];
const withPostgres = Boolean(process.env.CREDVAULT_TEST_DATABASE_URL);
const shared = {
  testTimeout: 180_000,
  hookTimeout: 120_000,
  globalSetup: ['test/helpers/global-setup.ts'],
  setupFiles: ['test/helpers/cpu-trace.ts'],
};

const projects = [
  { test: { ...shared, name: 'unit', include: ['test/unit/**/*.test.ts'], globalSetup: [] } },
  {
    test: {
      ...shared,
      name: 'pglite',
      include: databaseTests,
      exclude: withPostgres ? onceTests : [],
      env: { CREDVAULT_TEST_DB: 'pglite' },
    },
  },
];
if (!withPostgres && !process.env.VITEST_WORKER_ID) {
  // Said once, so that a plain `npm test` is not taken for the whole suite.
  process.stderr.write(
    'credvault: CREDVAULT_TEST_DATABASE_URL is not set, so the tests run on the embedded database only; the PostgreSQL-only ones (a fleet of daemons, leases across hosts) are skipped. Set it (for example postgres://postgres@127.0.0.1:5432/test) to run them too, as .ci/run does.\n',
  );
}
if (withPostgres) {
  projects.push({
    test: {
      ...shared,
      name: 'postgres',
      include: databaseTests,
      exclude: [],
      env: { CREDVAULT_TEST_DB: 'postgres' },
    },
  });
}

export default defineConfig({
  test: {
    projects,
    pool: 'forks',
    // Most of a test's time is a credvault subprocess or a platform double waiting: run more test
    // files than there are cores (the default is one fewer than the cores, a single worker on CI).
    maxWorkers: 4,
    // The tests open the embedded database themselves too; the baseline Wasm tier starts it faster.
    execArgv: ['--liftoff-only'],
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
