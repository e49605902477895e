/**
 * CSV and JSON as readable text.
 *
 * Guarantees: CSV becomes one line per data row with every non-empty value named by its
 * column (RFC 4180 quoting understood, the delimiter sniffed); JSON is validated and
 * re-indented with keys in their order and numbers exactly as written (no float rounding);
 * invalid JSON is a `corrupt_file` failure that names no content.
 */
import { ParseFailure } from './knowledge.detect.ts';
import { cleanCharacters } from './knowledge.text.ts';

const failure = (code: ParseFailure['code'], message: string) => new ParseFailure(code, message);

// --- CSV ---

/** RFC 4180 rows: quoted fields may hold delimiters, newlines and doubled quotes. Lenient about stray quotes. */
export function parseCsv(text: string, delimiter: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += c;
    } else if (c === '"' && field === '') quoted = true;
    else if (c === delimiter) {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

/** The delimiter the first line uses most: comma, semicolon, tab or pipe. */
function sniffDelimiter(text: string): string {
  const first = text.slice(0, text.indexOf('\n') >= 0 ? text.indexOf('\n') : 4096).replace(/"[^"]*"/g, '');
  let best = ',';
  let most = 0;
  for (const d of [',', ';', '\t', '|']) {
    const n = first.split(d).length - 1;
    if (n > most) {
      best = d;
      most = n;
    }
  }
  return best;
}

/**
 * One line per data row, each value named by its column: `name: Ada | born: 1815`. Empty
 * values are left out; a row longer than the header names its extra columns by number.
 */
export function csvToText(raw: string, delimiter?: string): string {
  const rows = parseCsv(cleanCharacters(raw), delimiter ?? sniffDelimiter(raw));
  const flat = (v: string) => v.replace(/\s+/g, ' ').trim();
  const header = (rows[0] ?? []).map(flat);
  const out: string[] = [];
  for (const row of rows.slice(1)) {
    const cells = row.map(flat);
    const parts = cells.flatMap((v, i) => (v ? [`${header[i] || `column ${i + 1}`}: ${v}`] : []));
    if (parts.length > 0) out.push(parts.join(' | '));
  }
  // A file with only a header still says what its columns are.
  if (out.length === 0) return header.filter(Boolean).join(' | ');
  return out.join('\n');
}

// --- JSON ---

/**
 * JSON indented by two spaces, keys in their order, numbers exactly as written (no float
 * rounding of large integers), strings with their escapes resolved where JSON allows.
 * Invalid JSON is `corrupt_file`. JSON Lines: each record pretty-printed, a blank line between.
 */
export function jsonToText(raw: string, lineDelimited: boolean): string {
  const source = raw.replace(/^\uFEFF/, '');
  const records = lineDelimited ? source.split(/\r?\n/).filter((l) => l.trim() !== '') : [source];
  return records
    .map((record, i) => {
      try {
        JSON.parse(record);
      } catch {
        const where = lineDelimited ? ` (record ${i + 1})` : '';
        throw failure('corrupt_file', `The file is not valid JSON${where}.`);
      }
      return prettyJson(record);
    })
    .join('\n\n');
}

function prettyJson(src: string): string {
  const out: string[] = [];
  let indent = 0;
  const newline = () => `\n${'  '.repeat(indent)}`;
  let i = 0;
  while (i < src.length) {
    const c = src[i] as string;
    if (c === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== '"') j += src[j] === '\\' ? 2 : 1;
      const literal = src.slice(i, j + 1);
      out.push(literal.includes('\\u') ? JSON.stringify(JSON.parse(literal)) : literal);
      i = j + 1;
    } else if (c === '{' || c === '[') {
      let j = i + 1;
      while (/\s/.test(src[j] ?? '')) j++;
      if (src[j] === (c === '{' ? '}' : ']')) {
        out.push(c, src[j] as string);
        i = j + 1;
        continue;
      }
      indent++;
      out.push(c, newline());
      i++;
    } else if (c === '}' || c === ']') {
      indent--;
      out.push(newline(), c);
      i++;
    } else if (c === ',') {
      out.push(',', newline());
      i++;
    } else if (c === ':') {
      out.push(': ');
      i++;
    } else if (/\s/.test(c)) {
      i++;
    } else {
      let j = i;
      while (j < src.length && !/[\s,:\]}[{"]/.test(src[j] as string)) j++;
      out.push(src.slice(i, j));
      i = j;
    }
  }
  return cleanCharacters(out.join(''));
}
