import type { ChalkInstance } from 'chalk';
import type TableType from 'cli-table3';
import { errorMessage } from '../db/errors.js';
import { CredvaultError, escapeUnprintable, InternalError, printable } from '../errors.js';
import { redact } from '../util/redact.js';

/** The colours output uses; identity functions until `prepare()` loads chalk for a human at a terminal. */
export type Styler = Pick<ChalkInstance, 'bold' | 'dim' | 'red' | 'green' | 'yellow' | 'cyan'>;

const plain = (text: unknown) => String(text);
const PLAIN: Styler = {
  bold: plain as ChalkInstance,
  dim: plain as ChalkInstance,
  red: plain as ChalkInstance,
  green: plain as ChalkInstance,
  yellow: plain as ChalkInstance,
  cyan: plain as ChalkInstance,
};

/**
 * The one writer. stdout carries data only (a table, a record, or one JSON document under --json);
 * diagnostics, progress and errors go to stderr. Commands never call console.*.
 */

export interface Column<T> {
  header: string;
  value: (row: T) => string | number | boolean | null | undefined;
  /** Colours a cell by its row (status, urgency); only when colour is on. */
  style?: (row: T, text: string, c: Styler) => string;
}

export interface Stream {
  write(text: string): unknown;
  isTTY?: boolean;
}

const BORDERLESS = {
  top: '',
  'top-mid': '',
  'top-left': '',
  'top-right': '',
  bottom: '',
  'bottom-mid': '',
  'bottom-left': '',
  'bottom-right': '',
  left: '',
  'left-mid': '',
  mid: '',
  'mid-mid': '',
  right: '',
  'right-mid': '',
  middle: '  ',
};

/** Rows laid out by cli-table3 at a time (see Output.table). */
const TABLE_SLICE = 100;

export class Output {
  readonly json: boolean;
  c: Styler = PLAIN;
  /** What human tables need, loaded by prepare(). */
  #tables: { Table: typeof TableType; width: (text: string) => number } | null = null;
  readonly #color: boolean;
  readonly #stdout: Stream;
  readonly #stderr: Stream;
  readonly #verbose: boolean;
  readonly #keepUnder: readonly string[];

  constructor(options: {
    json: boolean;
    color: boolean;
    verbose: boolean;
    stdout: Stream;
    stderr: Stream;
    /** Folders whose paths an unexpected failure's text keeps (the data folder): see redact. */
    keepUnder?: readonly string[];
  }) {
    this.json = options.json;
    this.#keepUnder = options.keepUnder ?? [];
    this.#stdout = options.stdout;
    this.#stderr = options.stderr;
    this.#verbose = options.verbose;
    const forced = process.env.FORCE_COLOR !== undefined && process.env.FORCE_COLOR !== '0';
    this.#color = options.color && Boolean(options.stdout.isTTY || forced);
  }

  /**
   * Loads what human output needs (chalk, cli-table3). JSON output never pays for them: `token get`
   * and scripts start faster.
   */
  async prepare(): Promise<void> {
    if (this.json || this.#tables) return;
    const [{ Chalk }, table, stringWidth] = await Promise.all([
      import('chalk'),
      import('cli-table3'),
      import('string-width'),
    ]);
    this.#tables = { Table: table.default, width: stringWidth.default };
    if (this.#color) this.c = new Chalk({ level: 1 });
  }

  /** Writes one JSON document to stdout. */
  writeJson(value: unknown): void {
    this.#stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** Raw data on stdout (a token, a key, a generated file). */
  raw(text: string): void {
    this.#stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** A list: a JSON array under --json, else a table (or `empty` on stderr when there are no rows). */
  list<T>(rows: T[], json: (row: T) => unknown, columns: Column<T>[], empty?: string): void {
    if (this.json) return this.writeJson(rows.map(json));
    if (rows.length === 0) {
      if (empty) this.note(empty);
      return;
    }
    this.#stdout.write(`${this.table(rows, columns)}\n`);
  }

  table<T>(rows: T[], columns: Column<T>[]): string {
    if (!this.#tables) throw new InternalError('output was not prepared for tables');
    const { Table, width: stringWidth } = this.#tables;
    const head = columns.map((col) => this.c.bold(col.header));
    const cells = rows.map((row) =>
      columns.map((col) => {
        const value = col.value(row);
        const text = value === null || value === undefined || value === '' ? '-' : String(value);
        return col.style ? col.style(row, text, this.c) : text;
      }),
    );
    // cli-table3 lays a table out in time quadratic in its rows (it checks each cell against the others
    // for spans): `connections list` of 10,000 connections took 15 s. The rows go through it a hundred
    // at a time, each slice with the column widths of the whole table (measured as cli-table3
    // measures: the widest line of a cell, colour codes left out).
    const width = (cell: string) =>
      cell.split('\n').reduce((widest, line) => Math.max(widest, stringWidth(line)), 0);
    const colWidths = head.map((header, i) =>
      cells.reduce((widest, row) => Math.max(widest, width(row[i]!)), width(header)),
    );
    const slices: string[] = [];
    for (let start = 0; start === 0 || start < cells.length; start += TABLE_SLICE) {
      const table = new Table({
        ...(start === 0 ? { head } : {}),
        colWidths,
        chars: BORDERLESS,
        style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
      });
      table.push(...cells.slice(start, start + TABLE_SLICE));
      slices.push(table.toString());
    }
    return slices
      .join('\n')
      .split('\n')
      .map((line) => line.trimEnd())
      .join('\n');
  }

  /** One record: JSON under --json, else aligned "key  value" lines. */
  item(json: unknown, pairs: Array<[string, unknown]>): void {
    if (this.json) return this.writeJson(json);
    const width = Math.max(...pairs.map(([key]) => key.length));
    const lines = pairs.map(([key, value]) => `${this.c.dim(key.padEnd(width))}  ${formatValue(value)}`);
    this.#stdout.write(`${lines.join('\n')}\n`);
  }

  /** A human line on stderr (suppressed under --json, where stdout already says it all). */
  note(text: string): void {
    if (!this.json) this.#stderr.write(`${text}\n`);
  }

  success(text: string): void {
    this.note(`${this.c.green('✓')} ${text}`);
  }

  /** A warning always reaches stderr, even under --json. */
  warn(text: string): void {
    // A warning may name what a file held (an unknown key of a google-ads.yaml): never a control sequence.
    this.#stderr.write(`${this.c.yellow('warning:')} ${escapeUnprintable(text)}\n`);
  }

  /** Something a script must see even under --json (an authorize URL to open, say): a line of its own. */
  line(text: string): void {
    this.#stderr.write(`${text}\n`);
  }

  error(error: unknown): number {
    const known = error instanceof CredvaultError ? error : null;
    // An unexpected failure's text is not credvault's own (a library's, a server's): anything in it
    // shaped like a token is redacted, as in the daemon's log. credvault's own messages are shown whole.
    const shown =
      known ??
      new InternalError(
        `unexpected failure: ${redact(errorMessage(error), [], { keepUnder: this.#keepUnder })}`,
      );
    // What the user typed or a file held comes back in messages: an escape sequence in it is shown
    // escaped, never acted on by the terminal, and an overlong one is cut (under --json too, where a
    // script may print the message).
    const text = printable(shown.message);
    const hint = shown.hint ? printable(shown.hint) : undefined;
    if (this.json) {
      // The hint (what to do: which input to give, say) is part of the message: a script's log shows both.
      const message = hint ? `${text}. ${hint}` : text;
      this.#stderr.write(`${JSON.stringify({ error: { code: shown.code, message } })}\n`);
    } else {
      this.#stderr.write(`${this.c.red('error:')} ${text}\n`);
      if (hint) this.#stderr.write(`${hint}\n`);
      if (!known && !this.#verbose)
        this.#stderr.write('Run again with --verbose (or CREDVAULT_DEBUG=1) for details.\n');
    }
    if (this.#verbose) {
      // A stack starts with the message: its lines escaped one by one, and those that are not frames
      // (the message, over one line or more) redacted as above.
      const lines = (stack: string) =>
        stack
          .split('\n')
          .map((line) =>
            escapeUnprintable(/^\s+at /.test(line) ? line : redact(line, [], { keepUnder: this.#keepUnder })),
          )
          .join('\n');
      const stack = error instanceof Error ? error.stack : undefined;
      if (stack) this.#stderr.write(`${lines(stack)}\n`);
      const cause = (error as { cause?: unknown })?.cause;
      if (cause instanceof Error && cause.stack) this.#stderr.write(`caused by: ${lines(cause.stack)}\n`);
    }
    return shown.exitCode;
  }
}

export function formatValue(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  if (Array.isArray(value)) return value.length ? value.join(' ') : '-';
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}
