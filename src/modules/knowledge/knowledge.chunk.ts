/**
 * Token-aware chunking of a parsed document: `chunkDocument`.
 *
 * Guarantees, for every chunk of a document's text:
 * - `text.slice(chunk.start, chunk.end) === chunk.text`; it ends with a non-space character
 *   and begins with one (a line of code, CSV or JSON keeps its indentation); together the
 *   chunks cover every non-space character of the text;
 * - `chunk.tokens` is the chunk's exact token count (cl100k_base, the tokenizer of OpenAI's
 *   embedding models; for other models it is a close estimate) and is at most `targetTokens`;
 * - a chunk never spans two sections: it carries the heading path of its section (for
 *   citations), and splits fall at headings first, then blocks (paragraphs, code blocks,
 *   lists, blank-line-separated code), then sentences (`.!?` followed by space, and `。！？`,
 *   which need none), then words or, in text without spaces, characters;
 * - a fenced code block is never split unless it alone exceeds `targetTokens` (then at line
 *   ends, and a line longer than that at word or character boundaries);
 * - consecutive chunks of a section overlap by at most `overlapTokens` (prose sentences or
 *   words, or whole lines of code/CSV/JSON; never part of a fenced code block), and each
 *   chunk reaches past the previous one's end.
 */
import { countTokens as countCl100k, isWithinTokenLimit } from 'gpt-tokenizer/encoding/cl100k_base';
import { z } from 'zod';
import type { DocumentKind } from './knowledge.detect.ts';
import { findFences, type Heading, inRanges, lines, type Range } from './knowledge.text.ts';

// Text such as `<|endoftext|>` in a document is text, not a special token.
const PLAIN = { disallowedSpecial: new Set<string>() };

/** Tokens in `text` as cl100k_base counts them. */
export function countTokens(text: string): number {
  return countCl100k(text, PLAIN);
}

const fits = (text: string, limit: number) => isWithinTokenLimit(text, limit, PLAIN) !== false;

export const ChunkSettings = z
  .object({
    targetTokens: z.number().int().min(64).max(8192),
    overlapTokens: z.number().int().min(0).max(4096),
  })
  .refine((s) => s.overlapTokens <= s.targetTokens / 2, {
    message: 'overlapTokens must be at most half of targetTokens',
    path: ['overlapTokens'],
  });
export type ChunkSettings = z.infer<typeof ChunkSettings>;

export const DEFAULT_CHUNK_SETTINGS: ChunkSettings = { targetTokens: 512, overlapTokens: 64 };

export type Chunk = {
  index: number;
  start: number;
  end: number;
  text: string;
  tokens: number;
  /** Titles of the headings the chunk is under, outermost first (empty before the first heading). */
  headingPath: string[];
};

export type ChunkInput = { text: string; kind?: DocumentKind; sections?: Heading[] };

type Piece = {
  start: number;
  end: number;
  tokens: number;
  /** May be repeated at the start of the next chunk. */
  overlap: boolean;
  /** Starts a paragraph, code block or blank-line-separated group: the preferred place to split. */
  blockStart: boolean;
};

type Span = Range & { path: string[] };

// Kinds whose structure is lines (rows, records, statements) rather than sentences.
const LINE_KINDS = new Set<DocumentKind>(['code', 'csv', 'json']);

/**
 * Splits a parsed document into chunks for indexing.
 *
 * @example
 * const chunks = chunkDocument(await parseDocument({ bytes, filename }), { targetTokens: 512, overlapTokens: 64 });
 * // [{ index: 0, start: 0, end: 1834, text: '# Guide\n\n...', tokens: 498, headingPath: ['Guide'] }, ...]
 */
export function chunkDocument(doc: ChunkInput, settings: ChunkSettings = DEFAULT_CHUNK_SETTINGS): Chunk[] {
  const { targetTokens: target, overlapTokens } = ChunkSettings.parse(settings);
  const { text } = doc;
  const byLines = doc.kind !== undefined && LINE_KINDS.has(doc.kind);
  const fences = byLines ? [] : findFences(text);
  const chunks: Chunk[] = [];
  const count = memoCount();
  for (const span of sectionSpans(text, byLines ? [] : (doc.sections ?? []))) {
    const limits = { target, split: target - overlapTokens, count };
    const pieces = byLines ? linePieces(text, span, limits) : prosePieces(text, span, fences, limits);
    packSpan(text, span, pieces, target, overlapTokens, byLines, chunks);
  }
  return chunks;
}

// --- Sections ---

/** The text cut at its headings, each part with its heading path; a heading with nothing under it but deeper headings joins the next part. */
function sectionSpans(text: string, sections: Heading[]): Span[] {
  const heads = sections.filter((s) => s.start >= 0 && s.start < text.length).sort((a, b) => a.start - b.start);
  const stack: Heading[] = [];
  const spans: (Span & { level: number; headingOnly: boolean })[] = [];
  const first = heads[0];
  if (!first || first.start > 0) {
    spans.push({ start: 0, end: first?.start ?? text.length, path: [], level: 0, headingOnly: false });
  }
  heads.forEach((h, i) => {
    while ((stack.at(-1)?.level ?? 0) >= h.level) stack.pop();
    stack.push(h);
    const end = heads[i + 1]?.start ?? text.length;
    const lineEnd = text.indexOf('\n', h.start);
    const body =
      lineEnd < 0 || lineEnd >= end ? '' : text.slice(lineEnd, end).replace(/^\n[ \t]*(=+|-+)[ \t]*(?=\n|$)/, '');
    spans.push({
      start: h.start,
      end,
      path: stack.map((s) => s.title),
      level: h.level,
      headingOnly: body.trim() === '',
    });
  });
  const out: Span[] = [];
  let carried: number | null = null;
  spans.forEach((span, i) => {
    const next = spans[i + 1];
    if (span.headingOnly && next && next.level > span.level) {
      carried ??= span.start;
      return;
    }
    out.push({ start: carried ?? span.start, end: span.end, path: span.path });
    carried = null;
  });
  return out;
}

// --- Pieces ---

const SENTENCE_END = /[.!?…]+["'”’)\]]*(?=\s|$)|[。！？｡]+[」』”’）)\]]*/g;
// A line that starts a new unit even without a blank line before it.
const LINE_START_UNIT = /^[ \t]*(?:[-*+•][ \t]|\d+[.)][ \t]|#{1,6}(?:[ \t]|$)|>|\|)/;
const SETEXT_UNDERLINE = /^[ \t]*(?:=+|-+)[ \t]*$/;

/** Trimmed `[start, end)`: without the whitespace at either end (null when nothing is left). */
function trimmed(text: string, start: number, end: number): Range | null {
  let s = start;
  let e = end;
  while (s < e && /\s/.test(text[s] as string)) s++;
  while (e > s && /\s/.test(text[e - 1] as string)) e--;
  return s < e ? { start: s, end: e } : null;
}

type Limits = { target: number; split: number; count: (s: string) => number };

/**
 * `countTokens` remembering short strings: code, CSV and JSON repeat many lines (`},`,
 * `return x;`), and most of their chunking time is counting them one by one.
 */
function memoCount(): (s: string) => number {
  const seen = new Map<string, number>();
  return (s) => {
    if (s.length > 64) return countTokens(s);
    let n = seen.get(s);
    if (n === undefined) {
      n = countTokens(s);
      seen.set(s, n);
    }
    return n;
  };
}

/**
 * A range as one piece when it fits the target, or cut into parts of at most `split` tokens
 * (the target less the overlap, so that parts of one long sentence can still overlap).
 */
function piece(text: string, r: Range, limits: Limits, overlap: boolean, blockStart: boolean): Piece[] {
  const tokens = limits.count(text.slice(r.start, r.end));
  if (tokens <= limits.target) return [{ ...r, tokens, overlap, blockStart }];
  return hardSplit(text, r, limits.split).map((part, i) => ({
    ...part,
    tokens: countTokens(text.slice(part.start, part.end)),
    overlap,
    blockStart: blockStart && i === 0,
  }));
}

/** Prose: code blocks whole (or by lines when too big), paragraphs by sentences. */
function prosePieces(text: string, span: Span, fences: Range[], limits: Limits): Piece[] {
  const out: Piece[] = [];
  const spanLines = lines(text.slice(span.start, span.end)).map((l) => ({
    start: l.start + span.start,
    end: l.end + span.start,
  }));
  let i = 0;
  while (i < spanLines.length) {
    const line = spanLines[i] as Range;
    if (inRanges(fences, line.start)) {
      const fence = fences.find((f) => f.start <= line.start && line.start < f.end) as Range;
      const end = Math.min(fence.end, span.end);
      const whole = trimmed(text, line.start, end);
      if (whole) {
        const tokens = countTokens(text.slice(whole.start, whole.end));
        if (tokens <= limits.target) out.push({ ...whole, tokens, overlap: false, blockStart: true });
        else {
          let first = true;
          while (i < spanLines.length && (spanLines[i] as Range).start < end) {
            const l = trimmed(text, (spanLines[i] as Range).start, (spanLines[i] as Range).end);
            if (l) out.push(...piece(text, l, limits, false, first));
            first = false;
            i++;
          }
          continue;
        }
      }
      while (i < spanLines.length && (spanLines[i] as Range).start < end) i++;
      continue;
    }
    if (text.slice(line.start, line.end).trim() === '') {
      i++;
      continue;
    }
    // A paragraph: non-blank lines up to a blank line or a fence.
    let j = i;
    while (
      j < spanLines.length &&
      text.slice((spanLines[j] as Range).start, (spanLines[j] as Range).end).trim() !== '' &&
      !inRanges(fences, (spanLines[j] as Range).start)
    ) {
      j++;
    }
    let first = true;
    for (const unit of lineUnits(text, spanLines.slice(i, j))) {
      for (const sentence of sentences(text, unit)) {
        out.push(...piece(text, sentence, limits, true, first));
        first = false;
      }
    }
    i = j;
  }
  return out;
}

/** A paragraph's lines grouped: list items, quotes, table rows and headings stand alone. */
function lineUnits(text: string, paragraph: Range[]): Range[] {
  const units: Range[] = [];
  let current: Range | null = null;
  let afterHeading = false;
  for (const line of paragraph) {
    const s = text.slice(line.start, line.end);
    const isHeading = /^[ \t]{0,3}#{1,6}(?:[ \t]|$)/.test(s);
    if (current && (LINE_START_UNIT.test(s) || afterHeading) && !SETEXT_UNDERLINE.test(s)) {
      units.push(current);
      current = null;
    }
    current = current ? { start: current.start, end: line.end } : { ...line };
    afterHeading = isHeading || SETEXT_UNDERLINE.test(s);
  }
  if (current) units.push(current);
  return units;
}

/** Sentences of a unit of prose, trimmed. */
function sentences(text: string, unit: Range): Range[] {
  const s = text.slice(unit.start, unit.end);
  const out: Range[] = [];
  let from = 0;
  for (const m of s.matchAll(SENTENCE_END)) {
    const end = (m.index ?? 0) + m[0].length;
    const r = trimmed(text, unit.start + from, unit.start + end);
    if (r) out.push(r);
    from = end;
  }
  const rest = trimmed(text, unit.start + from, unit.end);
  if (rest) out.push(rest);
  return out;
}

/** Code, CSV and JSON: one piece per line, a blank line marking a block. */
function linePieces(text: string, span: Span, limits: Limits): Piece[] {
  const out: Piece[] = [];
  let blank = true;
  for (const l of lines(text.slice(span.start, span.end))) {
    const r = trimmed(text, span.start + l.start, span.start + l.end);
    if (!r) {
      blank = true;
      continue;
    }
    // Keep the line's indentation: a chunk that starts with it reads as the code does.
    const start = span.start + l.start;
    out.push(...piece(text, { start: Math.min(start, r.start), end: r.end }, limits, true, blank));
    blank = false;
  }
  return out;
}

const CJK = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]/u;
const SOFT_BREAK = /[\s、，,;；：:]/;

/** Cuts a range longer than `limit` tokens into parts of at most `limit`, at spaces or soft punctuation where it can. */
function hardSplit(text: string, r: Range, limit: number): Range[] {
  const out: Range[] = [];
  let s = r.start;
  while (s < r.end) {
    const cap = Math.min(r.end, s + limit * 32);
    let k = cap;
    if (!fits(text.slice(s, cap), limit)) {
      let lo = s + 1;
      let hi = cap;
      // The largest k with text.slice(s, k) within the limit.
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (fits(text.slice(s, mid), limit)) lo = mid;
        else hi = mid - 1;
      }
      k = lo;
      // Prefer a soft break in the second half of the part.
      for (let b = k; b > s + (k - s) / 2; b--) {
        if (SOFT_BREAK.test(text[b - 1] as string)) {
          k = b;
          break;
        }
      }
    }
    k = safeBoundary(text, k, s);
    let part = trimmed(text, s, k);
    // Counts are not strictly monotonic under BPE: step back until the part really fits.
    while (part && k > s + 1 && !fits(text.slice(part.start, part.end), limit)) {
      k = safeBoundary(text, k - 1, s);
      part = trimmed(text, s, k);
    }
    if (part) out.push(part);
    s = k;
    while (s < r.end && /\s/.test(text[s] as string)) s++;
  }
  return out;
}

/** `k` moved back off the middle of a surrogate pair (never to `min` or before). */
function safeBoundary(text: string, k: number, min: number): number {
  const code = text.charCodeAt(k);
  if (k > min + 1 && k < text.length && code >= 0xdc00 && code <= 0xdfff) return k - 1;
  return k;
}

// --- Packing ---

function gapCost(text: string, from: number, to: number): number {
  return text.slice(from, to).includes('\n') ? 1 : 0;
}

/**
 * Where the next chunk starts so that it repeats at most `budget` tokens of the chunk that
 * ended at `end`: whole trailing pieces that may overlap, or (prose) the words at the end of
 * the last one. Never the whole previous chunk. Null for no overlap.
 */
function overlapStart(
  text: string,
  prev: Piece[],
  chunkStart: number,
  end: number,
  budget: number,
  byLines: boolean,
): number | null {
  if (budget <= 0) return null;
  let best: number | null = null;
  for (let j = prev.length - 1; j >= 1; j--) {
    const p = prev[j] as Piece;
    if (!p.overlap || !fits(text.slice(p.start, end), budget)) break;
    best = p.start;
  }
  const last = prev.at(-1) as Piece;
  if (best !== null || byLines || !last.overlap) return best;
  // Part of the last sentence: the longest suffix within the budget, by binary search,
  // starting at a word (or anywhere in a piece with no spaces, such as a cut-up long word).
  const hasSpace = /\s/.test(text.slice(last.start, last.end));
  const align = (pos: number) => (hasSpace ? wordStart(text, pos, last.end) : safeBoundary(text, pos, last.start));
  let lo = Math.max(last.start, chunkStart) + 1;
  let hi = last.end;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (fits(text.slice(align(mid), end), budget)) hi = mid;
    else lo = mid + 1;
  }
  const start = align(lo);
  return start < last.end ? start : null;
}

/** The first position at or after `pos` where a word (or a CJK character) begins. */
function wordStart(text: string, pos: number, limit: number): number {
  let p = pos;
  const startsWord = (i: number) =>
    !/\s/.test(text[i] as string) && (i === 0 || /\s/.test(text[i - 1] as string) || CJK.test(text[i] as string));
  while (p < limit && !startsWord(p)) p++;
  const code = text.charCodeAt(p);
  return code >= 0xdc00 && code <= 0xdfff ? p + 1 : p;
}

function packSpan(
  text: string,
  span: Span,
  pieces: Piece[],
  target: number,
  overlapTokens: number,
  byLines: boolean,
  chunks: Chunk[],
): void {
  // Tokens of each block from a piece to the block's end (for splitting at blocks).
  const blockRest = new Array<number>(pieces.length).fill(0);
  for (let i = pieces.length - 1; i >= 0; i--) {
    const p = pieces[i] as Piece;
    const next = pieces[i + 1];
    blockRest[i] = p.tokens + (next && !next.blockStart ? 1 + (blockRest[i + 1] ?? 0) : 0);
  }
  let previous: { pieces: Piece[]; start: number; end: number } | null = null;
  let i = 0;
  while (i < pieces.length) {
    const first = pieces[i] as Piece;
    let start = first.start;
    let used = first.tokens;
    if (previous) {
      const budget = Math.min(overlapTokens, target - first.tokens - 2);
      const ov = overlapStart(text, previous.pieces, previous.start, previous.end, budget, byLines);
      if (ov !== null && ov < first.start) {
        start = ov;
        used = countTokens(text.slice(ov, first.start)) + first.tokens;
      }
    }
    let j = i + 1;
    for (; j < pieces.length; j++) {
      const p = pieces[j] as Piece;
      const cost = p.tokens + gapCost(text, (pieces[j - 1] as Piece).end, p.start);
      if (used + cost > target) break;
      // At a block boundary, a half-full chunk ends rather than cut the next block.
      if (p.blockStart && used >= target / 2 && used + (blockRest[j] ?? 0) > target) break;
      used += cost;
    }
    // The estimate above adds pieces' counts; the chunk's real count decides.
    let end = (pieces[j - 1] as Piece).end;
    let tokens = countTokens(text.slice(start, end));
    while (tokens > target) {
      if (start < first.start) start = first.start;
      else j--;
      end = (pieces[j - 1] as Piece).end;
      tokens = countTokens(text.slice(start, end));
    }
    chunks.push({ index: chunks.length, start, end, text: text.slice(start, end), tokens, headingPath: span.path });
    previous = { pieces: pieces.slice(i, j), start, end };
    i = j;
  }
}
