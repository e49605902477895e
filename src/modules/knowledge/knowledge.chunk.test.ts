import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Chunk, type ChunkInput, type ChunkSettings, chunkDocument, countTokens } from './knowledge.chunk.ts';
import { cleanText, findFences, findMarkdownHeadings, type Heading } from './knowledge.text.ts';

const markdown = (source: string): ChunkInput => {
  const text = cleanText(source);
  return { text, kind: 'markdown', sections: findMarkdownHeadings(text) };
};

/** The heading path at `pos`: the titles of the enclosing headings, outermost first. */
function pathAt(sections: Heading[], pos: number): string[] {
  const stack: Heading[] = [];
  for (const h of sections) {
    if (h.start > pos) break;
    while ((stack.at(-1)?.level ?? 0) >= h.level) stack.pop();
    stack.push(h);
  }
  return stack.map((h) => h.title);
}

/** Is `text[from, to)` nothing but heading lines (and blank lines)? */
function onlyHeadings(text: string, sections: Heading[], from: number, to: number): boolean {
  let rest = '';
  let pos = from;
  for (const s of sections.filter((h) => h.start >= from && h.start < to)) {
    rest += text.slice(pos, s.start);
    let end = text.indexOf('\n', s.start);
    if (end < 0 || end > to) end = to;
    const underline = text.slice(end + 1, to).split('\n')[0] ?? '';
    if (/^\s*(=+|-+)\s*$/.test(underline)) end += 1 + underline.length;
    pos = Math.min(end, to);
  }
  rest += text.slice(pos, to);
  return rest.trim() === '';
}

/** Does `pos` begin a line, indentation aside? */
const atLineStart = (text: string, pos: number) =>
  /^[ \t]*$/.test(text.slice(text.lastIndexOf('\n', pos - 1) + 1, pos));

/** Every guarantee the chunker states, checked on one document. */
function checkChunks(doc: ChunkInput, settings: ChunkSettings, chunks: Chunk[]) {
  const { text } = doc;
  const sections = [...(doc.sections ?? [])].sort((a, b) => a.start - b.start);
  const lineKind = doc.kind === 'code' || doc.kind === 'csv' || doc.kind === 'json';
  chunks.forEach((c, i) => {
    expect(c.index).toBe(i);
    // Exact offsets, and exact counts within the limit.
    expect(text.slice(c.start, c.end)).toBe(c.text);
    expect(c.text.trim()).not.toBe('');
    expect(c.text).toBe(lineKind ? c.text.trimEnd() : c.text.trim());
    expect(c.tokens).toBe(countTokens(c.text));
    expect(c.tokens).toBeLessThanOrEqual(settings.targetTokens);
    // The chunk lies in its section: no heading after its start, except headings with only
    // deeper headings between them and the chunk's own section (which is the deepest).
    if (!lineKind) {
      expect(c.headingPath).toEqual(pathAt(sections, c.end - 1));
      for (const h of sections.filter((s) => s.start > c.start && s.start < c.end)) {
        expect(onlyHeadings(text, sections, c.start, h.start)).toBe(true);
      }
    }
  });
  // Coverage: every non-space character is in some chunk.
  const covered = new Uint8Array(text.length);
  for (const c of chunks) covered.fill(1, c.start, c.end);
  for (let i = 0; i < text.length; i++) {
    if (!/\s/.test(text[i] as string) && !covered[i]) throw new Error(`character ${i} of the text is in no chunk`);
  }
  // Overlap: within a section, at most overlapTokens, and every chunk goes past the previous.
  for (let i = 1; i < chunks.length; i++) {
    const a = chunks[i - 1] as Chunk;
    const b = chunks[i] as Chunk;
    expect(b.start).toBeGreaterThan(a.start);
    expect(b.end).toBeGreaterThan(a.end);
    if (b.start < a.end) {
      expect(b.headingPath).toEqual(a.headingPath);
      expect(countTokens(text.slice(b.start, a.end))).toBeLessThanOrEqual(settings.overlapTokens);
    }
  }
  // Fenced code that fits is never cut: every chunk holds all of it or none of it.
  if (!lineKind) {
    for (const f of findFences(text)) {
      if (countTokens(text.slice(f.start, f.end)) > settings.targetTokens) continue;
      for (const c of chunks) {
        const overlaps = c.start < f.end && f.start < c.end;
        if (overlaps) expect(c.start <= f.start && f.end <= c.end).toBe(true);
      }
    }
  }
}

const chunkAndCheck = (doc: ChunkInput, settings: ChunkSettings) => {
  const chunks = chunkDocument(doc, settings);
  checkChunks(doc, settings, chunks);
  return chunks;
};

// --- Generated documents ---

const LATIN = 'the a retrieval knowledge agent search fast small index chunk answer citation model token Berth'.split(
  ' ',
);
const CJK_CHARS = [...'日本語文章検索知識図書館東京大学情報処理中文测试北京数据库'];

const latinSentence = fc
  .array(fc.constantFrom(...LATIN), { minLength: 1, maxLength: 40 })
  .chain((w) => fc.constantFrom('.', '!', '?', '').map((p) => `${w.join(' ')}${p}`));
const cjkSentence = fc
  .array(fc.constantFrom(...CJK_CHARS), { minLength: 1, maxLength: 120 })
  .chain((w) => fc.constantFrom('。', '！', '？', '').map((p) => w.join('') + p));
const paragraph = fc
  .array(fc.oneof(latinSentence, cjkSentence), { minLength: 1, maxLength: 12 })
  .chain((s) => fc.constantFrom(' ', '').map((sep) => s.join(sep)));
const codeBlock = fc
  .array(
    fc.array(fc.constantFrom('x', '=', '(', ')', '{', '}', 'return', 'const', '#', '  ', '\t', 'value'), {
      maxLength: 12,
    }),
    { minLength: 1, maxLength: 60 },
  )
  .map((lines) => `\`\`\`js\n${lines.map((l) => l.join(' ')).join('\n')}\n\`\`\``);
const heading = fc
  .tuple(fc.integer({ min: 1, max: 4 }), fc.array(fc.constantFrom(...LATIN, '使い方'), { minLength: 1, maxLength: 4 }))
  .map(([level, words]) => `${'#'.repeat(level)} ${words.join(' ')}`);
const listBlock = fc
  .array(latinSentence, { minLength: 1, maxLength: 8 })
  .map((items) => items.map((i) => `- ${i}`).join('\n'));
const longWord = fc.integer({ min: 200, max: 3000 }).map((n) => 'ab'.repeat(n));
const document = fc
  .array(
    fc.oneof({ weight: 4, arbitrary: paragraph }, codeBlock, heading, listBlock, { weight: 1, arbitrary: longWord }),
    {
      minLength: 1,
      maxLength: 25,
    },
  )
  .map((blocks) => blocks.join('\n\n'));
const settings = fc
  .integer({ min: 64, max: 400 })
  .chain((target) =>
    fc
      .integer({ min: 0, max: Math.floor(target / 2) })
      .map((overlap) => ({ targetTokens: target, overlapTokens: overlap })),
  );

describe('properties', () => {
  it('generated Markdown (Latin and CJK prose, code, lists, headings, long words): every guarantee holds', () => {
    fc.assert(
      fc.property(document, settings, (source, s) => {
        chunkAndCheck(markdown(source), s);
      }),
      { numRuns: 120 },
    );
  });

  it('generated code, CSV and JSON text, chunked by lines: every guarantee holds', () => {
    const lines = fc.array(fc.oneof(fc.constant(''), fc.string({ maxLength: 200 }), longWord), { maxLength: 200 });
    fc.assert(
      fc.property(
        lines,
        fc.constantFrom('code', 'csv', 'json') as fc.Arbitrary<'code' | 'csv' | 'json'>,
        settings,
        (ls, kind, s) => {
          const text = ls.join('\n').replace(/\s+$/, '');
          if (text.trim() === '') return;
          const chunks = chunkAndCheck({ text, kind }, s);
          for (const c of chunks) expect(c.headingPath).toEqual([]);
        },
      ),
      { numRuns: 80 },
    );
  });
});

describe('happy', () => {
  it('splits at headings first and carries each chunk’s heading path', () => {
    const doc = markdown(
      'Preface text.\n\n# Guide\n\n## Install\n\nRun it.\n\n## Use\n\nCall it.\n\n# Appendix\n\nMore.',
    );
    const chunks = chunkAndCheck(doc, { targetTokens: 512, overlapTokens: 64 });
    expect(chunks.map((c) => [c.text, c.headingPath])).toEqual([
      ['Preface text.', []],
      // A heading with only a deeper heading under it joins that section.
      ['# Guide\n\n## Install\n\nRun it.', ['Guide', 'Install']],
      ['## Use\n\nCall it.', ['Guide', 'Use']],
      ['# Appendix\n\nMore.', ['Appendix']],
    ]);
  });

  it('fills chunks by paragraphs, then sentences, and overlaps by whole sentences', () => {
    const sentence = (i: number) => `Sentence number ${i} says something useful about retrieval.`;
    const para = (from: number) => Array.from({ length: 5 }, (_, i) => sentence(from + i)).join(' ');
    const doc = markdown([para(0), para(5), para(10), para(15)].join('\n\n'));
    const chunks = chunkAndCheck(doc, { targetTokens: 80, overlapTokens: 24 });
    expect(chunks.length).toBeGreaterThan(3);
    for (const c of chunks) {
      expect(c.text).toMatch(/^Sentence number \d+/);
      expect(c.text).toMatch(/retrieval\.$/);
    }
    // Consecutive chunks share one whole sentence (11 tokens each, so two would exceed 24).
    for (let i = 1; i < chunks.length; i++) {
      const prev = chunks[i - 1] as Chunk;
      const next = chunks[i] as Chunk;
      expect(next.start).toBeLessThan(prev.end);
      expect(prev.text.endsWith(doc.text.slice(next.start, prev.end))).toBe(true);
    }
  });

  it('keeps a fenced code block whole, even when that means a new chunk', () => {
    const code = `\`\`\`python\n${Array.from({ length: 12 }, (_, i) => `x${i} = compute(${i})  # step`).join('\n')}\n\`\`\``;
    const doc = markdown(`${'Intro sentence about the code. '.repeat(8).trim()}\n\n${code}\n\nAfter the code.`);
    const chunks = chunkAndCheck(doc, { targetTokens: 160, overlapTokens: 20 });
    const holder = chunks.filter((c) => c.text.includes('x0 = compute'));
    expect(holder).toHaveLength(1);
    expect(holder[0]?.text).toContain(code);
    expect(countTokens(code)).toBeLessThan(160);
  });

  it('splits a code block that alone exceeds the limit at line ends only', () => {
    const lines = Array.from({ length: 80 }, (_, i) => `    let value${i} = source.read(${i});`);
    const doc = markdown(`\`\`\`rust\n${lines.join('\n')}\n\`\`\``);
    const chunks = chunkAndCheck(doc, { targetTokens: 100, overlapTokens: 10 });
    expect(chunks.length).toBeGreaterThan(5);
    for (const c of chunks) {
      expect(atLineStart(doc.text, c.start)).toBe(true);
      expect(c.end === doc.text.length || doc.text[c.end] === '\n').toBe(true);
    }
  });

  it('CJK text without spaces splits after 。！？ and, inside a sentence too long for a chunk, between characters', () => {
    const sentences = Array.from({ length: 60 }, (_, i) => `これは検索のための日本語の文章です番号${i}。`).join('');
    const doc = markdown(`# 使い方\n\n${sentences}\n\n${'長い文章'.repeat(400)}`);
    const chunks = chunkAndCheck(doc, { targetTokens: 96, overlapTokens: 24 });
    const prose = chunks.filter((c) => c.text.includes('番号') && !c.text.includes('長'));
    expect(prose.length).toBeGreaterThan(3);
    for (const c of prose) {
      expect(c.text).toMatch(/[。]$/);
      expect(c.text).toMatch(/^(# 使い方|これは)/);
    }
    const long = chunks.filter((c) => c.text.startsWith('長') || c.text.startsWith('い') || c.text.startsWith('文'));
    expect(long.length).toBeGreaterThan(5);
    for (const c of chunks) expect(c.headingPath).toEqual(['使い方']);
  });

  it('a word longer than a chunk is cut, and parts of it overlap', () => {
    const doc = { text: `start ${'x'.repeat(20_000)} end`, kind: 'text' as const };
    const chunks = chunkAndCheck(doc, { targetTokens: 128, overlapTokens: 32 });
    expect(chunks.length).toBeGreaterThan(10);
    expect(chunks.slice(1).some((c, i) => c.start < (chunks[i] as Chunk).end)).toBe(true);
  });

  it('CSV rows (one per line) are never cut when they fit, and overlap by whole rows', () => {
    const rows = Array.from({ length: 200 }, (_, i) => `name: person ${i} | city: Paris | note: row number ${i}`);
    const doc: ChunkInput = { text: rows.join('\n'), kind: 'csv' };
    const chunks = chunkAndCheck(doc, { targetTokens: 120, overlapTokens: 30 });
    for (const c of chunks) {
      for (const line of c.text.split('\n')) expect(rows).toContain(line);
    }
    expect(chunks.slice(1).every((c, i) => c.start < (chunks[i] as Chunk).end)).toBe(true);
  });

  it('text that looks like a special token is counted as text', () => {
    expect(countTokens('<|endoftext|>')).toBeGreaterThan(1);
    const chunks = chunkAndCheck({ text: 'a <|endoftext|> b', kind: 'text' }, { targetTokens: 64, overlapTokens: 0 });
    expect(chunks).toHaveLength(1);
  });

  it('an empty text has no chunks', () => {
    expect(chunkDocument({ text: '' })).toEqual([]);
    expect(chunkDocument({ text: ' \n\n ' })).toEqual([]);
  });
});

describe('errors', () => {
  it('refuses settings out of range or with an overlap over half the target', () => {
    const doc = { text: 'x' };
    expect(() => chunkDocument(doc, { targetTokens: 10, overlapTokens: 0 })).toThrow();
    expect(() => chunkDocument(doc, { targetTokens: 100, overlapTokens: 51 })).toThrow(/half/);
    expect(() => chunkDocument(doc, { targetTokens: 100.5, overlapTokens: 0 })).toThrow();
    expect(chunkDocument(doc, { targetTokens: 100, overlapTokens: 50 })).toHaveLength(1);
  });
});
