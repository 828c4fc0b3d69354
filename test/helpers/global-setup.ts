/**
 * Prepares one initialized vault per test project, so each test file copies it instead of paying for
 * `credvault init` (and PGlite's initdb) again: a data folder with its master key, and on PostgreSQL a
 * template database. The template is made by the real binary, so it is what a user's `init` makes.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import type { TestProject } from 'vitest/node';
import { BIN, databaseUrlFor } from './paths.js';

declare module 'vitest' {
  export interface ProvidedContext {
    templateHome: string;
    templateDatabase: string | null;
    runId: number;
  }
}

export default async function setup(project: TestProject) {
  const kind = project.name === 'postgres' ? 'postgres' : 'pglite';
  const root = mkdtempSync(join(tmpdir(), `credvault-template-${kind}-`));
  const home = join(root, 'home');
  let templateDatabase: string | null = null;
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: root, CREDVAULT_HOME: home, NO_COLOR: '1' };
  let admin: postgres.Sql | null = null;
  if (kind === 'postgres') {
    const base = process.env.CREDVAULT_TEST_DATABASE_URL!;
    admin = postgres(base, { max: 1, onnotice: () => {} });
    templateDatabase = `credvault_tpl_${process.pid}`;
    await admin.unsafe(`drop database if exists ${templateDatabase}`);
    await admin.unsafe(`create database ${templateDatabase}`);
    env.DATABASE_URL = databaseUrlFor(base, templateDatabase);
  }
  const result = spawnSync(process.execPath, [BIN, 'init', '--json'], { env, encoding: 'utf8' });
  if (result.status !== 0)
    throw new Error(`credvault init failed for the ${kind} template: ${result.stderr}`);
  project.provide('templateHome', home);
  project.provide('templateDatabase', templateDatabase);
  project.provide('runId', process.pid);
  return async () => {
    rmSync(root, { recursive: true, force: true });
    if (admin && templateDatabase) {
      const leftovers = await admin<{ datname: string }[]>`
        select datname from pg_database where datname like ${`credvault_t_${process.pid}_%`} or datname = ${templateDatabase}`;
      for (const { datname } of leftovers)
        await admin.unsafe(`drop database if exists ${datname} with (force)`);
      await admin.end();
    }
  };
}
