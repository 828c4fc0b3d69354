/**
 * Redaction of anything that looks like a token in text that came from outside (a platform's error
 * body). Known secrets are replaced by value; unknown ones by shape: long runs of token characters,
 * JWTs, and the prefixes platforms give their tokens.
 */

const TOKEN_SHAPES = [
  /eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g, // JWT
  /\b(ya29\.|1\/\/|EwA|AQ[A-Za-z0-9_-]{2}|M\.C\d)[A-Za-z0-9._~+/=-]{8,}/g, // Google, Microsoft, LinkedIn, Microsoft MSA
  /[A-Za-z0-9._~+/=-]{32,}/g, // any long opaque run
];

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/**
 * credvault's own names that its log lines quote and that are long runs of token characters (a
 * metric's name): kept whole. Named one by one: a shape (lower-case words joined by `_`) would let a
 * passphrase through (`correct_horse_battery_staple_…`).
 */
const OWN_NAMES: ReadonlySet<string> = new Set(['credvault_database_gauges_updated_timestamp_seconds']);

/**
 * `keepUnder`: folders whose paths an operator needs to read in a log (the data folder, the
 * credentials folder: `/run/credentials/credvault.service/credential_master_key` is a run of token
 * characters too). Only those folders and the paths under them are kept; any other token-shaped run, a base64 secret
 * that happens to start with a `/` included, is not.
 */
export function redact(
  text: string,
  known: Array<string | null | undefined> = [],
  { keepUnder = [] }: { keepUnder?: readonly string[] } = {},
): string {
  let out = text;
  for (const value of known) {
    if (value && value.length >= 4) out = out.split(value).join('[redacted]');
  }
  // credvault's own ids (grants, connections: UUIDs) are not tokens, and a log needs them.
  for (const shape of TOKEN_SHAPES)
    out = out.replace(shape, (match) =>
      UUID.test(match) ||
      OWN_NAMES.has(match) ||
      keepUnder.some((folder) => match === folder || match.startsWith(`${folder}/`))
        ? match
        : '[redacted]',
    );
  return out;
}

/**
 * In a platform's own text, shorter runs count too: 20 or more letters, digits, `_`, `-`, `+` and
 * `=` with a digit and a letter among them (an API key such as `sk_live_…`, 30 characters of base64)
 * is a token there. A `/` ends such a run, so that a path (`/api/v1/access_token`) stays readable:
 * a short standard-base64 secret with a `/` in it passes in pieces under 20. Not in credvault's own
 * log lines, where a connection's label (`google-ads-1234567890`) is what the reader needs; a
 * platform's error names (`OAUTH_TOKEN_INVALID_OR_EXPIRED`, `AADSTS700082`) are kept.
 */
const SHORT_TOKEN = /[A-Za-z0-9_+=-]{20,}/g;

/** A short, redacted excerpt of a platform's response body for an error message. */
export function excerpt(text: string, known: Array<string | null | undefined> = [], max = 300): string {
  const flat = redact(text, known)
    .replace(SHORT_TOKEN, (match) =>
      /\d/.test(match) && /[A-Za-z]/.test(match) && !UUID.test(match) ? '[redacted]' : match,
    )
    .replace(/\s+/g, ' ')
    .trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

/** A platform's error code as something safe to show: letters, digits, `_`, `.`, `-`, at most 64. */
export function safeCode(value: unknown): string {
  return String(value ?? '')
    .replace(/[^A-Za-z0-9_.-]/g, '')
    .slice(0, 64);
}
