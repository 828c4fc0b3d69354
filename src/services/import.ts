import { parse as parseDotenv } from 'dotenv';
import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Pair,
  parseAllDocuments,
  parseDocument,
  visit,
} from 'yaml';
import { Secret } from '../crypto/secret.js';
import { type Db, databaseWhere } from '../db/client.js';
import { asReported } from '../db/errors.js';
import type { AppRecord } from '../db/store/apps.js';
import * as appStore from '../db/store/apps.js';
import * as connectionStore from '../db/store/connections.js';
import * as tokenStore from '../db/store/tokens.js';
import {
  ConflictError,
  CredvaultError,
  type ErrorCode,
  InvalidInputError,
  quoted,
  UnavailableError,
} from '../errors.js';
import { PLATFORMS, type PlatformId } from '../providers/catalog.js';
import { ProviderError } from '../providers/errors.js';
import { providerFor } from '../providers/registry.js';
import type { AdAccount, ProviderApp, TokenResult } from '../providers/types.js';
import { connectionRef } from '../views.js';
import { type AppFields, addApp, headerValueProblem, parseAppFields, secretSlot, updateApp } from './apps.js';
import { recordAudit } from './audit.js';
import { accountIdProblem, normalizeAccountId } from './connections.js';
import type { ServiceContext } from './context.js';
import { GOOGLE_ADS_DEVELOPER_TOKEN_PLACEHOLDER } from './export.js';
import { type DestroyedGrant, openToken, settleDestroyed, storeGrant, tokenSha256 } from './grants.js';
import {
  type AdoptionClaim,
  claimAdoption,
  type DeadGrantRefresh,
  findHeldGrants,
  grantOf,
  type HeldGrant,
  joinGrantIn,
  refreshDeadGrant,
  refreshHeldGrant,
  replaceDeadGrant,
  tokensWrittenOn,
} from './held-grants.js';
import { providerFailure } from './platform-calls.js';
import { providerApp } from './provider-app.js';
import { getValidAccessToken, leaseMs, longestRefreshMs } from './tokens.js';

/**
 * Importing credentials from where ad-ops code kept them: `.env` files (the variable names the
 * platforms' client libraries and common integrations use) and google-ads.yaml. One transaction for
 * everything it changes (a refresh it makes before, to join or replace a grant, is written at once, as
 * every refresh is); running it again changes nothing; --dry-run plans without writing.
 */

export interface PlatformCredentials {
  clientId?: string;
  clientSecret?: Secret;
  developerToken?: Secret;
  refreshToken?: Secret;
  accessToken?: Secret;
  accountIds: string[];
  loginCustomerId?: string;
  customerId?: string;
  userAgent?: string;
  redirectUri?: string;
  /** Where each value came from (the names the file uses: variables, or google-ads.yaml keys), for messages. */
  sources: Record<string, string>;
  /** How the file names a setting: `GOOGLE_ADS_` + suffix in a .env, the lower-case key in YAML. */
  prefix: string;
  yaml?: boolean;
}

/** The name the user's file gives a setting, for messages that tell them what to add. */
function settingName(creds: PlatformCredentials, suffix: string): string {
  return creds.yaml ? suffix.toLowerCase() : `${creds.prefix}${suffix}`;
}

type Field =
  | 'clientId'
  | 'clientSecret'
  | 'developerToken'
  | 'refreshToken'
  | 'accessToken'
  | 'accounts'
  | 'loginCustomerId'
  | 'customerId'
  | 'userAgent'
  | 'redirectUri';

/** Prefixes per platform, longest first, and the suffixes each recognises. */
const RECOGNISED: Array<{
  platform: PlatformId;
  prefixes: string[];
  fields: Record<string, Field>;
  ignored?: string[];
  unsupported?: string[];
}> = [
  {
    platform: 'google_ads',
    prefixes: ['GOOGLE_ADS_'],
    fields: {
      CLIENT_ID: 'clientId',
      CLIENT_SECRET: 'clientSecret',
      DEVELOPER_TOKEN: 'developerToken',
      REFRESH_TOKEN: 'refreshToken',
      LOGIN_CUSTOMER_ID: 'loginCustomerId',
      CUSTOMER_ID: 'accounts',
      REDIRECT_URI: 'redirectUri',
    },
    // The official client library's own settings: known, and not credentials.
    ignored: [
      'USE_PROTO_PLUS',
      'ENDPOINT',
      'LOGGING',
      'LINKED_CUSTOMER_ID',
      'HTTP_PROXY',
      'USE_CLOUD_ORG_FOR_API_ACCESS',
      'USE_APPLICATION_DEFAULT_CREDENTIALS',
      'ADS_ASSISTANT',
      'CONFIGURATION_FILE_PATH',
    ],
    // Service-account authentication: known, and not something credvault keeps (it holds OAuth grants).
    unsupported: [
      'JSON_KEY_FILE_PATH',
      'IMPERSONATED_EMAIL',
      'PATH_TO_PRIVATE_KEY_FILE',
      'DELEGATED_ACCOUNT',
    ],
  },
  {
    platform: 'microsoft_ads',
    prefixes: ['MICROSOFT_ADS_', 'BING_ADS_'],
    fields: {
      CLIENT_ID: 'clientId',
      CLIENT_SECRET: 'clientSecret',
      DEVELOPER_TOKEN: 'developerToken',
      REFRESH_TOKEN: 'refreshToken',
      CUSTOMER_ID: 'customerId',
      ACCOUNT_ID: 'accounts',
      REDIRECT_URI: 'redirectUri',
    },
  },
  {
    platform: 'linkedin_ads',
    prefixes: ['LINKEDIN_ADS_', 'LINKEDIN_'],
    fields: {
      CLIENT_ID: 'clientId',
      CLIENT_SECRET: 'clientSecret',
      ACCESS_TOKEN: 'accessToken',
      REFRESH_TOKEN: 'refreshToken',
      AD_ACCOUNT_ID: 'accounts',
      REDIRECT_URI: 'redirectUri',
    },
  },
  {
    platform: 'reddit_ads',
    prefixes: ['REDDIT_ADS_', 'REDDIT_'],
    fields: {
      CLIENT_ID: 'clientId',
      CLIENT_SECRET: 'clientSecret',
      REFRESH_TOKEN: 'refreshToken',
      AD_ACCOUNT_ID: 'accounts',
      USER_AGENT: 'userAgent',
      REDIRECT_URI: 'redirectUri',
    },
  },
];

const SECRET_FIELDS = new Set<Field>(['clientSecret', 'developerToken', 'refreshToken', 'accessToken']);

// dotenv's own line grammar (lib/main.js), used here only to find what it would silently skip.
const DOTENV_LINE =
  /(?:^|^)\s*(?:export\s+)?([\w.-]+)(?:\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*"(?:\\"|[^"])*"|\s*`(?:\\`|[^`])*`|[^#\r\n]+)?\s*(?:#.*)?(?:$|$)/dgm;

function isKnownVariable(name: string): boolean {
  return RECOGNISED.some(({ prefixes, fields, ignored = [], unsupported = [] }) =>
    prefixes.some((prefix) => {
      if (!name.startsWith(prefix)) return false;
      const rest = name.slice(prefix.length);
      return rest in fields || ignored.includes(rest) || unsupported.includes(rest);
    }),
  );
}

/** What credvault takes the variable's value as; undefined for a known setting it ignores, like a path. */
function fieldOf(name: string): Field | undefined {
  for (const { prefixes, fields } of RECOGNISED)
    for (const prefix of prefixes)
      if (name.startsWith(prefix) && Object.hasOwn(fields, name.slice(prefix.length)))
        return fields[name.slice(prefix.length)];
  return undefined;
}

/** Whether credvault takes the variable's value (not only a known setting it ignores, like a path). */
function isReadVariable(name: string): boolean {
  return fieldOf(name) !== undefined;
}

/** The line of `index`, a line ending as dotenv and YAML end one: \n, \r\n, or a \r alone (old Mac files). */
function lineOf(text: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index; i++) {
    const c = text.charCodeAt(i);
    if (c === 10 || (c === 13 && text.charCodeAt(i + 1) !== 10)) line += 1;
  }
  return line;
}

/**
 * Parses a .env file with dotenv, but refuses what dotenv would take without a word, where a guess
 * could store the wrong credential: a line that is neither blank, a comment nor an assignment (dotenv
 * skips it), a name set twice (dotenv keeps the last), a quote that is opened and not closed (dotenv
 * keeps the quote in the value), and in what credvault reads, a `#` inside an unquoted value (dotenv
 * cuts the value there, a shell keeps it), a `$NAME`, `${NAME}`, `$(…)` or `$1`, `$$`… outside single
 * quotes (a shell expands it, dotenv stores it as written), and a space or a quote a shell reads as its
 * own syntax (`ab cd`, `ab'cd`, `"ab" "cd"`; dotenv keeps them). Each is reported with its line number, never
 * with the value, and nothing is imported.
 */
export function parseEnvText(file: string, source: string): FileVars {
  // Line endings as dotenv reads them (a \r alone ends a line too): the lines counted here are its.
  const text = file.replace(/\r\n?/g, '\n');
  checkEncoding(text, source);
  const refuse = (
    line: number,
    what: string,
    hint = 'Fix or remove that line; nothing was imported.',
  ): never => {
    throw new InvalidInputError(`${source} line ${line} ${what}`, { hint });
  };
  const strayIn = (from: number, to: number) => {
    const lines = text.slice(from, to).split('\n');
    const stray = lines.findIndex((line) => line.trim() !== '' && !line.trim().startsWith('#'));
    if (stray === -1) return;
    // Only a variable credvault knows that it starts with: the rest of a broken line, or a line that
    // is a value alone (a secret pasted or wrapped onto a line of its own), may well be a secret.
    const word = /^(?:export\s+)?(\w+)(?=[\s:])/.exec(lines[stray]!.trim())?.[1];
    const name = word && isKnownVariable(word) ? word : null;
    refuse(
      lineOf(text, from) + stray,
      `is not an assignment (NAME=value)${name ? `: it starts ${quoted(name)}` : ''}`,
    );
  };
  const seen = new Map<string, number>();
  let cursor = 0;
  // Line numbers counted as the matches go (counting from the start each time was quadratic).
  let counted = 0;
  let line = 1;
  const lineAt = (index: number) => {
    for (; counted < index; counted++) if (text.charCodeAt(counted) === 10) line += 1;
    return line;
  };
  for (const match of text.matchAll(DOTENV_LINE)) {
    strayIn(cursor, match.index);
    const at = lineAt(match.index + Math.max(0, match[0].search(/\S/)));
    const name = match[1]!;
    const first = seen.get(name);
    // Only for what credvault reads: which of two DEBUG= lines wins is not its business.
    if (first !== undefined && isKnownVariable(name)) {
      refuse(
        at,
        `sets ${name} again (first on line ${first}): credvault does not guess which one is meant`,
        'Keep one of them (one .env file per environment or account); nothing was imported.',
      );
    }
    seen.set(name, at);
    const value = (match[2] ?? '').trim();
    if (/^['"`]/.test(value) && (value.length < 2 || !value.endsWith(value[0]!))) {
      refuse(at, `opens a quote in the value of ${name} and does not close it`);
    }
    if (isKnownVariable(name)) refuseGuess(at, name, match, text, source, refuse);
    cursor = match.index + match[0].length;
  }
  strayIn(cursor, text.length);
  return withWhere(new Map(Object.entries(parseDotenv(text))), (name) => ({ source, line: seen.get(name) }));
}

/**
 * The file must be UTF-8 text: read as UTF-8, a UTF-16 file (a Windows editor's "Unicode") is a
 * line of noise, and a byte that is not UTF-8 (Latin-1, say) becomes U+FFFD in the value, a
 * credential changed without a word.
 */
function checkEncoding(text: string, source: string): void {
  const hint =
    'Save the file as UTF-8 (most editors offer it under "Save as" or "Encoding"); nothing was imported.';
  // FF FE or FE FF read as UTF-8 is two replacement characters; without them, a NUL every other byte.
  if (/^\uFFFD\uFFFD/.test(text) || /^(?:[^\0]\0){2}|^(?:\0[^\0]){2}/.test(text)) {
    throw new InvalidInputError(`${source} is UTF-16 text, not UTF-8`, { hint });
  }
  const bad = text.indexOf('\uFFFD');
  if (bad !== -1) {
    throw new InvalidInputError(
      `${source} line ${lineOf(text, bad)} is not UTF-8 text (a byte that is not UTF-8, or the character U+FFFD that stands for one)`,
      { hint },
    );
  }
}

/**
 * Where dotenv and a shell read a credential differently: an unquoted value with a `#` that is not
 * after a space (`dev#tok`: dotenv keeps `dev`, a shell `dev#tok`), a variable or command outside
 * single quotes (`${DEV_TOKEN}`, `$1`: a shell expands it, dotenv stores those characters), a space or
 * a quote inside an unquoted value, quotes inside a quoted one, and what valueProblem refuses in the
 * value as written (dotenv trims a no-break space around it, a shell keeps it).
 */
function refuseGuess(
  at: number,
  name: string,
  match: RegExpExecArray | RegExpMatchArray,
  text: string,
  source: string,
  refuse: (line: number, what: string, hint?: string) => never,
): void {
  const raw = match[2] ?? '';
  const quote = /^\s*(['"`])/.exec(raw)?.[1];
  // A setting credvault does not take may hold a backslash (a Windows path): only a command is refused.
  const read = isReadVariable(name);
  // The value as written (but for the spaces and tabs around it, which both drop): dotenv trims every
  // kind of space around it (a no-break space too) and a shell does not, so the checks of what a
  // value may hold are made here as well as on what dotenv gives.
  const written = raw.replace(/^[ \t]+|[ \t]+$/g, '');
  const problem = read ? valueProblem(written) : undefined;
  if (problem) {
    throw new InvalidInputError(`${source} line ${at}: ${name} ${problem}`, { hint: VALUE_HINT });
  }
  // Where the value ends: after it, dotenv reads only spaces and a comment.
  const nameEnd = match.indices![1]![1];
  const end = match.indices![2]?.[1] ?? nameEnd + /^\s*[=:]/.exec(text.slice(nameEnd))![0].length;
  if (!quote && text[end] === '#' && !/\s$/.test(raw)) {
    refuse(
      at,
      `has a "#" in the value of ${name} that dotenv takes for a comment: it would keep only what comes before it (a shell keeps the whole value)`,
      'Quote the value (\'…\' or "…") if the # belongs to it, or put a space before the comment; nothing was imported.',
    );
  }
  if (quote !== "'" && raw.includes('`')) {
    refuse(
      at,
      `refers to a command in the value of ${name} (\`…\`): dotenv stores those characters as they are, not what a shell would put there`,
      'Write the value itself, or single-quote it if the ` belongs to the value; nothing was imported.',
    );
  }
  if (read && quote !== "'" && raw.includes('\\')) {
    refuse(
      at,
      `has a backslash in the value of ${name}, which dotenv and a shell read differently (in "…" dotenv keeps \\" as it is and makes \\n a line break; a shell drops the backslash)`,
      "Single-quote the value ('…') if the backslash belongs to it (both read it as written then), or remove it; nothing was imported.",
    );
  }
  // $NAME, ${…}, $(…), and the shell's own: $1, $0, $$, $?, $@, $*, $!, $#, $-.
  if (quote !== "'" && /\$[{(\w$?@*!#-]/.test(raw)) {
    refuse(
      at,
      `refers to another variable or a command in the value of ${name} ($…): dotenv stores those characters as they are, not what a shell would put there`,
      'Write the value itself (expand the file first, e.g. with envsubst), or single-quote it if the $ belongs to the value; nothing was imported.',
    );
  }
  // What a shell reads as its own syntax, not as the value's characters (dotenv keeps them). Not in a
  // user agent, free text that .env files commonly leave unquoted (`web:app:v1 (by /u/me)`) and that
  // names no identity: a file a shell never sources keeps working.
  const freeText = fieldOf(name) === 'userAgent';
  if (read && !freeText && !quote && /\s/.test(written)) {
    refuse(
      at,
      `has a space in the unquoted value of ${name}: a shell ends the value there (and runs the rest as a command), dotenv keeps the whole line`,
      'Quote the value (\'…\' or "…") if the space belongs to it, or remove the space; nothing was imported.',
    );
  }
  if (read && !freeText && !quote && /['"]/.test(written)) {
    refuse(
      at,
      `has a quote inside the unquoted value of ${name}, which a shell reads as quoting (ab'cd is a quote it never sees closed) and dotenv keeps as a character`,
      'Quote the whole value (\'…\' or "…") and leave no quote inside it, or remove the quote; nothing was imported.',
    );
  }
  // `; & | ( ) < >` end a shell's assignment (`ab;cd` sets ab and runs cd; `ab(cd)` is a syntax
  // error); dotenv keeps them as characters. Not in an id: no platform's id has one, and the id's own
  // check says better what is wrong (Microsoft account numbers listed as `F149ABCD;X7654321`).
  const id = ['accounts', 'customerId', 'loginCustomerId'].includes(fieldOf(name) ?? '');
  if (read && !freeText && !id && !quote && /[;&|()<>]/.test(written)) {
    refuse(
      at,
      `has a character a shell reads as its own (; & | ( ) < >) in the unquoted value of ${name}: a shell ends the value there (and runs the rest as a command, or fails), dotenv keeps the whole line`,
      'Quote the value (\'…\' or "…") if the character belongs to it; nothing was imported.',
    );
  }
  // `"ab"#cd`: dotenv takes the # for a comment and keeps ab, a shell reads on and keeps ab#cd.
  if (read && quote && end < text.length && !/\s/.test(text[end]!)) {
    refuse(
      at,
      `has text right after the closing quote of the value of ${name}, which dotenv drops (it reads a comment there) and a shell joins to the value`,
      'Put everything that belongs to the value inside the quotes, and a space before a comment; nothing was imported.',
    );
  }
  if (read && quote && written.slice(1, -1).includes(quote)) {
    refuse(
      at,
      `has quotes inside the quoted value of ${name} ("ab" "cd"): dotenv keeps the inner ones as characters, a shell reads them as quoting`,
      'Quote the whole value once (\'…\' or "…") with no quote of the same kind inside it; nothing was imported.',
    );
  }
}

export interface Recognised {
  platforms: Map<PlatformId, PlatformCredentials>;
  /** Variables credvault does not know: listed, never guessed at. */
  unknown: string[];
  /** Variables it knows and does not need (the Google Ads library's own settings). */
  ignored: string[];
  /** Variables it knows and cannot use (Google service-account authentication). */
  unsupported: string[];
}

/** Where a file sets a variable (named as the file names it): for messages that never quote values. */
export type Where = (shown: string) => { source: string; line?: number };

/** A file's variables, with where each is set. */
export type FileVars = Map<string, string> & { where?: Where };

function withWhere(vars: Map<string, string>, where: Where): FileVars {
  return Object.assign(vars, { where });
}

/**
 * What is wrong with a credential's value, in words that do not repeat it: a control character (a
 * line break, a tab, a NUL) or an invisible format character (a zero-width space, a byte-order mark
 * inside the text) is in no client id, secret, token or id, and stored it would fail at the platform
 * with nothing to see.
 */
function valueProblem(value: string): string | undefined {
  if (/[\r\n]/.test(value)) return 'holds a line break';
  if (/[\p{Zl}\p{Zp}]/u.test(value)) return 'holds a line break (a Unicode line or paragraph separator)';
  if (/\p{Cc}/u.test(value)) return 'holds a control character';
  if (/\p{Cf}/u.test(value)) {
    return 'holds an invisible character (a zero-width space, a byte-order mark or another format character)';
  }
  if (/(?! )\p{Zs}/u.test(value)) {
    return 'holds a space that is not a plain space (a no-break space, an ideographic space or another)';
  }
  return undefined;
}

/** What to do about a value valueProblem refuses. */
const VALUE_HINT =
  'Write the value on one line, with nothing but its own characters (copy it again from where it was issued); nothing was imported.';

/** `shown` names a variable as the user's file does (google-ads.yaml's keys are lower-case). */
export function recognise(vars: FileVars, shown = (name: string) => name): Recognised {
  const platforms = new Map<PlatformId, PlatformCredentials>();
  const unknown: string[] = [];
  const ignored: string[] = [];
  const unsupported: string[] = [];
  const where: Where = vars.where ?? (() => ({ source: '' }));
  // "FILE line N: " before a message about a variable (where it is known).
  const at = (name: string) => {
    const { source, line } = where(name);
    return source ? `${source}${line ? ` line ${line}` : ''}: ` : '';
  };
  const lineOfVar = (name: string) => {
    const { line } = where(name);
    return line ? ` (line ${line})` : '';
  };
  const refuse = (name: string, problem: string, hint: string): never => {
    throw new InvalidInputError(`${at(name)}${name} ${problem}`, { hint: `${hint}; nothing was imported.` });
  };
  for (const [name, raw] of vars) {
    const value = raw.trim();
    const rule = RECOGNISED.find((r) => r.prefixes.some((p) => name.startsWith(p)));
    const prefix = rule?.prefixes.find((p) => name.startsWith(p));
    const suffix = prefix ? name.slice(prefix.length) : '';
    // Own keys only: GOOGLE_ADS_toString names no setting (it named Object's method).
    const field = rule && Object.hasOwn(rule.fields, suffix) ? rule.fields[suffix] : undefined;
    if (!rule || !field) {
      if (rule?.ignored?.includes(suffix)) ignored.push(name);
      else if (rule?.unsupported?.includes(suffix)) unsupported.push(name);
      else unknown.push(name);
      continue;
    }
    // The value as the file gives it (quoted, a trailing line break is part of it).
    const problem = valueProblem(raw);
    if (problem) {
      refuse(shown(name), problem, VALUE_HINT.replace(/; nothing was imported\.$/, ''));
    }
    if (value === '') continue;
    // Spaces around a value are there only inside quotes (dotenv drops those around an unquoted
    // value, YAML those around a plain one), where dotenv, a shell and YAML all keep them: no
    // credential, id or user agent has them, and dropping them would be a guess.
    if (value !== raw) {
      refuse(
        shown(name),
        'has spaces at the start or end of its quoted value, which are kept as part of it (by dotenv, a shell and YAML alike)',
        'Remove the spaces inside the quotes',
      );
    }
    // Sent in a header at every platform call: refused here by the file's name, not at each refresh.
    const headerProblem =
      field === 'userAgent' || field === 'developerToken' ? headerValueProblem(value) : undefined;
    if (headerProblem) refuse(shown(name), headerProblem, 'Write it with printable ASCII characters only');
    // What `token get` exports for a Google app without a developer token: no token.
    if (field === 'developerToken' && value === GOOGLE_ADS_DEVELOPER_TOKEN_PLACEHOLDER) {
      ignored.push(name);
      continue;
    }
    const creds = platforms.get(rule.platform) ?? { accountIds: [], sources: {}, prefix: prefix! };
    const previous = creds.sources[field];
    if (previous && previous !== shown(name)) {
      const same = field === 'accounts' ? true : readValue(creds, field) === value;
      if (!same) {
        const { source } = where(previous);
        throw new InvalidInputError(
          `${source ? `${source}: ` : ''}${previous}${lineOfVar(previous)} and ${shown(name)}${lineOfVar(shown(name))} disagree; nothing was imported`,
          { hint: 'Keep one of them.' },
        );
      }
    }
    creds.sources[field] = shown(name);
    const checkId = (id: string, kind: 'account' | 'customer') => {
      const normalized = normalizeAccountId(rule.platform, id);
      const wrong = accountIdProblem(rule.platform, normalized, kind);
      if (wrong) refuse(shown(name), wrong, 'Fix the value');
      return normalized;
    };
    if (field === 'accounts') {
      for (const id of value.split(/[\s,]+/).filter(Boolean)) {
        const normalized = checkId(id, 'account');
        if (!creds.accountIds.includes(normalized)) creds.accountIds.push(normalized);
      }
    } else if (SECRET_FIELDS.has(field)) {
      (creds as unknown as Record<string, Secret>)[field] = new Secret(value);
    } else {
      if (field === 'loginCustomerId' || field === 'customerId') checkId(value, 'customer');
      (creds as unknown as Record<string, string>)[field] = value;
    }
    platforms.set(rule.platform, creds);
  }
  return { platforms, unknown: unknown.sort(), ignored: ignored.sort(), unsupported: unsupported.sort() };
}

function readValue(creds: PlatformCredentials, field: Field): string | undefined {
  const value = (creds as unknown as Record<string, unknown>)[field];
  return value instanceof Secret ? value.reveal() : (value as string | undefined);
}

const YAML_KEYS: Record<string, string> = {
  client_id: 'GOOGLE_ADS_CLIENT_ID',
  client_secret: 'GOOGLE_ADS_CLIENT_SECRET',
  developer_token: 'GOOGLE_ADS_DEVELOPER_TOKEN',
  refresh_token: 'GOOGLE_ADS_REFRESH_TOKEN',
  login_customer_id: 'GOOGLE_ADS_LOGIN_CUSTOMER_ID',
  // Not one of the client's keys, but a natural place to name the accounts to connect.
  customer_id: 'GOOGLE_ADS_CUSTOMER_ID',
};

/** What a YAML error code means, for messages that name the kind of problem and never the text. */
function yamlProblem(code: string): string {
  const kinds: Record<string, string> = {
    BAD_ALIAS: 'an alias (*name) that cannot be resolved',
    DUPLICATE_KEY: 'a key set twice',
    TAG_RESOLVE_FAILED: 'an unknown tag (!name)',
    MULTIPLE_DOCS: 'more than one document',
    TAB_AS_INDENT: 'a tab used as indentation',
    BAD_INDENT: 'bad indentation',
  };
  return kinds[code] ?? code.toLowerCase().replaceAll('_', ' ');
}

/** The keys whose values are ids: a bare number is their natural form in many a google-ads.yaml. */
const ID_KEYS = new Set(['login_customer_id', 'customer_id']);

/**
 * The credentials' values are text, and YAML reads an unquoted value that looks like a number or a
 * boolean as one, which may change it (0123 is 123, 0x1F is 31, 1.0 is 1; true is no token): such a
 * value is refused, naming its key (never the value, which may be a secret), rather than imported
 * changed. An id written as plain digits (login_customer_id: 1234567890) reads back exactly, whole
 * numbers being kept as big integers, and is taken.
 */
function checkTextValues(document: Document, lineCounter: LineCounter, source: string): void {
  for (const [key, pair] of topLevelPairs(document)) {
    if (!Object.hasOwn(YAML_KEYS, key)) continue;
    const values = isSeq(pair.value) ? pair.value.items : [pair.value];
    for (const item of values) {
      const node = isAlias(item) ? item.resolve(document) : item;
      if (!isScalar(node)) continue;
      const value = node.value;
      if (value === null || value === undefined || typeof value === 'string') continue;
      const id = ID_KEYS.has(key);
      if (id && typeof value === 'bigint' && node.source === value.toString()) continue;
      const at = node.range ? ` line ${lineCounter.linePos(node.range[0]).line}` : '';
      throw new InvalidInputError(
        typeof value === 'boolean'
          ? `${source}${at}: ${key} is a boolean to YAML (true or false), not text`
          : id
            ? `${source}${at}: ${key} is a number to YAML that does not read back as it is written (a leading zero, a sign, a decimal point, 0x…)`
            : `${source}${at}: ${key} is a number to YAML, not text, and may not read back as it is written (0123 reads as 123, 0x1F as 31, 1.0 as 1)`,
        {
          hint: `Quote the value (${key}: "…") so that it is read as written${id ? ', or write the id as its digits alone' : ''}; nothing was imported.`,
        },
      );
    }
  }
}

/** A YAML merge key (`<<: *defaults`), as the library reads it with merges on. */
function isMergeKey(node: unknown): boolean {
  return isScalar(node) && typeof node.value === 'symbol' && node.value.description === '<<';
}

/**
 * The top-level keys and their pairs as the data has them, merges resolved as PyYAML's safe_load (what
 * the official client reads the file with) resolves them: a key of the mapping itself first, then
 * those of the mappings it merges (`<<: *defaults`, or a list of them, the first one winning), so
 * that a merged value is checked and named by the line that sets it.
 */
function topLevelPairs(document: Document): Map<string, Pair> {
  const pairs = new Map<string, Pair>();
  const add = (node: unknown, depth: number) => {
    const map = isAlias(node) ? node.resolve(document) : node;
    if (!isMap(map) || depth > 8) return;
    const merged: unknown[] = [];
    for (const pair of map.items) {
      if (isMergeKey(pair.key)) {
        merged.push(...(isSeq(pair.value) ? pair.value.items : [pair.value]));
        continue;
      }
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      if (typeof key === 'string' && !pairs.has(key)) pairs.set(key, pair as Pair);
    }
    for (const source of merged) add(source, depth + 1);
  };
  add(document.contents, 0);
  return pairs;
}

/**
 * The YAML library's messages quote the line they are about, which in a google-ads.yaml may hold a
 * secret (`client_secret: *GOCSPX-…` is an alias to the library): only the position and the kind of
 * problem are reported, a warning (an unknown tag) is an error, and nothing goes to stderr by itself.
 * A value that YAML reads as an alias or an anchor is refused as well.
 */
function readYaml(text: string, source: string): { data: unknown; lines: Map<string, number> } {
  const lineCounter = new LineCounter();
  const invalid = (at: { line: number; col: number } | undefined, kind: string) =>
    new InvalidInputError(
      `${source}${at ? ` line ${at.line}` : ''} is not valid YAML (${at ? `column ${at.col}: ` : ''}${kind})`,
      { hint: 'Fix the file; nothing was imported.' },
    );
  const at = (node: { range?: [number, number, number] | null }) =>
    node.range ? lineCounter.linePos(node.range[0]) : undefined;
  // Whole numbers as they are written: a long all-digit value would otherwise lose its last digits.
  // Every document: parseDocument, silent, drops a second one (after ---) without a word.
  // Merge keys (`<<: *defaults`) resolved, as PyYAML's safe_load, which the official client uses, does.
  const options = { intAsBigInt: true, merge: true, logLevel: 'silent', lineCounter } as const;
  const all = parseAllDocuments(text, options);
  const document: Document = Array.isArray(all) && all[0] ? all[0] : parseDocument(text, options);
  const problem = document.errors[0] ?? document.warnings[0];
  if (problem) {
    // A quote left open is reported where the file ends: the line that opens it is the one to fix.
    let where = problem.linePos?.[0];
    let kind = yamlProblem(problem.code);
    if (problem.code === 'MISSING_CHAR' && /quote/i.test(problem.message)) {
      kind = 'a quote that is opened and not closed';
      visit(document, {
        Scalar(_, node) {
          if (node.type !== 'QUOTE_DOUBLE' && node.type !== 'QUOTE_SINGLE') return;
          if (!node.range || node.range[0] > problem.pos[0] || node.range[2] < problem.pos[0]) return;
          where = at(node);
          return visit.BREAK;
        },
      });
    }
    throw invalid(where, kind);
  }
  if (Array.isArray(all) && all.length > 1) throw invalid(at(all[1]!), yamlProblem('MULTIPLE_DOCS'));
  // What YAML accepts and a google-ads.yaml never means: a secret that starts with * (an alias to
  // nothing) or & (an anchor, leaving the key with no value) read as syntax.
  let odd: { at: { line: number; col: number } | undefined; kind: string } | undefined;
  visit(document, {
    Alias(_, node) {
      if (node.resolve(document) !== undefined) return;
      odd = { at: at(node), kind: yamlProblem('BAD_ALIAS') };
      return visit.BREAK;
    },
    Scalar(_, node) {
      if (!node.anchor || node.value !== null) return;
      odd = { at: at(node), kind: 'an anchor (&name) with no value' };
      return visit.BREAK;
    },
  });
  if (odd) throw invalid(odd.at, odd.kind);
  checkTextValues(document, lineCounter, source);
  // The line of each top-level key, for messages about its value.
  // (A merged key's is the line in the mapping it is merged from, where its value is written.)
  const lines = new Map<string, number>();
  for (const [key, pair] of topLevelPairs(document)) {
    const line = isScalar(pair.key) ? at(pair.key)?.line : undefined;
    if (line) lines.set(key, line);
  }
  try {
    return { data: document.toJS(), lines };
  } catch (error) {
    // `<<: 5`: the library says merge sources must be mappings.
    if (error instanceof Error && /merge/i.test(error.message)) {
      throw invalid(undefined, 'a merge key (<<) that does not name a mapping');
    }
    // An alias count that signals a resource exhaustion attack, say: the library's words, unread.
    throw invalid(undefined, 'it cannot be read as data');
  }
}

/**
 * Reads a google-ads.yaml as the official client does (the same keys as its GOOGLE_ADS_* variables,
 * lower-cased) and recognises it like the equivalent environment.
 */
export function parseGoogleAdsYaml(text: string, source: string): Recognised {
  checkEncoding(text, source);
  const { data: doc, lines } = readYaml(text, source);
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new InvalidInputError(
      `${source} is not a google-ads.yaml (expected keys such as client_id, refresh_token)`,
      {
        hint: 'Pass the file the Google Ads client library reads (by default ~/google-ads.yaml).',
      },
    );
  }
  const vars = new Map<string, string>();
  const unknownKeys: string[] = [];
  for (const [key, value] of Object.entries(doc)) {
    // Own keys only: a key named like an object's property (toString, constructor) is an unknown key.
    // Keys are case-sensitive, as the client library reads them: CLIENT_SECRET is not client_secret.
    const known = Object.hasOwn(YAML_KEYS, key);
    if (!known && key !== key.toLowerCase()) {
      unknownKeys.push(key);
      continue;
    }
    const name = known ? YAML_KEYS[key]! : `GOOGLE_ADS_${key.toUpperCase()}`;
    if (value === null || value === undefined) continue;
    // The client library's template, not filled in: as if the key were not there.
    if (typeof value === 'string' && /^INSERT_\w+_HERE$/.test(value)) continue;
    // Accounts to connect as a YAML list, the same as the comma-separated form.
    if (key === 'customer_id' && typeof value === 'object') {
      if (!Array.isArray(value) || value.some((v) => v === null || typeof v === 'object')) {
        throw new InvalidInputError(`${source}: customer_id is neither an account id nor a list of them`, {
          hint: 'Write `customer_id: 1234567890`, `customer_id: 123-456-7890, 234-567-8901` or a YAML list of ids; nothing was imported.',
        });
      }
      vars.set(name, value.map(String).join(','));
      continue;
    }
    if (typeof value === 'object') {
      // `logging` is a dictConfig mapping: a library setting, not a credential.
      if (key !== 'logging') unknownKeys.push(key);
      continue;
    }
    vars.set(name, String(value));
  }
  const back = (name: string) => name.slice('GOOGLE_ADS_'.length).toLowerCase();
  const found = recognise(
    withWhere(vars, (key) => ({ source, line: lines.get(key) })),
    back,
  );
  for (const creds of found.platforms.values()) creds.yaml = true;
  return {
    ...found,
    unknown: [...found.unknown.map(back), ...unknownKeys].sort(),
    ignored: found.ignored.map(back),
    unsupported: found.unsupported.map(back),
  };
}

export interface PlanItem {
  kind: 'app' | 'connection';
  platform: PlatformId;
  target: string;
  /** `join`: the account joins a grant of other accounts that holds the file's refresh token already. */
  action: 'create' | 'update' | 'unchanged' | 'skip' | 'join';
  detail: string;
}

/**
 * What an import must ask the platform before it writes, by platform (a file holds one refresh token
 * per platform): the grant of other accounts that holds the file's token already, refreshed once to
 * join it, or the consent of the dead grants holding it refreshed to replace them.
 */
type Need = (
  | { kind: 'join'; held: HeldGrant }
  | { kind: 'replace'; dead: HeldGrant[]; refreshToken: Secret }
) & {
  /** The app as the import's transaction makes it (the file's settings on it), and whether they change it. */
  app: AppRecord;
  changed: boolean;
  /** Where the file gives the app's client secret (its variable, or google-ads.yaml's key), for messages. */
  secretSource: string | undefined;
  /**
   * That app opened (secrets decrypted) in the first pass, where it is as the file makes it, before
   * that pass is rolled back: the platform calls use the file's client secret, not the stored one
   * (opened for a replace, and for a join where the file changes the app).
   */
  opened?: ProviderApp;
};

/** What was asked (the import's second pass writes with it). */
interface Prepared {
  /** Held grants refreshed, by id. */
  joined: Set<string>;
  /**
   * By platform, the dead grant whose consent was refreshed, the answer written on it: the second pass
   * moves it to the new grant of the file's accounts.
   */
  replaced: Map<PlatformId, DeadGrantRefresh & { holder: string }>;
}

/** The import's transaction, rolled back: a dry run's, or a first pass that found a platform call to make. */
class Rollback extends Error {}

const NOTHING = 'nothing was imported';

function changedMeanwhile(platform: PlatformId): ConflictError {
  return new ConflictError(
    `the ${PLATFORMS[platform].displayName} grants holding the file's refresh token changed while importing; ${NOTHING}`,
    { hint: 'Run the import again (read the plan with --dry-run first).' },
  );
}

export interface ImportResult {
  plan: PlanItem[];
  unknown: string[];
  ignored: string[];
  unsupported: string[];
  applied: boolean;
  /** Connection ids created or updated (none on a dry run: nothing was). */
  connections: string[];
  /** Every connection the file names, those it left unchanged too (for --verify). */
  named: string[];
  /** The grants of connections the import reconnected, destroyed (their tokens replaced by the file's). */
  destroyed: DestroyedGrant[];
  /** What could not be done after the import committed (see db/shred.ts). */
  warnings: string[];
}

const ENV_NAME = (creds: PlatformCredentials, field: Field, fallback: string) =>
  creds.sources[field] ?? fallback;

/**
 * Creates or updates the apps and connections that `found` describes, in one transaction. The plan
 * says what happened (or, with `dryRun`, what would: the transaction is rolled back).
 */
export async function importCredentials(
  ctx: ServiceContext,
  found: Recognised,
  options: { dryRun: boolean; source: string },
): Promise<ImportResult> {
  const plan: PlanItem[] = [];
  const platforms = new Map(found.platforms);
  const google = platforms.get('google_ads');
  if (found.unsupported.length && !google?.clientId) {
    // Google through a service account: the settings beside it (a developer token, a manager) go
    // with that account, not with an OAuth client. They are listed as not imported; the rest of the
    // file (another platform's OAuth grant) is, and only a file with nothing else is refused.
    platforms.delete('google_ads');
    const sa = `service-account authentication (${found.unsupported.join(', ')}), which credvault does not keep: it keeps OAuth grants`;
    if (!platforms.size) {
      throw new InvalidInputError(`${options.source} uses Google ${sa}`, {
        hint: 'Register an OAuth client with `credvault apps add google_ads` and run `credvault connect google_ads`; nothing was imported.',
      });
    }
    if (google) {
      plan.push({
        kind: 'app',
        platform: 'google_ads',
        target: '-',
        action: 'skip',
        detail: `${Object.values(google.sources).join(', ')} not imported: they go with Google ${sa} (add ${settingName(google, 'CLIENT_ID')} and the OAuth client's settings to import them)`,
      });
    }
  }
  if (!platforms.size) {
    throw new InvalidInputError(`${options.source} holds no ad platform credentials credvault recognises`, {
      hint: found.unknown.length ? `Unknown variables: ${found.unknown.join(', ')}.` : undefined,
    });
  }
  const touched: string[] = [];
  const named: string[] = [];
  /** Grants of reconnected accounts the import destroyed (the last pass's). */
  const destroyed: DestroyedGrant[] = [];
  const before = plan.length;
  const needs = new Map<PlatformId, Need>();
  const run = async (prepared: Prepared | null) =>
    ctx.transaction(async (tx) => {
      plan.length = before;
      touched.length = 0;
      named.length = 0;
      destroyed.length = 0;
      needs.clear();
      // The file's tokens' locks, then the grants holding them, before anything writes an audit row
      // (which locks the audit chain's head): the order `connections add` and every refresh take them
      // in. Taken later (after the app's update was audited), an import and a `connections add` of the
      // same token each waited for the other's, and PostgreSQL ended one of them.
      await lockFileTokens(tx, await fileTokens(tx, platforms));
      for (const [platform, creds] of platforms) {
        const imported = await importApp(ctx, tx, platform, creds, plan);
        await importConnections(ctx, tx, platform, imported, creds, plan, touched, named, {
          needs,
          prepared,
          destroyed,
        });
      }
      // A grant to join, or to replace, is asked about before anything is written: the plan (and
      // every refusal it may end in) comes first, and this pass is rolled back. The app a call uses
      // where the file changes it is opened here, where the file's settings are on it.
      if (options.dryRun) throw new Rollback();
      if (needs.size && !prepared) {
        for (const need of needs.values()) {
          if (need.kind === 'replace' || need.changed)
            need.opened = await providerApp(ctx, tx, need.app, { secrets: true });
        }
        throw new Rollback();
      }
      await recordAudit(tx, ctx.actor, {
        action: 'import',
        targetType: 'vault',
        outcome: 'success',
        detail: {
          source: options.source,
          plan: plan.map((p) => `${p.action} ${p.kind} ${p.platform} ${p.target}`),
          unknown: found.unknown,
        },
      });
    });
  const claims = new Map<PlatformId, AdoptionClaim>();
  try {
    if (!options.dryRun) {
      await claimFileTokens(ctx, platforms, claims);
      // The first claim may have waited for the next: each lasts a lease from now.
      await keepClaims(claims);
    }
    const rolledBack = await run(null).then(
      () => false,
      (error) => {
        if (!(error instanceof Rollback)) throw error;
        return true;
      },
    );
    if (rolledBack && !options.dryRun) {
      // The first pass, rolled back, read the stored app's secrets (to compare them with the file's,
      // and to open the app the platform calls use): that read is recorded now, in a transaction of
      // its own, whatever stops the import before its second pass commits.
      await recordPlanRead(ctx, plan, options.source);
      const prepared: Prepared = { joined: new Set(), replaced: new Map() };
      try {
        await prepare(ctx, needs, prepared, claims);
        // The second pass is one transaction, with no platform call: a lease covers it.
        await keepClaims(claims);
        await run(prepared);
      } catch (error) {
        throw withKept(ctx, error, prepared);
      }
    }
  } finally {
    // Held until the import's last transaction has committed (or failed): the grant it stored is what
    // another process given the file's token finds then. One not given back lapses on its own.
    for (const claim of claims.values()) await claim.release().catch(() => {});
  }
  // The plan compared stored secrets with the file's: that read is recorded, nothing else is.
  if (options.dryRun) await recordPlanRead(ctx, plan, options.source);
  // The old tokens of reconnected accounts: gone from the database's files too (not revoked at the
  // platform: see attachAccounts).
  const warnings = options.dryRun ? [] : await settleDestroyed(ctx, destroyed);
  return {
    plan,
    unknown: found.unknown,
    ignored: found.ignored,
    unsupported: found.unsupported,
    applied: !options.dryRun,
    // A dry run's ids are those of the rolled-back transaction: no such connection exists.
    connections: options.dryRun ? [] : touched,
    named: options.dryRun ? [] : named,
    destroyed: options.dryRun ? [] : destroyed,
    warnings,
  };
}

/** Records that an import's plan, made in a transaction rolled back, read the stored secrets. */
async function recordPlanRead(ctx: ServiceContext, plan: PlanItem[], source: string): Promise<void> {
  await ctx.transaction((tx) =>
    recordAudit(tx, ctx.actor, {
      action: 'import.plan',
      targetType: 'vault',
      outcome: 'success',
      detail: { source, plan: plan.map((p) => `${p.action} ${p.kind} ${p.platform} ${p.target}`) },
    }),
  );
}

/**
 * The platform calls an import makes before it writes, as `connections add` makes them, with the app
 * as the file makes it (a client secret the file changes is the one sent: the stored one may be the
 * secret the file's replaced at the platform). A grant of other accounts that holds the file's refresh
 * token is refreshed once under its lease (the file's token is not presented: where tokens rotate it
 * may be used up, and a reused one can end the whole grant); where only grants that need a person hold
 * it, their consent is refreshed (the file's token, or a newer one such a grant holds), so that only a
 * working one replaces them. Each answer is written at once onto the grant it refreshed, as every
 * refresh's is: a failure after it (the next call, the second pass) loses no token. Any failure ends
 * the import with nothing of its own written; `prepared` says what was refreshed by then.
 */
async function prepare(
  ctx: ServiceContext,
  needs: Map<PlatformId, Need>,
  prepared: Prepared,
  claims: Map<PlatformId, AdoptionClaim>,
): Promise<void> {
  for (const [platform, need] of needs) {
    // The claims last until this call is done: a join's refresh may first wait for another process's
    // refresh of that grant (longestRefreshMs), a replacement's is one request and its write.
    await keepClaims(
      claims,
      need.kind === 'join' ? longestRefreshMs(ctx.config.httpTimeoutMs) : leaseMs(ctx.config.httpTimeoutMs),
    );
    // The file's app, where it changes the stored one; else the stored one, as any refresh of the grant.
    const fileApp = need.changed ? need.opened : undefined;
    try {
      if (need.kind === 'join') {
        await refreshHeldGrant(ctx, need.held, 'import', NOTHING, { app: fileApp });
        prepared.joined.add(need.held.grant.id);
        continue;
      }
      // The grant whose consent is refreshed: one that kept a working answer of an earlier import of
      // this file (its last refresh was not refused) before the others.
      const dead = need.dead.find((h) => h.grant.lastErrorCode !== 'dead_grant') ?? need.dead[0]!;
      const refreshed = await refreshDeadGrant(ctx, dead, need.refreshToken, need.opened!, {
        purpose: 'import',
        nothing: NOTHING,
        hint: 'Run `credvault connections list` to see why, then import again.',
      });
      prepared.replaced.set(platform, { ...refreshed, holder: grantOf(dead.connections) });
    } catch (error) {
      if (!(error instanceof CredvaultError)) throw error;
      const hint = need.changed && refusedApp(error) ? fileAppHint(platform, need) : error.hint;
      if (need.kind === 'join') {
        throw hint === error.hint
          ? error
          : new CredvaultError(error.code, error.message, { hint, cause: error });
      }
      const held = need.dead.map((h) => grantOf(h.connections)).join('; ');
      throw new CredvaultError(
        error.code,
        `the vault holds the file's ${PLATFORMS[platform].displayName} refresh token on ${held}, which needs a person, and refreshing it to replace that grant failed: ${error.message.replace(/\.$/, '')}; ${NOTHING}`,
        { hint, cause: error },
      );
    }
  }
}

/** The token a file gives for a platform: its refresh token, or LinkedIn's access token alone. */
function fileToken(
  platform: PlatformId,
  creds: PlatformCredentials,
): { token: Secret | undefined; accessTokenOnly: boolean } {
  // LinkedIn gives most apps no refresh token: its 60-day access token is imported as it is.
  const accessTokenOnly = !creds.refreshToken && platform === 'linkedin_ads' && Boolean(creds.accessToken);
  return { token: creds.refreshToken ?? (accessTokenOnly ? creds.accessToken : undefined), accessTokenOnly };
}

/** A file's token on an app the vault holds already (matched by client id, as importApp matches it). */
interface FileToken {
  platform: PlatformId;
  appId: string;
  sha256: string;
  refresh: boolean;
}

/**
 * The file's tokens whose app exists, in the order their locks and claims are taken (app, then the
 * token's SHA-256), so that two imports naming the same tokens take them in the same order. A token
 * of an app the file creates needs neither: nobody else can be storing a grant of an app not there yet.
 */
async function fileTokens(db: Db, platforms: Map<PlatformId, PlatformCredentials>): Promise<FileToken[]> {
  const found: FileToken[] = [];
  for (const [platform, creds] of platforms) {
    const { token, accessTokenOnly } = fileToken(platform, creds);
    if (!token || !creds.clientId) continue;
    const app = await appOfFile(db, platform, creds.clientId);
    if (app) found.push({ platform, appId: app.id, sha256: tokenSha256(token), refresh: !accessTokenOnly });
  }
  const key = (t: FileToken) => `${t.appId}:${t.sha256}`;
  return found.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/**
 * Takes the file's tokens' locks (tokenStore.lockTokenSha256), then the rows of the grants holding
 * them, in one order: token locks, grant rows, and only then the audit chain's head, as `connections
 * add`'s storing transaction and every refresh's write take them.
 */
async function lockFileTokens(tx: Db, tokens: FileToken[]): Promise<void> {
  for (const { appId, sha256 } of tokens) await tokenStore.lockTokenSha256(tx, appId, sha256);
  const ids = new Set<string>();
  for (const { appId, sha256 } of tokens)
    for (const grant of await tokenStore.listByTokenSha256(tx, appId, sha256)) ids.add(grant.id);
  for (const id of [...ids].sort()) await tokenStore.lock(tx, id);
}

/**
 * Claims each refresh token of the file whose app exists, as `connections add` claims a token it
 * adopts (claimAdoption), before the import's first pass: another process presenting that token (a
 * `connections add` of it under way) finishes first, and the plan, made with the claim held, joins the
 * grant it stored; one starting meanwhile waits until the import has stored its grant, and joins it.
 * Without the claim, an import storing a token it does not present (a new grant) did so while a
 * `connections add` of it was out at the platform, and anything refreshing the import's grant then
 * (token get, the daemon's sweep) presented the token a second time: where tokens rotate (Microsoft)
 * a reuse, which can end the whole consent. A replacement presents the file's token itself, under the
 * same claim. Claimed in the order of fileTokens, so two imports of files naming the same tokens take
 * them in the same order.
 *
 * The claims are kept (`claims`, released by the caller) until the import's last transaction has
 * committed: the refresh of a replacement writes its answer onto the dead grant, which anyone given
 * the file's token still finds dead until the second pass moves it to the new grant. A claim lasts
 * one lease (leaseMs: one refresh and its write), and an import with several platforms asks each in
 * turn, so it is renewed before each platform call and before the second pass (keepClaims), each time
 * for as long as that step may take: however many platforms, it lapses only if this process stops
 * (then within a step's length) or stalls beyond it.
 */
async function claimFileTokens(
  ctx: ServiceContext,
  platforms: Map<PlatformId, PlatformCredentials>,
  claims: Map<PlatformId, AdoptionClaim>,
): Promise<void> {
  for (const { platform, appId, sha256, refresh } of await fileTokens(ctx.db, platforms)) {
    if (!refresh) continue;
    claims.set(platform, await claimAdoption(ctx, appId, sha256, { command: 'import' }));
  }
}

/**
 * Makes each claim last `forMs` (default: one lease) from now; ends the import when one has lapsed
 * (this process stalled): another process given that token may be presenting it.
 */
async function keepClaims(claims: Map<PlatformId, AdoptionClaim>, forMs?: number): Promise<void> {
  for (const [platform, claim] of claims) {
    if (await claim.renew(forMs)) continue;
    throw new UnavailableError(
      `the import took longer than its claim on the file's ${PLATFORMS[platform].displayName} refresh token lasts, and another process given that token may be using it; ${NOTHING}`,
      { retryAfter: 5, hint: 'Run the import again (read the plan with --dry-run first).' },
    );
  }
}

/** The platform refused the app itself (invalid_client…), anywhere down the error's causes. */
function refusedApp(error: unknown): boolean {
  for (let e = error; e instanceof Error; e = (e as { cause?: unknown }).cause) {
    if (e instanceof ProviderError) return e.kind === 'client';
  }
  return false;
}

/** What to do when the platform refused the app as the file makes it: the file's settings are wrong. */
function fileAppHint(platform: PlatformId, need: Need): string {
  return `The platform was asked with the app as the file makes it (its settings replace those of app ${platform}/${need.app.label}): check ${need.secretSource ?? 'the client secret'} in the file, then import again; the stored app is unchanged.`;
}

/**
 * An import that failed after a refresh to replace a dead grant rotated the file's refresh token: the
 * file's token is used up, and what the platform gave is kept on that grant (refreshDeadGrant wrote it
 * at once). The error says so, and that importing the file again uses it.
 */
function withKept(ctx: ServiceContext, failure: unknown, prepared: Prepared): unknown {
  const kept = [...prepared.replaced].filter(([, r]) => r.rotated);
  if (!kept.length) return failure;
  // A driver's error (a deadlock, a connection gone) as the command would report it, then with the note.
  const error = asReported(failure, databaseWhere(ctx.config));
  if (!error) return failure;
  const said = kept.map(([platform, r]) => {
    const which = r.presentedHeld
      ? `the refresh token kept on ${r.holder} when it was refreshed to replace that grant`
      : `the file's refresh token when it was refreshed to replace ${r.holder}`;
    return `${PLATFORMS[platform].displayName} rotated ${which}: that token is used up, and the new one is kept on that grant (nothing is served from it: it still needs a person)`;
  });
  return new CredvaultError(
    error.code,
    `${error.message.replace(/\.$/, '')}. ${said.join('; ')}; importing the file again uses it, and does not send the file's token`,
    { hint: error.hint, cause: error },
  );
}

/**
 * The app a file's settings are for: the one with the file's client id, or none. Two apps may share a
 * client id (one OAuth client, two managers' settings): the file does not say which one it is for, and
 * the import does not guess (it would replace that app's client secret, and store the grant on it).
 * Refused as invalid input (exit 2), not as a conflict: nothing changed underneath, the file is what
 * lacks the choice, as an APP ref naming apps of two platforms does.
 */
async function appOfFile(db: Db, platform: PlatformId, clientId: string): Promise<AppRecord | undefined> {
  const apps = (await appStore.list(db, platform)).filter((a) => a.clientId === clientId);
  if (apps.length <= 1) return apps[0];
  const labels = apps.map((a) => `${platform}/${a.label}`);
  throw new InvalidInputError(
    `${PLATFORMS[platform].displayName}: the file's client id ${clientId} is the client id of ${apps.length} apps (${labels.join(', ')}), and the file does not say which one it is for; credvault does not guess`,
    {
      hint: `Store the file's refresh token on the app you mean with \`credvault connections add ${platform} --app APP --account ID --refresh-token-file FILE\` (APP one of ${labels.join(', ')}; a new client secret with \`credvault apps update APP --new-client-secret\`), or remove the ${PLATFORMS[platform].displayName} settings from the file and import the rest; nothing was imported.`,
    },
  );
}

/** What `apps add` would refuse, asked for by the names the user's file uses. */
function requireForNewApp(platform: PlatformId, creds: PlatformCredentials, fields: AppFields): void {
  const { displayName, capabilities, defaults } = PLATFORMS[platform];
  const missing = (what: string, suffix: string, why = '') =>
    new InvalidInputError(`${displayName}: no ${what} for the new app${why}`, {
      hint: `Add ${settingName(creds, suffix)}, or register the app first with \`credvault apps add ${platform}\`; nothing was imported.`,
    });
  // Microsoft public (native) clients have no secret; every other platform authenticates the client.
  if (!fields.clientSecret && platform !== 'microsoft_ads') throw missing('client secret', 'CLIENT_SECRET');
  if (capabilities.developer_token === 'required' && !fields.developerToken)
    throw missing('developer token', 'DEVELOPER_TOKEN');
  if (!fields.redirectUri && !defaults.redirectUri) {
    throw missing(
      'redirect URI',
      'REDIRECT_URI',
      ' (the exact one registered with the app, to connect again later)',
    );
  }
}

/** The app the file's settings are for, as they make it (created, updated, or as stored), and whether they change it. */
async function importApp(
  ctx: ServiceContext,
  tx: Db,
  platform: PlatformId,
  creds: PlatformCredentials,
  plan: PlanItem[],
): Promise<{ app: AppRecord; changed: boolean }> {
  const display = PLATFORMS[platform].displayName;
  if (!creds.clientId) {
    throw new InvalidInputError(
      `${display} settings without a client id (${Object.values(creds.sources).join(', ')})`,
      {
        hint: `Add ${settingName(creds, 'CLIENT_ID')}; nothing was imported.`,
      },
    );
  }
  const existing = await appOfFile(tx, platform, creds.clientId);
  const fields: AppFields = parseAppFields({
    client_id: creds.clientId,
    client_secret: creds.clientSecret,
    developer_token: creds.developerToken,
    // Not the file's login customer id: that is how the file's accounts are reached, kept on their
    // connections. On the app it would reach every other connection of the app (another file's
    // accounts, granted directly), and the next file naming another manager would change it again.
    user_agent: creds.userAgent,
    redirect_uri: creds.redirectUri,
  });
  if (existing && !existing.enabled) {
    // The same refusal as connections add and connect: a disabled app takes no new grants.
    throw new ConflictError(`app ${platform}/${existing.label} (client id ${creds.clientId}) is disabled`, {
      hint: `Enable it with \`credvault apps enable ${platform}/${existing.label}\`, then import again; nothing was imported.`,
    });
  }
  if (!existing) requireForNewApp(platform, creds, fields);
  if (!existing) {
    const taken = new Set((await appStore.list(tx, platform)).map((a) => a.label));
    let label = 'imported';
    for (let i = 2; taken.has(label); i++) label = `imported-${i}`;
    const app = await addApp(ctx, platform, { ...fields, label });
    plan.push({
      kind: 'app',
      platform,
      target: label,
      action: 'create',
      detail: `client id ${creds.clientId}`,
    });
    return { app, changed: true };
  }
  // What differs from the stored app (secrets compared after decrypting them).
  const keyring = await ctx.keyring();
  const stored = (await appStore.getEncryptedSecrets(tx, existing.id))!;
  const changes: AppFields = {};
  const changed: string[] = [];
  const storedSecret = await keyring.decryptOptional(
    stored.clientSecretEnc,
    secretSlot(existing.id, 'client_secret_enc'),
  );
  const storedToken = await keyring.decryptOptional(
    stored.developerTokenEnc,
    secretSlot(existing.id, 'developer_token_enc'),
  );
  if (fields.clientSecret && storedSecret?.reveal() !== fields.clientSecret.reveal()) {
    changes.clientSecret = fields.clientSecret;
    changed.push('client secret');
  }
  if (fields.developerToken && storedToken?.reveal() !== fields.developerToken.reveal()) {
    changes.developerToken = fields.developerToken;
    changed.push('developer token');
  }
  for (const [key, name] of [
    ['userAgent', 'user agent'],
    ['redirectUri', 'redirect uri'],
  ] as const) {
    if (fields[key] !== undefined && fields[key] !== existing[key]) {
      (changes as Record<string, unknown>)[key] = fields[key];
      // Not secrets: the plan shows them, as it shows a connection's settings.
      changed.push(`${name} ${fields[key]} (was ${existing[key] ?? 'not set'})`);
    }
  }
  if (!changed.length) {
    plan.push({
      kind: 'app',
      platform,
      target: existing.label,
      action: 'unchanged',
      detail: `client id ${creds.clientId}`,
    });
    return { app: existing, changed: false };
  }
  const app = await updateApp(ctx, existing.id, changes);
  plan.push({ kind: 'app', platform, target: existing.label, action: 'update', detail: changed.join(', ') });
  return { app, changed: true };
}

/**
 * A connection's details with the file's laid over them. How a Google account is reached (directly,
 * or through a manager) is replaced whole, as a reconnect does: a login customer id ends `reached`,
 * and `reached: direct` (a file that names no login customer id) ends a login customer id.
 */
function withDetails(known: Record<string, string>, given: Record<string, string>): Record<string, string> {
  const kept = { ...known };
  if ('login_customer_id' in given || 'reached' in given) {
    delete kept.reached;
    delete kept.login_customer_id;
  }
  return { ...kept, ...given };
}

/** The details a file sets, compared with a connection's: the keys that change, and in words. */
function detailChanges(
  known: Record<string, string>,
  given: Record<string, string>,
): { keys: string[]; said: string[] } {
  const after = withDetails(known, given);
  const keys = ['customer_id', 'login_customer_id', 'reached'].filter((key) => known[key] !== after[key]);
  const said: string[] = [];
  if (keys.includes('customer_id')) {
    said.push(`customer id ${after.customer_id} (was ${known.customer_id ?? 'not set'})`);
  }
  if (after.login_customer_id && keys.includes('login_customer_id')) {
    said.push(`login customer id ${after.login_customer_id} (was ${known.login_customer_id ?? 'not set'})`);
  } else if (after.reached === 'direct' && (keys.includes('login_customer_id') || keys.includes('reached'))) {
    said.push(
      `reached directly, no login customer id (was ${known.login_customer_id ? `login customer id ${known.login_customer_id}` : "not said: the app's login customer id, if any"})`,
    );
  }
  return { keys, said };
}

/** What the plan adds to an unchanged connection that is not active. */
const STATUS_NOTE: Record<string, string> = {
  needs_reauth: '; needs_reauth: the platform refused this token (connect the account again)',
  error: '; error: its last refreshes failed (try `credvault connections refresh CONN --force`)',
};

async function importConnections(
  ctx: ServiceContext,
  tx: Db,
  platform: PlatformId,
  imported: { app: AppRecord; changed: boolean },
  creds: PlatformCredentials,
  plan: PlanItem[],
  touched: string[],
  named: string[],
  pass: { needs: Map<PlatformId, Need>; prepared: Prepared | null; destroyed: DestroyedGrant[] },
): Promise<void> {
  const { app } = imported;
  /** What each platform call of this platform's need goes with: the app as the file makes it. */
  const callsWith = { ...imported, secretSource: creds.sources.clientSecret };
  const accounts = creds.accountIds.length
    ? creds.accountIds
    : platform === 'google_ads' && creds.loginCustomerId
      ? [normalizeAccountId(platform, creds.loginCustomerId)]
      : [];
  const { token, accessTokenOnly } = fileToken(platform, creds);
  if (!token) {
    if (accounts.length) {
      plan.push({
        kind: 'connection',
        platform,
        target: accounts.join(', '),
        action: 'skip',
        detail: creds.accessToken
          ? 'an access token without a refresh token expires within the hour'
          : 'no refresh token',
      });
    }
    return;
  }
  if (!accounts.length) {
    // The account setting's name in the file's own spelling (its prefix, or google-ads.yaml's key).
    const fields = RECOGNISED.find((r) => r.platform === platform)!.fields;
    const suffix = Object.keys(fields).find((key) => fields[key] === 'accounts')!;
    const name = settingName(creds, suffix);
    throw new InvalidInputError(
      `${ENV_NAME(creds, 'refreshToken', 'a refresh token')} names no account to connect`,
      {
        hint: `Add ${name} (several separated by commas); nothing was imported.`,
      },
    );
  }
  const fingerprint = tokenSha256(token);
  // Everything below, the look for grants holding this token included, under the token's lock: a
  // process given the same token at once (another import, connections add) stores its grant first,
  // and this one, once it has the lock, finds and joins it rather than storing a second grant.
  await tokenStore.lockTokenSha256(tx, app.id, fingerprint);
  // Accounts already connected with this very refresh token are left alone, whatever their status: a
  // token the platform refused stays refused, and importing it again must not say otherwise.
  const fresh: string[] = [];
  const freshItems: PlanItem[] = [];
  /** The grant that holds this token already: accounts new to the file join it. */
  let holder: tokenStore.GrantRow | null = null;
  /** An account whose connection holds this token and needs a person: the platform refused it. */
  let refusedFor: string | null = null;
  // The connection's own settings the file gives: they reach every connection the file's token is
  // on, those whose token is unchanged too (a manager or customer id changes without a new consent).
  // A Google file says how its accounts are reached: through the manager it names as login customer
  // id, or, naming none, directly (the official client sends no login-customer-id then), whatever
  // manager the app or another file names.
  const details: Record<string, string> = {
    ...(creds.customerId ? { customer_id: creds.customerId } : {}),
    ...(platform !== 'google_ads'
      ? {}
      : creds.loginCustomerId
        ? { login_customer_id: normalizeAccountId(platform, creds.loginCustomerId) }
        : { reached: 'direct' }),
  };
  const changedKeys = (known: Record<string, string>) => detailChanges(known, details).keys;
  const describe = (known: Record<string, string>) => detailChanges(known, details).said;
  for (const account of accounts) {
    const existing = await connectionStore.getByAccount(tx, platform, account);
    const grant = existing?.tokenId ? await tokenStore.get(tx, existing.tokenId) : null;
    let same = false;
    if (grant && existing!.appId === app.id) {
      // The token this file held was imported before (the platform may have rotated it since: the
      // stored one is newer and stays), or it is the very token stored.
      same = grant.importedTokenSha256 === fingerprint || grant.refreshTokenSha256 === fingerprint;
      if (!same) {
        const stored = await openToken(ctx, grant, accessTokenOnly ? 'access' : 'refresh');
        same = stored?.reveal() === token.reveal();
      }
    }
    if (same) {
      named.push(existing!.id);
      if (existing!.status === 'needs_reauth') refusedFor ??= account;
      else holder ??= grant;
      const changed = describe(existing!.details);
      if (changed.length) {
        await connectionStore.update(tx, existing!.id, { details: withDetails(existing!.details, details) });
        await recordAudit(tx, ctx.actor, {
          action: 'connection.update',
          targetType: 'connection',
          targetId: existing!.id,
          connectionId: existing!.id,
          outcome: 'success',
          detail: {
            platform,
            account,
            app: app.label,
            via: 'import',
            changed: changedKeys(existing!.details),
          },
        });
        touched.push(existing!.id);
      }
      plan.push({
        kind: 'connection',
        platform,
        target: account,
        action: changed.length ? 'update' : 'unchanged',
        detail: `app ${app.label}${changed.length ? `, ${changed.join(', ')}` : ''}${STATUS_NOTE[existing!.status] ?? ''}`,
      });
    } else if (existing && !grant?.importedTokenSha256) {
      // A file's token replaces only a grant an import made. One that connect or connections add
      // made (after the file's token was refused, say) is newer than anything the file knows, and a
      // revoked connection stays revoked: replacing either would throw away what a person did.
      // (Verified only when it holds a grant: a revoked one has no token to ask for.)
      if (grant) named.push(existing.id);
      // connections add adopts refresh tokens; an access token alone comes only from a consent.
      const how = accessTokenOnly
        ? `connect it again: credvault connect ${platform} --app ${app.label} --account ${account}`
        : `to store the file's refresh token on it on purpose: credvault connections add ${platform} --app ${app.label} --account ${account} --refresh-token-file FILE`;
      plan.push({
        kind: 'connection',
        platform,
        target: account,
        action: 'skip',
        detail: grant
          ? `kept: connected with connect or connections add, not by an import, so the file's token does not replace it; ${how}`
          : `kept ${existing.status}: it holds no token, and an import does not revive it; ${how}`,
      });
    } else {
      // A connection of another app (another OAuth client: a staging one, say) moves to this one.
      const movedFrom =
        existing && existing.appId !== app.id
          ? (await appStore.getById(tx, existing.appId))?.label
          : undefined;
      const item: PlanItem = {
        kind: 'connection',
        platform,
        target: account,
        action: existing ? 'update' : 'create',
        detail: existing
          ? [
              `new ${accessTokenOnly ? 'access' : 'refresh'} token`,
              ...(existing.appId !== app.id
                ? [`app ${app.label} (was ${movedFrom ?? 'an app since removed'})`]
                : []),
              ...describe(existing.details),
            ].join(', ')
          : `app ${app.label}${accessTokenOnly ? ', access token only (no refresh token)' : ''}`,
      };
      fresh.push(account);
      freshItems.push(item);
      plan.push(item);
    }
  }
  if (refusedFor && !holder) {
    // Not stored as active with a token the platform has refused.
    for (const item of freshItems) {
      item.action = 'skip';
      item.detail = `the platform refused this token for ${refusedFor} (connect the accounts again)`;
    }
    return;
  }
  if (!fresh.length) return;
  const accountsOf = fresh.map((id) => ({ id, name: null, currency: null, details }));
  /** The file's new accounts join a grant holding its token (locked, and seen live still). */
  const join = async (grant: HeldGrant) => {
    const { ids, destroyed } = await joinGrantIn(ctx, tx, {
      app,
      held: grant,
      accounts: accountsOf,
      name: null,
      via: 'import',
      nothing: NOTHING,
      hint: 'Run `credvault connections list` to see why, then import again.',
    });
    touched.push(...ids);
    named.push(...ids);
    pass.destroyed.push(...destroyed);
  };
  // One consent, one grant, as `connections add` keeps it: the file's refresh token may be held
  // already by a grant of accounts the file does not name (connect, connections add, another file).
  const held = !holder && creds.refreshToken ? await findHeldGrants(tx, app.id, fingerprint) : null;
  if (held?.live) {
    const live = held.live;
    const refs = live.connections.map(connectionRef).join(', ');
    for (const item of freshItems) {
      item.action = 'join';
      item.detail = `app ${app.label}, the grant of ${refs}, which holds this refresh token already (one consent: revoking one revokes them all); that grant is refreshed once, the file's token is not sent`;
    }
    pass.needs.set(platform, { kind: 'join', held: live, ...callsWith });
    if (!pass.prepared) return;
    if (!pass.prepared.joined.has(live.grant.id)) throw changedMeanwhile(platform);
    await join(live);
    return;
  }
  let adopted: TokenResult | undefined;
  if (held?.held.length) {
    // Only grants that need a person hold it: as `connections add`, their consent is refreshed
    // (proving it works), and the file's accounts' new grant takes what that refresh gave.
    const holders = held.held.map((h) => grantOf(h.connections)).join('; ');
    for (const item of freshItems) {
      item.detail += `; replaces ${holders}, which holds this refresh token and needs a person (its tokens are destroyed): the file's token is refreshed first (or a newer one of the same consent that grant holds, which the platform has not refused)`;
    }
    pass.needs.set(platform, {
      kind: 'replace',
      dead: held.held,
      refreshToken: creds.refreshToken!,
      ...callsWith,
    });
    if (!pass.prepared) return;
    const refreshed = pass.prepared.replaced.get(platform);
    if (!refreshed) throw changedMeanwhile(platform);
    adopted = await tokensWrittenOn(ctx, tx, held.held, refreshed.grant);
    if (!adopted) throw changedMeanwhile(platform);
  }
  if (holder) {
    // One consent, one grant: a second copy of the token would be refreshed on its own, and where
    // the platform rotates refresh tokens the first refresh would leave the other copy stale. Joined
    // as any held grant is: locked, and seen live still (a revocation meanwhile came first, or waits).
    await join({ grant: holder, connections: await connectionStore.listByGrant(tx, holder.id) });
    return;
  }
  const { ids, destroyed } = await storeGrant(ctx, tx, {
    app,
    // The consent refreshed to replace a dead grant: what the platform gave (a rotated refresh token
    // replaces the file's).
    tokens: adopted ?? {
      // With a refresh token, no access token is kept: the first `token get` (or --verify)
      // refreshes. An access token alone has an unknown lifetime: it serves until refused.
      accessToken: accessTokenOnly ? creds.accessToken! : null,
      refreshToken: creds.refreshToken ?? null,
      tokenType: 'Bearer',
      expiresAt: null,
      refreshTokenExpiresAt: null,
      scope: null,
    },
    accounts: accountsOf,
    name: null,
    via: 'import',
    accessTokenOnly,
    importedTokenSha256: fingerprint,
    // As given (the platform may have rotated it when it was refreshed to replace a dead grant).
    refreshTokenSha256: creds.refreshToken ? fingerprint : undefined,
  });
  touched.push(...ids);
  named.push(...ids);
  pass.destroyed.push(...destroyed);
  if (held?.held.length) {
    const added = await connectionStore.listViews(tx, { ids });
    for (const { grant } of held.held) await replaceDeadGrant(ctx, tx, grant.id, added, 'import');
  }
}

export interface VerifyOutcome {
  connection: string;
  platform: PlatformId;
  account: string;
  ok: boolean;
  /** The failure's error code (its exit code is the command's when it fails). */
  code: ErrorCode | null;
  message: string;
}

/**
 * Proves each imported connection works: a refresh where there is a refresh token, else a call that
 * lists the accounts the access token reaches. A dead refresh token is marked as such, as any refresh
 * would. One connection's failure does not stop the others.
 */
export async function verifyImported(ctx: ServiceContext, connectionIds: string[]): Promise<VerifyOutcome[]> {
  const outcomes: VerifyOutcome[] = [];
  for (const id of connectionIds) {
    const connection = await connectionStore.getById(ctx.db, id);
    if (!connection) continue;
    const base = {
      connection: connectionRef(connection),
      platform: connection.platform as PlatformId,
      account: connection.externalAccountId,
    };
    try {
      const grant = connection.tokenId ? await tokenStore.get(ctx.db, connection.tokenId) : null;
      if (grant?.refreshTokenEnc) {
        const served = await getValidAccessToken(ctx, id, {
          minTtlSeconds: 0,
          forceRefresh: true,
          purpose: 'import --verify',
        });
        outcomes.push({
          ...base,
          ok: true,
          code: null,
          message: `refreshed; the access token expires ${served.expiresAt?.toISOString() ?? 'when the platform says'}`,
        });
        continue;
      }
      const served = await getValidAccessToken(ctx, id, { minTtlSeconds: 0, purpose: 'import --verify' });
      const record = (await appStore.getById(ctx.db, connection.appId))!;
      const [provider, app] = await Promise.all([
        providerFor(base.platform),
        providerApp(ctx, ctx.db, record, { secrets: true }),
      ]);
      let accounts: AdAccount[];
      try {
        accounts = await provider.discoverAccounts(app, served.accessToken, {
          signal: AbortSignal.timeout(ctx.config.httpTimeoutMs),
        });
      } catch (error) {
        throw providerFailure(error, `listing the accounts of ${base.connection}`);
      }
      const reached = accounts.some((a) => a.id === connection.externalAccountId);
      outcomes.push({
        ...base,
        ok: reached,
        code: reached ? null : 'reauth_required',
        message: reached
          ? 'the access token reaches this account (it has no refresh token: connect again before it expires)'
          : `the access token works but does not reach account ${connection.externalAccountId}`,
      });
    } catch (error) {
      if (!(error instanceof CredvaultError)) throw error;
      outcomes.push({ ...base, ok: false, code: error.code, message: error.message });
    }
  }
  return outcomes;
}
