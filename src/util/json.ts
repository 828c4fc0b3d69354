import { InvalidInputError } from '../errors.js';

/**
 * JSON.parse with an error that names the line and column. V8's messages carry a position only for
 * some mistakes ("Unexpected token 'x', … is not valid JSON" has none), so the position comes from a
 * small scanner that walks the grammar up to the first error. Written by hand: it only locates errors;
 * parsing itself stays JSON.parse.
 */
export function parseJson(raw: string, source: string): unknown {
  // A byte-order mark (Notepad, PowerShell) is no part of the document.
  const text = raw.replace(/^\uFEFF/, '');
  try {
    return JSON.parse(text);
  } catch {
    const { index, reason } = locateError(text);
    const { line, column } = lineColumn(text, index);
    throw new InvalidInputError(`${source} is not valid JSON: ${reason} at line ${line}, column ${column}`, {
      hint: 'Fix the file and try again; nothing was written.',
    });
  }
}

function lineColumn(text: string, index: number): { line: number; column: number } {
  let line = 1;
  let start = 0;
  for (let i = 0; i < index && i < text.length; i++) {
    if (text[i] === '\n') {
      line += 1;
      start = i + 1;
    }
  }
  return { line, column: index - start + 1 };
}

class ScanError extends Error {
  constructor(
    readonly index: number,
    readonly reason: string,
  ) {
    super(reason);
  }
}

export function locateError(text: string): { index: number; reason: string } {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const fail = (reason: string): never => {
    throw new ScanError(i, i >= text.length ? 'unexpected end of input' : reason);
  };
  const literal = (word: string) => {
    if (text.startsWith(word, i)) i += word.length;
    else fail(`unexpected "${text[i]}"`);
  };
  const string = () => {
    i++; // opening quote
    while (i < text.length) {
      const ch = text[i]!;
      if (ch === '"') {
        i++;
        return;
      }
      if (ch === '\\') {
        const next = text[i + 1];
        if (next === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail('bad \\u escape');
          i += 6;
        } else if (next !== undefined && '"\\/bfnrt'.includes(next)) i += 2;
        else fail('bad escape in string');
      } else if (ch < ' ') fail('control character in string');
      else i++;
    }
    fail('unterminated string');
  };
  const number = () => {
    const match = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!match) fail(`unexpected "${text[i]}"`);
    i += match![0].length;
  };
  const value = (): void => {
    ws();
    const ch = text[i];
    if (ch === '{') {
      i++;
      ws();
      if (text[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a double-quoted property name');
        string();
        ws();
        if (text[i] !== ':') fail('expected ":" after a property name');
        i++;
        value();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return;
        }
        fail('expected "," or "}" after a property value');
      }
    }
    if (ch === '[') {
      i++;
      ws();
      if (text[i] === ']') {
        i++;
        return;
      }
      for (;;) {
        value();
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return;
        }
        fail('expected "," or "]" after an array element');
      }
    }
    if (ch === '"') return string();
    if (ch === 't') return literal('true');
    if (ch === 'f') return literal('false');
    if (ch === 'n') return literal('null');
    return number();
  };
  try {
    value();
    ws();
    if (i < text.length) fail(`unexpected "${text[i]}" after the end of the document`);
    return { index: i, reason: 'invalid JSON' };
  } catch (error) {
    if (error instanceof ScanError) return { index: error.index, reason: error.reason };
    throw error;
  }
}
