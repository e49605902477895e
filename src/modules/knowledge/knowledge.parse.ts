/**
 * An uploaded file to the text a knowledge base indexes: `parseDocument`.
 *
 * Guarantees: the result's `text` is non-empty and clean (see knowledge.text.ts), and every
 * offset it carries (`sections`, `pages`) points into that exact string. The real type is
 * taken from the content (knowledge.detect.ts); formats are read by pure-JS libraries with
 * no install scripts and no outside access (PDF without eval or fonts, DOCX without external
 * files or images). Anything that cannot be parsed throws a `ParseFailure` with a stable code,
 * never an untyped error, and never with the file's content in its message. Limits on bytes,
 * unzipped bytes, pages and text length are checked before or while the work is done.
 */
import mammoth from 'mammoth';
import { getDocumentProxy } from 'unpdf';
import {
  type Claim,
  claimOf,
  containerOf,
  type DocumentKind,
  decodeText,
  ParseFailure,
  type ZipEntry,
  zipEntries,
} from './knowledge.detect.ts';
import { htmlToText } from './knowledge.html.ts';
import { csvToText, jsonToText } from './knowledge.structured.ts';
import { cleanCharacters, cleanText, findMarkdownHeadings, type Heading, type Range } from './knowledge.text.ts';

export {
  DOCUMENT_KINDS,
  type DocumentKind,
  PARSE_FAILURE_CODES,
  ParseFailure,
  type ParseFailureCode,
} from './knowledge.detect.ts';
export type { Heading, Range } from './knowledge.text.ts';

export type ParseLimits = {
  /** The file as uploaded. */
  maxBytes: number;
  /** The sum of a DOCX archive's declared uncompressed sizes (a zip bomb stops here). */
  maxUnzippedBytes: number;
  maxPages: number;
  /** The parsed text, in UTF-16 code units. */
  maxTextChars: number;
};

export const DEFAULT_PARSE_LIMITS: ParseLimits = {
  maxBytes: 50 * 1024 * 1024,
  maxUnzippedBytes: 256 * 1024 * 1024,
  maxPages: 2000,
  maxTextChars: 20_000_000,
};

export type ParsedDocument = {
  kind: DocumentKind;
  text: string;
  /** The document's own title (HTML `<title>`, PDF metadata, Markdown front matter or first `#`). */
  title?: string;
  /** Headings in reading order; a section runs from its `start` to the next section's. */
  sections?: Heading[];
  /** PDF: page `i + 1` is `text.slice(pages[i].start, pages[i].end)` (empty for a page without text). */
  pages?: Range[];
  /** Text formats: the encoding the bytes were decoded from. */
  encoding?: string;
  /** Source code: its language as the file's extension or name says (`ts`, `py`, `dockerfile`). */
  language?: string;
};

export type ParseInput = {
  bytes: Uint8Array;
  filename: string;
  /** The MIME type the uploader declared; used only to choose between text formats. */
  declaredType?: string;
  limits?: Partial<ParseLimits>;
};

const TEXT_KINDS = new Set<Claim['kind']>(['text', 'markdown', 'html', 'csv', 'json', 'code']);

const failure = (code: ParseFailure['code'], message: string) => new ParseFailure(code, message);

/** A binary file: mislabelled text is `binary_content`, anything else a type we do not read. */
function binaryFailure(claim: Claim, reason = 'This file type is not supported'): ParseFailure {
  if (TEXT_KINDS.has(claim.kind) || (claim.kind === 'unknown' && claim.extension === '')) {
    return failure('binary_content', 'The file is named as text but holds binary data.');
  }
  return failure('unsupported_type', `${reason}: upload text, Markdown, HTML, PDF, DOCX, CSV, JSON or source code.`);
}

/**
 * Parses one uploaded file.
 *
 * @example
 * const doc = await parseDocument({ bytes, filename: 'guide.md' });
 * // { kind: 'markdown', text: '# Guide\n\n...', sections: [{ level: 1, title: 'Guide', start: 0 }], title: 'Guide', encoding: 'utf-8' }
 */
export async function parseDocument(input: ParseInput): Promise<ParsedDocument> {
  const limits = { ...DEFAULT_PARSE_LIMITS, ...input.limits };
  const { bytes } = input;
  if (bytes.length === 0) throw failure('empty_file', 'The file is empty.');
  if (bytes.length > limits.maxBytes) {
    throw failure('file_too_large', `The file is larger than ${limits.maxBytes} bytes.`);
  }
  const claim = claimOf(input.filename, input.declaredType);
  const doc = await parseByContent(bytes, claim, limits);
  if (doc.text.trim() === '') {
    const hint = doc.kind === 'pdf' ? ' (a scanned PDF needs text recognition first)' : '';
    throw failure('no_text', `The file contains no text${hint}.`);
  }
  if (doc.text.length > limits.maxTextChars) {
    throw failure('file_too_large', `The text is longer than ${limits.maxTextChars} characters.`);
  }
  return doc;
}

async function parseByContent(bytes: Uint8Array, claim: Claim, limits: ParseLimits): Promise<ParsedDocument> {
  const container = containerOf(bytes);
  if (container === 'pdf') return parsePdf(bytes, limits);
  if (container === 'zip') {
    const entries = zipEntries(bytes);
    if (entries?.some((e) => e.name === 'word/document.xml')) return parseDocx(bytes, entries, limits);
    if (claim.kind === 'docx') throw failure('corrupt_file', 'The DOCX file is damaged: it has no readable document.');
    throw binaryFailure(claim, 'This kind of archive is not supported');
  }
  if (container === 'ole') {
    // Password-protected DOCX files are OLE containers, as are legacy .doc/.xls files.
    if (claim.kind === 'docx') throw failure('encrypted_file', 'The DOCX file is password-protected.');
    throw binaryFailure(claim, 'Legacy Office files (.doc, .xls, .ppt) are not supported');
  }
  if (claim.kind === 'pdf') throw failure('corrupt_file', 'The file is named as a PDF but is not one.');
  if (claim.kind === 'docx') throw failure('corrupt_file', 'The file is named as a DOCX document but is not one.');
  if (claim.kind === 'unsupported') throw binaryFailure(claim);
  let decoded: { text: string; encoding: string };
  try {
    decoded = decodeText(bytes);
  } catch (e) {
    if (e instanceof ParseFailure && e.code === 'binary_content') throw binaryFailure(claim);
    throw e;
  }
  const { text, encoding } = decoded;
  switch (textKind(claim, text)) {
    case 'markdown':
      return { ...parseMarkdown(text), encoding };
    case 'html': {
      const html = htmlToText(text);
      return { kind: 'html', text: html.text, sections: html.sections, encoding, ...titled(html.title) };
    }
    case 'csv':
      return { kind: 'csv', text: csvToText(text, claim.extension === 'tsv' ? '\t' : undefined), encoding };
    case 'json':
      return {
        kind: 'json',
        text: jsonToText(text, claim.extension === 'jsonl' || claim.extension === 'ndjson'),
        encoding,
      };
    case 'code':
      return { kind: 'code', text: codeText(text), encoding, language: claim.extension || claim.basename };
    default:
      return { kind: 'text', text: cleanText(text), encoding };
  }
}

const titled = (title: string | undefined) => (title ? { title } : {});

/** A text kind from the claim, or from the content when the name says nothing we know. */
function textKind(claim: Claim, text: string): DocumentKind {
  if (TEXT_KINDS.has(claim.kind)) return claim.kind as DocumentKind;
  const head = text.slice(0, 1024).trimStart();
  if (/^(?:<!doctype html|<html[\s>]|<head[\s>]|<body[\s>])/i.test(head)) return 'html';
  if (/^[[{]/.test(head)) {
    try {
      JSON.parse(text);
      return 'json';
    } catch {
      // not JSON after all: plain text
    }
  }
  return 'text';
}

// --- Markdown ---

const FRONT_MATTER = /^---[ \t]*\n([\s\S]*?)\n(?:---|\.\.\.)[ \t]*(?:\n|$)/;

function parseMarkdown(raw: string): ParsedDocument {
  let source = raw.replace(/\r\n?/g, '\n');
  let title: string | undefined;
  const front = FRONT_MATTER.exec(source);
  if (front) {
    const t = /^title:[ \t]*(.+?)[ \t]*$/m.exec(front[1] ?? '')?.[1];
    title = t?.replace(/^(["'])(.*)\1$/, '$2').trim() || undefined;
    source = source.slice(front[0].length);
  }
  const text = cleanText(source);
  const sections = findMarkdownHeadings(text);
  title ??= sections.find((s) => s.level === 1)?.title;
  return { kind: 'markdown', text, sections, ...titled(title) };
}

// --- Source code: kept as written ---

/** Source code with only its line endings made `\n` and trailing blank lines removed. */
function codeText(raw: string): string {
  return raw.replace(/\r\n?/g, '\n').replace(/\s+$/, '');
}

// --- PDF ---

type PdfTextItem = { str: string; hasEOL: boolean; transform: number[]; height: number };

/** A page's text: lines as the PDF ends them, a blank line where the vertical gap says a paragraph ends. */
function pageText(items: PdfTextItem[]): string {
  let out = '';
  let lineY: number | null = null;
  let lastHeight = 0;
  let atLineStart = true;
  for (const item of items) {
    const y = item.transform[5] ?? 0;
    if (atLineStart && lineY !== null && item.str.trim() !== '') {
      const gap = Math.abs(lineY - y);
      if (gap > 1.5 * Math.max(lastHeight, item.height, 1)) out += '\n';
    }
    if (item.str.trim() !== '') {
      lineY = y;
      lastHeight = item.height;
      atLineStart = false;
    }
    out += item.str;
    if (item.hasEOL) {
      out += '\n';
      atLineStart = true;
    }
  }
  return out;
}

async function parsePdf(bytes: Uint8Array, limits: ParseLimits): Promise<ParsedDocument> {
  let pdf: Awaited<ReturnType<typeof getDocumentProxy>>;
  try {
    pdf = await getDocumentProxy(new Uint8Array(bytes), {
      disableFontFace: true,
      useSystemFonts: false,
      verbosity: 0,
    });
  } catch (e) {
    throw pdfFailure(e);
  }
  try {
    if (pdf.numPages > limits.maxPages) {
      throw failure('file_too_large', `The PDF has more than ${limits.maxPages} pages.`);
    }
    let text = '';
    const pages: Range[] = [];
    for (let n = 1; n <= pdf.numPages; n++) {
      const page = await pdf.getPage(n);
      const content = await page.getTextContent();
      page.cleanup();
      const items = content.items.filter((i): i is PdfTextItem & typeof i => 'str' in i);
      const t = cleanText(pageText(items), { collapseSpaces: true });
      if (t && text) text += '\n\n';
      const start = text.length;
      text += t;
      pages.push({ start, end: text.length });
      if (text.length > limits.maxTextChars) {
        throw failure('file_too_large', `The text is longer than ${limits.maxTextChars} characters.`);
      }
    }
    const info = (await pdf.getMetadata().catch(() => null))?.info as { Title?: unknown } | undefined;
    const title = typeof info?.Title === 'string' ? cleanCharacters(info.Title).trim() : '';
    return { kind: 'pdf', text, pages, ...titled(title) };
  } catch (e) {
    throw pdfFailure(e);
  } finally {
    await pdf.loadingTask.destroy().catch(() => undefined);
  }
}

function pdfFailure(e: unknown): ParseFailure {
  if (e instanceof ParseFailure) return e;
  const name = (e as { name?: string } | null)?.name;
  if (name === 'PasswordException') return failure('encrypted_file', 'The PDF is password-protected.');
  return failure('corrupt_file', 'The PDF is damaged and could not be read.');
}

// --- DOCX ---

const DOCX_STYLE_MAP = ["p[style-name='Title'] => h1:fresh", "p[style-name='Subtitle'] => h2:fresh"];

async function parseDocx(bytes: Uint8Array, entries: ZipEntry[], limits: ParseLimits): Promise<ParsedDocument> {
  const unzipped = entries.reduce((n, e) => n + e.size, 0);
  if (unzipped > limits.maxUnzippedBytes) {
    throw failure('file_too_large', `The DOCX file unpacks to more than ${limits.maxUnzippedBytes} bytes.`);
  }
  let html: string;
  try {
    const result = await mammoth.convertToHtml(
      { buffer: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) },
      {
        styleMap: DOCX_STYLE_MAP,
        externalFileAccess: false,
        // Images are not indexed: do not decode them.
        convertImage: mammoth.images.imgElement(async () => ({ src: '' })),
      },
    );
    html = result.value;
  } catch {
    throw failure('corrupt_file', 'The DOCX file is damaged and could not be read.');
  }
  const { text, sections } = htmlToText(html);
  return { kind: 'docx', text, sections, ...titled(sections.find((s) => s.level === 1)?.title) };
}
