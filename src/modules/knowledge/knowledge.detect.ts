/**
 * What an uploaded file really is, and its bytes as text.
 *
 * Guarantees: the type comes from the content where the content can tell (PDF and ZIP
 * signatures, binary bytes), and from the name or declared type only to choose between text
 * formats; a binary file named as text fails as `binary_content`, whatever its name. Text is
 * decoded from a BOM, strict UTF-8, UTF-16 without a BOM, or the encoding a detector names
 * (Latin-1/Windows-1252, Shift_JIS, GB18030, EUC-*, Big5, ...) where that decoding is free of
 * errors; otherwise `encoding_unknown`. Failures never carry the file's content.
 */
import { analyse } from 'chardet';

export const DOCUMENT_KINDS = ['text', 'markdown', 'html', 'pdf', 'docx', 'csv', 'json', 'code'] as const;
export type DocumentKind = (typeof DOCUMENT_KINDS)[number];

export const PARSE_FAILURE_CODES = [
  'unsupported_type',
  'empty_file',
  'file_too_large',
  'binary_content',
  'corrupt_file',
  'encrypted_file',
  'encoding_unknown',
  'no_text',
] as const;
export type ParseFailureCode = (typeof PARSE_FAILURE_CODES)[number];

/**
 * Why a document could not be parsed: a stable code (stored as the document's failure
 * reason) and a message for its owner. Neither contains any of the document's content.
 *
 * @example if (e instanceof ParseFailure && e.code === 'corrupt_file') markFailed(doc, e.code)
 */
export class ParseFailure extends Error {
  readonly code: ParseFailureCode;
  constructor(code: ParseFailureCode, message: string) {
    super(message);
    this.name = 'ParseFailure';
    this.code = code;
  }
}

// --- What the name and the declared type claim ---

const CODE_EXTENSIONS = new Set(
  (
    'ts tsx mts cts js jsx mjs cjs py pyi rb go rs java kt kts scala sc c h cc cpp cxx hpp hh hxx cs fs swift m mm ' +
    'php pl pm r lua sh bash zsh fish ps1 psm1 bat cmd sql yaml yml toml ini cfg conf properties xml xsd css scss ' +
    'sass less vue svelte astro dart ex exs erl hrl hs ml mli clj cljs edn elm tf hcl proto graphql gql gradle ' +
    'groovy jl zig nim sol v vhd verilog asm s cmake mk diff patch'
  ).split(' '),
);
const CODE_FILENAMES = new Set([
  'dockerfile',
  'makefile',
  'gemfile',
  'rakefile',
  'justfile',
  'procfile',
  'vagrantfile',
]);

const EXTENSION_KINDS: Record<string, DocumentKind> = {
  txt: 'text',
  text: 'text',
  log: 'text',
  rst: 'text',
  adoc: 'text',
  org: 'text',
  md: 'markdown',
  markdown: 'markdown',
  mdx: 'markdown',
  mkd: 'markdown',
  html: 'html',
  htm: 'html',
  xhtml: 'html',
  pdf: 'pdf',
  docx: 'docx',
  csv: 'csv',
  tsv: 'csv',
  json: 'json',
  jsonl: 'json',
  ndjson: 'json',
  geojson: 'json',
};

const MIME_KINDS: Record<string, DocumentKind> = {
  'text/plain': 'text',
  'text/markdown': 'markdown',
  'text/x-markdown': 'markdown',
  'text/html': 'html',
  'application/xhtml+xml': 'html',
  'application/pdf': 'pdf',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document': 'docx',
  'text/csv': 'csv',
  'application/csv': 'csv',
  'text/tab-separated-values': 'csv',
  'application/json': 'json',
  'application/ld+json': 'json',
  'application/x-ndjson': 'json',
  'application/jsonl': 'json',
  'text/javascript': 'code',
  'application/javascript': 'code',
  'application/typescript': 'code',
  'application/x-sh': 'code',
  'application/xml': 'code',
  'text/xml': 'code',
  'application/yaml': 'code',
  'text/css': 'code',
  'application/sql': 'code',
};

/** What the file says it is: a kind, `unknown` (nothing said, or nothing we know) or `unsupported`. */
export type Claim = { kind: DocumentKind | 'unknown' | 'unsupported'; extension: string; basename: string };

export function claimOf(filename: string, declaredType?: string): Claim {
  const base = filename.split(/[\\/]/).pop()?.toLowerCase() ?? '';
  const dot = base.lastIndexOf('.');
  const extension = dot > 0 ? base.slice(dot + 1) : '';
  const claim = (kind: Claim['kind']): Claim => ({ kind, extension, basename: base });
  const byExtension = EXTENSION_KINDS[extension];
  if (byExtension) return claim(byExtension);
  if (CODE_EXTENSIONS.has(extension) || CODE_FILENAMES.has(base)) return claim('code');
  const mime = (declaredType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  const byMime = MIME_KINDS[mime];
  if (byMime) return claim(byMime);
  if (mime.startsWith('text/x-')) return claim('code');
  if (/^(image|audio|video|font|model)\//.test(mime)) return claim('unsupported');
  if (/^application\/(zip|gzip|x-tar|x-7z|vnd\.rar|msword|vnd\.ms-|vnd\.oasis|x-msdownload)/.test(mime)) {
    return claim('unsupported');
  }
  return claim('unknown');
}

// --- Containers recognised by their signature ---

export type ZipEntry = { name: string; size: number; compressedSize: number };

/**
 * The entries of a ZIP archive from its central directory, without inflating anything
 * (so a zip bomb can be refused by its declared sizes), or null when there is no readable
 * directory. ZIP64 archives (over 4 GiB or 65,535 entries) are not read.
 */
export function zipEntries(bytes: Uint8Array): ZipEntry[] | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (at: number) => view.getUint32(at, true);
  const u16 = (at: number) => view.getUint16(at, true);
  let eocd = -1;
  for (let at = bytes.length - 22; at >= Math.max(0, bytes.length - 22 - 65_535); at--) {
    if (u32(at) === 0x06054b50) {
      eocd = at;
      break;
    }
  }
  if (eocd < 0) return null;
  const count = u16(eocd + 10);
  const offset = u32(eocd + 16);
  if (count === 0xffff || offset === 0xffffffff) return null;
  const entries: ZipEntry[] = [];
  let at = offset;
  for (let i = 0; i < count; i++) {
    if (at + 46 > bytes.length || u32(at) !== 0x02014b50) return null;
    const nameLength = u16(at + 28);
    const end = at + 46 + nameLength;
    if (end > bytes.length) return null;
    entries.push({
      name: Buffer.from(bytes.subarray(at + 46, end)).toString('utf8'),
      compressedSize: u32(at + 20),
      size: u32(at + 24),
    });
    at = end + u16(at + 30) + u16(at + 32);
  }
  return entries;
}

const startsWith = (bytes: Uint8Array, sig: number[], at = 0) => sig.every((b, i) => bytes[at + i] === b);

/** The container the signature names: a PDF (its header may follow up to 1 KiB of junk), a ZIP, an OLE file. */
export function containerOf(bytes: Uint8Array): 'pdf' | 'zip' | 'ole' | null {
  const head = Buffer.from(bytes.subarray(0, 1024)).toString('latin1');
  if (head.includes('%PDF-')) return 'pdf';
  if (startsWith(bytes, [0x50, 0x4b, 0x03, 0x04]) || startsWith(bytes, [0x50, 0x4b, 0x05, 0x06])) return 'zip';
  if (startsWith(bytes, [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1])) return 'ole';
  return null;
}

// --- Bytes to text ---

/**
 * Does this look like binary data rather than text in a single-byte or UTF-8 encoding? NUL
 * bytes, or more than 1% control bytes other than tab, newlines, form feed and escape, in
 * the first 64 KiB.
 */
export function looksBinary(bytes: Uint8Array): boolean {
  const n = Math.min(bytes.length, 65_536);
  let controls = 0;
  for (let i = 0; i < n; i++) {
    const b = bytes[i] as number;
    if (b === 0) return true;
    if (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d && b !== 0x0c && b !== 0x1b) controls++;
  }
  return controls > n / 100;
}

/** UTF-16 without a BOM: in mostly-ASCII text every other byte is zero. */
function utf16WithoutBom(bytes: Uint8Array): 'utf-16le' | 'utf-16be' | null {
  const n = Math.min(bytes.length, 4096) & ~1;
  if (n < 4) return null;
  let evenZeros = 0;
  let oddZeros = 0;
  for (let i = 0; i < n; i += 2) {
    if (bytes[i] === 0) evenZeros++;
    if (bytes[i + 1] === 0) oddZeros++;
  }
  const pairs = n / 2;
  if (oddZeros > pairs * 0.4 && evenZeros < pairs * 0.05) return 'utf-16le';
  if (evenZeros > pairs * 0.4 && oddZeros < pairs * 0.05) return 'utf-16be';
  return null;
}

// Windows-1252's characters for 0x80-0x9F (the five it leaves undefined stay C1 controls).
const CP1252_HIGH =
  '\u20AC\u0081\u201A\u0192\u201E\u2026\u2020\u2021\u02C6\u2030\u0160\u2039\u0152\u008D\u017D\u008F' +
  '\u0090\u2018\u2019\u201C\u201D\u2022\u2013\u2014\u02DC\u2122\u0161\u203A\u0153\u009D\u017E\u0178';

/** Decodes strictly; null when the bytes are not valid in `label` or the runtime lacks it. */
function tryDecode(label: string, bytes: Uint8Array): string | null {
  if (label === 'windows-1252') {
    // Node 20's TextDecoder decodes windows-1252 as ISO-8859-1 (0x80-0x9F become C1
    // controls); map that range ourselves (a no-op where the runtime gets it right).
    return new TextDecoder('windows-1252')
      .decode(bytes)
      .replace(/[\u0080-\u009F]/g, (c) => CP1252_HIGH[c.charCodeAt(0) - 0x80] ?? c);
  }
  try {
    return new TextDecoder(label, { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return null;
  }
}

// Bytes Windows-1252 leaves undefined: text with them is in some other encoding.
const CP1252_UNDEFINED = new Set([0x81, 0x8d, 0x8f, 0x90, 0x9d]);

/**
 * The text of a file that is not binary. Throws `binary_content` for binary data and
 * `encoding_unknown` when no encoding decodes it cleanly.
 */
export function decodeText(bytes: Uint8Array): { text: string; encoding: string } {
  if (startsWith(bytes, [0xef, 0xbb, 0xbf])) return decodeAs('utf-8', bytes);
  if (startsWith(bytes, [0xff, 0xfe, 0x00, 0x00]) || startsWith(bytes, [0x00, 0x00, 0xfe, 0xff])) {
    throw new ParseFailure('encoding_unknown', 'UTF-32 text is not supported; save the file as UTF-8.');
  }
  if (startsWith(bytes, [0xff, 0xfe])) return decodeAs('utf-16le', bytes);
  if (startsWith(bytes, [0xfe, 0xff])) return decodeAs('utf-16be', bytes);
  const utf16 = utf16WithoutBom(bytes);
  if (utf16) {
    const text = tryDecode(utf16, bytes);
    if (text !== null) return { text, encoding: utf16 };
  }
  if (looksBinary(bytes)) throw new ParseFailure('binary_content', 'The file holds binary data, not text.');
  const head = Buffer.from(bytes.subarray(0, 4096)).toString('latin1');
  // ISO-2022-JP is 7-bit: its escape sequences are what tell it from ASCII.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape byte is what is looked for
  if (/\x1b\$[@B]|\x1b\(J/.test(head)) {
    const text = tryDecode('iso-2022-jp', bytes);
    if (text !== null) return { text, encoding: 'iso-2022-jp' };
  }
  const utf8 = tryDecode('utf-8', bytes);
  if (utf8 !== null) return { text: utf8, encoding: 'utf-8' };
  const sample = bytes.length > 262_144 ? bytes.subarray(0, 262_144) : bytes;
  for (const match of analyse(sample)) {
    if (match.confidence < 10 || match.name === 'UTF-8' || match.name === 'ASCII') continue;
    // WHATWG decodes ISO-8859-1 as Windows-1252, its superset; say which one was used.
    const label = match.name === 'ISO-8859-1' ? 'windows-1252' : match.name.toLowerCase();
    const text = tryDecode(label, bytes);
    // Single-byte decoders map the bytes an encoding leaves undefined to C1 controls.
    if (text !== null && !/[\uFFFD\u0080-\u009F]/.test(text)) return { text, encoding: label };
  }
  // Short Latin text gives a detector too little to go on; Windows-1252 is the usual answer
  // when every byte is one it defines.
  if (!bytes.some((b) => CP1252_UNDEFINED.has(b))) {
    const text = tryDecode('windows-1252', bytes);
    if (text !== null) return { text, encoding: 'windows-1252' };
  }
  throw new ParseFailure('encoding_unknown', 'The text encoding could not be recognised; save the file as UTF-8.');
}

function decodeAs(label: string, bytes: Uint8Array): { text: string; encoding: string } {
  const text = tryDecode(label, bytes);
  if (text === null) throw new ParseFailure('encoding_unknown', `The file is not valid ${label.toUpperCase()} text.`);
  return { text, encoding: label };
}
