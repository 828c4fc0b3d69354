import type { Secret } from '../../crypto/secret.js';
import type { AppRecord } from '../../db/store/apps.js';
import { InvalidInputError } from '../../errors.js';
import { PLATFORMS, parsePlatform } from '../../providers/catalog.js';
import { describeAtRisk, fixForAtRisk, versionAtRisk } from '../../providers/versions.js';
import {
  APP_FILE_FIELDS,
  type AppFields,
  addApp,
  checkNewApp,
  listApps,
  parseAppFields,
  type RawAppFields,
  removeApp,
  setAppEnabled,
  showApp,
  updateApp,
} from '../../services/apps.js';
import { parseJson } from '../../util/json.js';
import { appJson, connectionRef } from '../../views.js';
import { withContext } from '../context.js';
import { filterValue, promptSecret, readFileOrStdin, readSecretLine } from '../input.js';
import type { Column } from '../output.js';
import type { Runtime } from '../run.js';

interface AppFlags {
  label?: string;
  clientId?: string;
  redirectUri?: string;
  scope?: string[];
  loginCustomerId?: string;
  userAgent?: string;
  apiVersion?: string;
  authorizeUrl?: string;
  tokenUrl?: string;
  revokeUrl?: string;
  apiBaseUrl?: string;
  fromFile?: string;
}

/**
 * A secret field the file names and leaves empty ("", spaces, null) is a mistake to point at: taken
 * for "not given", it got the prompt's or the missing-secret message, which sent the user back to the
 * very file.
 */
function checkSecretFields(parsed: Record<string, unknown>, source: string, command: 'add' | 'update') {
  for (const [field, what] of [
    ['client_secret', 'client secret'],
    ['developer_token', 'developer token'],
  ] as const) {
    if (!(field in parsed)) continue;
    const value = parsed[field];
    if (value !== null && !(typeof value === 'string' && value.trim() === '')) continue;
    const leaveOut =
      command === 'add'
        ? `leave ${field} out to be asked for it at a terminal`
        : `leave ${field} out to keep the stored one${field === 'developer_token' ? ' (--clear-developer-token removes it)' : ''}`;
    throw new InvalidInputError(`${field} in ${source} is empty`, {
      hint: `Put the app's ${command === 'update' ? 'new ' : ''}${what} in it, or ${leaveOut}.`,
    });
  }
}

async function readAppFile(rt: Runtime, path: string, command: 'add' | 'update'): Promise<RawAppFields> {
  const source = path === '-' ? 'standard input' : path;
  const parsed = parseJson(await readFileOrStdin(rt, path, '--from-file'), source);
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new InvalidInputError(`${source} must hold one JSON object with the app's fields`);
  }
  const unknown = Object.keys(parsed).filter((k) => !APP_FILE_FIELDS.includes(k as keyof RawAppFields));
  if (unknown.length) {
    throw new InvalidInputError(
      `${source} has unknown field${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`,
      {
        hint: `Known fields: ${APP_FILE_FIELDS.join(', ')}.`,
      },
    );
  }
  checkSecretFields(parsed as Record<string, unknown>, source, command);
  return parsed as RawAppFields;
}

/** File first, flags win over it. */
async function gatherFields(rt: Runtime, flags: AppFlags, command: 'add' | 'update'): Promise<RawAppFields> {
  const file = flags.fromFile ? await readAppFile(rt, flags.fromFile, command) : {};
  const fromFlags: RawAppFields = {
    label: flags.label,
    client_id: flags.clientId,
    redirect_uri: flags.redirectUri,
    scopes: flags.scope,
    login_customer_id: flags.loginCustomerId,
    user_agent: flags.userAgent,
    api_version: flags.apiVersion,
    authorize_url: flags.authorizeUrl,
    token_url: flags.tokenUrl,
    revoke_url: flags.revokeUrl,
    api_base_url: flags.apiBaseUrl,
  };
  const merged: RawAppFields = { ...file };
  for (const [key, value] of Object.entries(fromFlags)) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  return merged;
}

function noSecretInput(what: string, command: string): InvalidInputError {
  return new InvalidInputError(
    `${command} needs the ${what}, and cannot ask for it here (no terminal, or --json)`,
    {
      hint: `Give it in --from-file FILE (or --from-file - for JSON on stdin), or run in a terminal to be prompted.`,
    },
  );
}

export async function add(rt: Runtime, platformInput: string, flags: AppFlags): Promise<void> {
  const platform = parsePlatform(platformInput);
  const info = PLATFORMS[platform];
  const fields = parseAppFields(await gatherFields(rt, flags, 'add'));
  checkNewApp(platform, fields);
  if (fields.clientSecret === undefined && platform !== 'microsoft_ads') {
    if (!rt.interactive) throw noSecretInput('client secret', 'apps add');
    fields.clientSecret = await promptSecret(rt, `${info.displayName} client secret`);
  } else if (fields.clientSecret === undefined && rt.interactive) {
    // A Microsoft web app has a secret; a public (desktop) client has none: asked for, Enter skips.
    fields.clientSecret = await promptSecret(
      rt,
      `${info.displayName} client secret (Enter for a public client)`,
      {
        optional: true,
      },
    );
  }
  if (fields.developerToken === undefined && info.capabilities.developer_token !== 'none') {
    const required = info.capabilities.developer_token === 'required';
    if (rt.interactive) {
      fields.developerToken = await promptSecret(
        rt,
        `${info.displayName} developer token${required ? '' : ' (optional, Enter to skip)'}`,
        { optional: !required },
      );
    } else if (required) {
      throw noSecretInput('developer token', 'apps add');
    }
  }
  const app = await withContext(rt, (ctx) => addApp(ctx, platform, fields));
  printApp(rt, app);
  rt.out.success(`added ${app.platform}/${app.label}`);
  warnRetiredVersion(rt, app);
  if (platform === 'reddit_ads' && !fields.userAgent) {
    // Reddit's API rules ask for <platform>:<app id>:<version> (by /u/<reddit username>); the name
    // is not something credvault can know. (Loaded only here: the module brings the OAuth client.)
    const { redditUserAgent } = await import('../../providers/platforms/reddit-ads.js');
    rt.out.warn(
      `Reddit asks every API client for a User-Agent that names the Reddit account behind it; until one is set, credvault sends ${redditUserAgent({ userAgent: app.userAgent, clientId: app.clientId })}. Set it with \`credvault apps update ${app.label} --user-agent 'web:${app.label}:v1 (by /u/YOUR_REDDIT_NAME)'\`.`,
    );
  }
}

interface UpdateFlags extends AppFlags {
  newClientSecret?: boolean;
  newDeveloperToken?: boolean;
  clearDeveloperToken?: boolean;
  force?: boolean;
}

async function newSecret(rt: Runtime, what: string): Promise<Secret> {
  if (rt.interactive) return (await promptSecret(rt, `new ${what}`))!;
  if (rt.io.stdin.isTTY) throw noSecretInput(what, 'apps update');
  return readSecretLine(rt, what);
}

export async function update(rt: Runtime, ref: string, flags: UpdateFlags): Promise<void> {
  if (flags.newClientSecret && flags.newDeveloperToken && !rt.interactive) {
    throw new InvalidInputError('standard input can carry one new secret at a time', {
      hint: 'Run in a terminal, or use --from-file with client_secret and developer_token.',
    });
  }
  if (flags.newDeveloperToken && flags.clearDeveloperToken) {
    throw new InvalidInputError('--new-developer-token and --clear-developer-token contradict each other');
  }
  const fields: AppFields = parseAppFields(await gatherFields(rt, flags, 'update'));
  if (flags.newClientSecret) fields.clientSecret = await newSecret(rt, 'client secret');
  if (flags.newDeveloperToken) fields.developerToken = await newSecret(rt, 'developer token');
  if (flags.clearDeveloperToken) fields.developerToken = null;
  const app = await withContext(rt, (ctx) => updateApp(ctx, ref, fields, { force: flags.force === true }));
  printApp(rt, app);
  rt.out.success(`updated ${app.platform}/${app.label}`);
  warnRetiredVersion(rt, app);
}

/**
 * An API version its platform no longer serves, said as it is set rather than by the platform's
 * refusal at the next campaign command or connect (doctor says it too). A warning, not a refusal: a
 * sandbox or a platform's extension may still serve it.
 */
function warnRetiredVersion(rt: Runtime, app: AppRecord): void {
  const now = new Date();
  const risk = versionAtRisk(app, now);
  if (!risk || risk.days > 0) return;
  rt.out.warn(`${describeAtRisk(risk)}. ${fixForAtRisk([risk], now)}`);
}

export const APP_COLUMNS: Column<AppRecord>[] = [
  { header: 'ID', value: (a) => a.id },
  { header: 'PLATFORM', value: (a) => a.platform },
  { header: 'LABEL', value: (a) => a.label },
  { header: 'CLIENT ID', value: (a) => a.clientId },
  { header: 'REDIRECT URI', value: (a) => a.redirectUri },
  {
    header: 'STATE',
    value: (a) => (a.enabled ? 'enabled' : 'disabled'),
    style: (a, text, c) => (a.enabled ? text : c.yellow(text)),
  },
];

export async function list(rt: Runtime, opts: { platform?: string }): Promise<void> {
  const platform = filterValue(opts.platform, '--platform', parsePlatform);
  const apps = await withContext(rt, (ctx) => listApps(ctx, platform));
  rt.out.list(
    apps,
    appJson,
    APP_COLUMNS,
    platform
      ? `no ${platform} apps: add one with \`credvault apps add ${platform} --label L\``
      : 'no apps yet: add one with `credvault apps add PLATFORM --label L`',
  );
}

function printApp(rt: Runtime, app: AppRecord): void {
  const json = appJson(app);
  rt.out.item(
    json,
    Object.entries(json).map(([key, value]) => [key.replace(/_/g, ' '), value] as [string, unknown]),
  );
}

export async function show(rt: Runtime, ref: string): Promise<void> {
  printApp(rt, await withContext(rt, (ctx) => showApp(ctx, ref)));
}

export async function setEnabled(rt: Runtime, ref: string, enabled: boolean): Promise<void> {
  const app = await withContext(rt, (ctx) => setAppEnabled(ctx, ref, enabled));
  if (rt.out.json) return rt.out.writeJson(appJson(app));
  rt.out.success(`${enabled ? 'enabled' : 'disabled'} ${app.platform}/${app.label}`);
}

export async function remove(rt: Runtime, ref: string, force: boolean): Promise<void> {
  const { app, revocations, warnings } = await withContext(rt, (ctx) => removeApp(ctx, ref, force));
  for (const warning of warnings) rt.out.warn(warning);
  // What the platforms were not told, as `connections revoke` says it: the consent is still there.
  for (const r of revocations) {
    if (r.platform === 'revoked' || r.platform === 'already') continue;
    rt.out.warn(
      `${r.connections.map(connectionRef).join(', ')}: ${r.message}. Remove the app's access at ${r.consent_page}`,
    );
  }
  if (rt.out.json) {
    return rt.out.writeJson({
      removed: appJson(app),
      revocations: revocations.map((r) => ({
        connections: r.connections.map((c) => c.id),
        platform: r.platform,
        message: r.message,
        consent_page: r.consent_page,
      })),
    });
  }
  rt.out.success(`removed ${app.platform}/${app.label}`);
}
