import { EXIT_CODES, InvalidInputError } from '../../errors.js';
import {
  type ImportResult,
  importCredentials,
  parseEnvText,
  parseGoogleAdsYaml,
  type Recognised,
  recognise,
  type VerifyOutcome,
  verifyImported,
} from '../../services/import.js';
import { withContext } from '../context.js';
import { readFileOrStdin } from '../input.js';
import type { Runtime } from '../run.js';
import { noteDestroyed } from './connect.js';

interface ImportFlags {
  dryRun?: boolean;
  verify?: boolean;
}

/**
 * --verify refreshes each connection at the platform, and a refresh writes: a platform that rotates
 * refresh tokens (Microsoft Advertising does) answers with a new one, which a dry run would lose.
 */
function checkFlags(flags: ImportFlags): void {
  if (flags.dryRun && flags.verify) {
    throw new InvalidInputError(
      '--verify does not go with --dry-run: verifying refreshes each connection at the platform, which may rotate its refresh token, and a dry run cannot keep the new one',
      {
        hint: 'Read the plan with --dry-run, then import with --verify.',
      },
    );
  }
}

export async function env(rt: Runtime, flags: ImportFlags & { file?: string }): Promise<void> {
  checkFlags(flags);
  const path = flags.file ?? '.env';
  const source = path === '-' ? 'standard input' : path;
  const text = await readFileOrStdin(rt, path, '--file', '.env');
  // Parsed and recognised before the database is opened: a broken file writes nothing.
  await run(rt, recognise(parseEnvText(text, source)), source, flags);
}

export async function googleAdsYaml(rt: Runtime, file: string, flags: ImportFlags): Promise<void> {
  checkFlags(flags);
  const source = file === '-' ? 'standard input' : file;
  const text = await readFileOrStdin(rt, file, 'FILE', 'google-ads.yaml');
  await run(rt, parseGoogleAdsYaml(text, source), source, flags);
}

async function run(rt: Runtime, found: Recognised, source: string, flags: ImportFlags): Promise<void> {
  const { result, verified } = await withContext(rt, async (ctx) => {
    const result = await importCredentials(ctx, found, { dryRun: flags.dryRun === true, source });
    const verified = flags.verify ? await verifyImported(ctx, result.named) : null;
    return { result, verified };
  });
  const failed = verified?.filter((v) => !v.ok) ?? [];
  if (failed.length) {
    // The import stands; the exit code says that some of it does not work (a person must look).
    const codes = failed.map((f) => EXIT_CODES[f.code ?? 'reauth_required']);
    rt.exitCode = codes.includes(EXIT_CODES.reauth_required)
      ? EXIT_CODES.reauth_required
      : Math.max(...codes);
  }
  for (const warning of result.warnings) rt.out.warn(warning);
  if (rt.out.json) return rt.out.writeJson(importJson(result, verified));
  print(rt, result, verified, source);
  noteDestroyed(rt, result.destroyed);
}

function importJson(result: ImportResult, verified: VerifyOutcome[] | null) {
  return {
    applied: result.applied,
    plan: result.plan.map((p) => ({
      action: p.action,
      kind: p.kind,
      platform: p.platform,
      target: p.target,
      detail: p.detail,
    })),
    unknown: result.unknown,
    ignored: result.ignored,
    unsupported: result.unsupported,
    connections: result.connections,
    verify:
      verified?.map((v) => ({
        connection: v.connection,
        platform: v.platform,
        account: v.account,
        ok: v.ok,
        error_code: v.code,
        message: v.message,
      })) ?? null,
  };
}

function print(rt: Runtime, result: ImportResult, verified: VerifyOutcome[] | null, source: string): void {
  const { out } = rt;
  out.list(result.plan, (p) => p, [
    {
      header: result.applied ? 'DONE' : 'WOULD',
      value: (p) => p.action,
      style: (p, text, c) =>
        p.action === 'create' || p.action === 'join'
          ? c.green(text)
          : p.action === 'update'
            ? c.yellow(text)
            : p.action === 'skip'
              ? c.red(text)
              : c.dim(text),
    },
    { header: 'KIND', value: (p) => p.kind },
    { header: 'PLATFORM', value: (p) => p.platform },
    { header: 'TARGET', value: (p) => p.target },
    { header: 'DETAIL', value: (p) => p.detail },
  ]);
  if (result.unknown.length) {
    out.warn(`not imported, unknown to credvault: ${result.unknown.join(', ')}`);
  }
  if (result.unsupported.length) {
    out.warn(
      `not imported, service-account settings (credvault keeps OAuth grants only): ${result.unsupported.join(', ')}`,
    );
  }
  if (result.ignored.length) out.note(`left alone, client-library settings: ${result.ignored.join(', ')}`);
  const changes = result.plan.filter(
    (p) => p.action === 'create' || p.action === 'update' || p.action === 'join',
  ).length;
  const skipped = result.plan.filter((p) => p.action === 'skip').length;
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (!result.applied) {
    out.note(`dry run: nothing was written. Run again without --dry-run to import from ${source}.`);
  } else if (changes === 0 && skipped === 0) {
    out.success(`nothing to change: everything in ${source} is already in the vault`);
  } else if (changes === 0) {
    out.success(`nothing to change; ${skipped} skipped (the plan says why)`);
  } else {
    out.success(
      `imported ${source}: ${plural(changes, 'change')} in one transaction${skipped ? `, ${skipped} skipped (the plan says why)` : ''}`,
    );
  }
  if (verified) {
    for (const v of verified) {
      if (v.ok) out.success(`${v.connection}: ${v.message}`);
      else out.warn(`${v.connection} does not work: ${v.message}`);
    }
  } else if (result.applied && result.connections.length) {
    out.note('check them with `credvault import … --verify`, or `credvault connections refresh CONN`');
  }
}
