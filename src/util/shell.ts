/** A word as a POSIX shell reads it back unchanged: as it is when plainly safe, else single-quoted. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:+=@%,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
