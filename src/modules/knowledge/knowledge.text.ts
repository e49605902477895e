/**
 * Text helpers shared by parsing and chunking: cleaning a document's text, finding fenced
 * code blocks and Markdown headings in it.
 *
 * Guarantees: `cleanText` only removes or rewrites whitespace, invisible and control
 * characters and applies NFC; inside a fenced code block it changes nothing but line endings
 * and control characters (indentation, tabs and blank lines survive). `findFences` and
 * `findMarkdownHeadings` return offsets into the string they are given, so callers run them
 * on the final text.
 */

export type Range = { start: number; end: number };

/** A heading in the final text: `start` is where its line begins, `title` its plain text. */
export type Heading = { level: number; title: string; start: number };

/** One line of a text: `[start, end)` excludes the newline. */
export type Line = { start: number; end: number };

/** Every line of `text`, in order (an empty text has one empty line). */
export function lines(text: string): Line[] {
  const out: Line[] = [];
  let pos = 0;
  for (;;) {
    const nl = text.indexOf('\n', pos);
    if (nl < 0) {
      out.push({ start: pos, end: text.length });
      return out;
    }
    out.push({ start: pos, end: nl });
    pos = nl + 1;
  }
}

const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})(.*)$/;

/**
 * Fenced code blocks (``` or ~~~, CommonMark's rules: the closing fence uses the same
 * character, at least as many, and nothing after it). A fence left open runs to the end.
 * Each range runs from the opening line's start to the closing line's end.
 */
export function findFences(text: string, within: Range = { start: 0, end: text.length }): Range[] {
  const out: Range[] = [];
  let open: { start: number; char: string; length: number } | null = null;
  for (const line of lines(text.slice(within.start, within.end))) {
    const s = text.slice(within.start + line.start, within.start + line.end);
    if (open) {
      const close = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(s);
      const fence = close?.[1];
      if (fence && fence[0] === open.char && fence.length >= open.length) {
        out.push({ start: open.start, end: within.start + line.end });
        open = null;
      }
      continue;
    }
    const m = FENCE_OPEN.exec(s);
    const fence = m?.[1];
    // A backtick fence's info string may not contain a backtick (that is inline code).
    if (fence && !(fence[0] === '`' && (m?.[2] ?? '').includes('`'))) {
      open = { start: within.start + line.start, char: fence[0] ?? '`', length: fence.length };
    }
  }
  if (open) out.push({ start: open.start, end: within.end });
  return out;
}

/** Is `pos` inside one of the sorted, disjoint `ranges`? */
export function inRanges(ranges: Range[], pos: number): boolean {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = ranges[mid] as Range;
    if (pos < r.start) hi = mid - 1;
    else if (pos >= r.end) lo = mid + 1;
    else return true;
  }
  return false;
}

const INVISIBLE = /[\u200B\u2060\uFEFF\u00AD]/g;
// C0 controls except tab and newline, DEL, and C1 controls (left behind by wrong decodings).
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/g;

/** Line endings to `\n`, invisible and control characters removed, NFC. No other change. */
export function cleanCharacters(text: string): string {
  return text
    .replace(/\r\n?|[\u2028\u2029\f\v]/g, '\n')
    .replace(INVISIBLE, '')
    .replace(CONTROL, '')
    .normalize('NFC');
}

/**
 * The text a document is indexed as. Outside fenced code: trailing spaces trimmed, non-breaking
 * spaces made plain, runs of blank lines made one, and with `collapseSpaces` (text that came
 * out of a layout: PDF) runs of spaces and tabs made one space. Inside fences, lines are kept.
 * Leading and trailing blank lines are removed.
 */
export function cleanText(raw: string, options: { collapseSpaces?: boolean } = {}): string {
  const text = cleanCharacters(raw);
  const fences = findFences(text);
  const out: string[] = [];
  let blank = 0;
  for (const line of lines(text)) {
    let s = text.slice(line.start, line.end);
    if (!inRanges(fences, line.start)) {
      s = s.replace(/\u00A0/g, ' ').trimEnd();
      if (options.collapseSpaces) s = s.replace(/[ \t]{2,}/g, ' ').trimStart();
      if (s === '') {
        blank++;
        continue;
      }
    }
    if (blank > 0 && out.length > 0) out.push('');
    blank = 0;
    out.push(s);
  }
  return out.join('\n');
}

const ATX = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const SETEXT = /^ {0,3}(=+|-+)[ \t]*$/;
const NOT_A_TITLE = /^ {0,3}(?:[-*+>|]|\d+[.)]\s|#|`{3}|~{3})/;

/** Heading text without the emphasis and code marks Markdown puts around it. */
export function plainTitle(raw: string): string {
  return raw
    .replace(/`+/g, '')
    .replace(/(\*\*|__)(.+?)\1/g, '$2')
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .trim();
}

/** ATX (`## Title`) and setext (`Title` over `===`/`---`) headings outside fenced code. */
export function findMarkdownHeadings(text: string): Heading[] {
  const fences = findFences(text);
  const all = lines(text);
  const out: Heading[] = [];
  for (let i = 0; i < all.length; i++) {
    const line = all[i] as Line;
    if (inRanges(fences, line.start)) continue;
    const s = text.slice(line.start, line.end);
    const atx = ATX.exec(s);
    if (atx) {
      const title = plainTitle(atx[2] ?? '');
      if (title) out.push({ level: (atx[1] ?? '#').length, title, start: line.start });
      continue;
    }
    // Setext: a one-line paragraph underlined. The line before the title must be blank (or
    // the start), so a `---` rule under a longer paragraph is not read as a heading.
    const next = all[i + 1];
    const prev = all[i - 1];
    if (!next || s.trim() === '' || NOT_A_TITLE.test(s) || inRanges(fences, next.start)) continue;
    if (prev && text.slice(prev.start, prev.end).trim() !== '') continue;
    const underline = SETEXT.exec(text.slice(next.start, next.end));
    if (underline) {
      const title = plainTitle(s);
      if (title) out.push({ level: underline[1]?.startsWith('=') ? 1 : 2, title, start: line.start });
      i++;
    }
  }
  return out;
}
