import { afterEach, describe, expect, it, vi } from 'vitest';
import { docx, docxBody, encodeLegacy, pdf, zip } from '../../../test/helpers/documents.ts';
import { type ParsedDocument, ParseFailure, type ParseInput, parseDocument } from './knowledge.parse.ts';

const utf8 = (s: string) => new TextEncoder().encode(s);
const parse = (filename: string, bytes: Uint8Array | string, extra: Partial<ParseInput> = {}) =>
  parseDocument({ bytes: typeof bytes === 'string' ? utf8(bytes) : bytes, filename, ...extra });

/** The failure code a parse ends with, or 'ok'. */
async function codeOf(p: Promise<ParsedDocument>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return e instanceof ParseFailure ? e.code : `not a ParseFailure: ${String(e)}`;
  }
}

/** Every section's offset points at its heading line in the text. */
function expectSectionsAt(doc: ParsedDocument) {
  for (const s of doc.sections ?? []) {
    const line = doc.text.slice(s.start).split('\n')[0] ?? '';
    expect(line).toContain(s.title);
    expect(s.start === 0 || doc.text[s.start - 1] === '\n').toBe(true);
  }
}

describe('happy', () => {
  it('plain text: line endings, trailing spaces and runs of blank lines cleaned, nothing else', async () => {
    const doc = await parse(
      'notes.txt',
      'First line   \r\nsecond\tline\r\n\r\n\r\n\r\nThird\u200B para\u00A0graph\n\n',
    );
    expect(doc).toEqual({ kind: 'text', text: 'First line\nsecond\tline\n\nThird para graph', encoding: 'utf-8' });
  });

  it('Markdown: front matter title, ATX and setext headings as sections, code fences kept exactly', async () => {
    const md = [
      '---',
      'title: "The Guide"',
      '---',
      '# Install',
      '',
      'Run it.   ',
      '',
      '```python',
      '# a comment, not a heading',
      '',
      '',
      'def f():   ',
      '\treturn 1',
      '```',
      '',
      'Usage',
      '-----',
      '',
      '### Flags ###',
      'Text.',
    ].join('\n');
    const doc = await parse('guide.md', md);
    expect(doc.kind).toBe('markdown');
    expect(doc.title).toBe('The Guide');
    expect(doc.text).toContain('```python\n# a comment, not a heading\n\n\ndef f():   \n\treturn 1\n```');
    expect(doc.text.startsWith('# Install\n\nRun it.\n')).toBe(true);
    expect(doc.sections?.map((s) => [s.level, s.title])).toEqual([
      [1, 'Install'],
      [2, 'Usage'],
      [3, 'Flags'],
    ]);
    expectSectionsAt(doc);
  });

  it('Markdown without front matter takes its first level-1 heading as title', async () => {
    const doc = await parse('x.markdown', 'Intro\n\n## Not it\n\n# **Real** title\n');
    expect(doc.title).toBe('Real title');
  });

  it('HTML: text without scripts, styles, navigation or page furniture; headings as structure; pre as fenced code', async () => {
    const html = `<!doctype html><html><head><title>Berth &amp; docs</title><style>p { color: red }</style>
      <script>var token = "SCRIPT_SECRET";</script></head><body>
      <nav><a href="/">Home</a><a href="/about">About</a></nav>
      <header><p>Site banner</p></header>
      <div role="navigation">Breadcrumbs</div>
      <article><header><h1>Getting   started</h1></header>
      <p>Hello <b>world</b>, this&nbsp;is   text.<br>A second line.</p>
      <ul><li>one</li><li><p>two</p><ul><li>nested</li></ul></li></ul>
      <h2>Example <button>Copy</button></h2>
      <pre><code class="language-js">function f() {
    return 1;   // kept
}</code></pre>
      <table><tr><th>name</th><th>value</th></tr><tr><td><p>a</p></td><td>1</td></tr></table>
      <div hidden>HIDDEN_TEXT</div><span aria-hidden="true">ICON_TEXT</span>
      <noscript>Enable JS</noscript><form><input value="x"><label>Search</label></form>
      </article><aside>Related posts</aside><footer>Copyright</footer></body></html>`;
    const doc = await parse('page.html', html);
    expect(doc.kind).toBe('html');
    expect(doc.title).toBe('Berth & docs');
    expect(doc.text).toBe(
      [
        '# Getting started',
        '',
        'Hello world, this is text.',
        'A second line.',
        '',
        '- one',
        '- two',
        '  - nested',
        '',
        '## Example',
        '',
        '```js',
        'function f() {',
        '    return 1;   // kept',
        '}',
        '```',
        '',
        'name | value',
        'a | 1',
      ].join('\n'),
    );
    expect(doc.sections).toEqual([
      { level: 1, title: 'Getting started', start: 0 },
      { level: 2, title: 'Example', start: doc.text.indexOf('## Example') },
    ]);
    expectSectionsAt(doc);
  });

  it('HTML with a main element keeps only the main content', async () => {
    const doc = await parse(
      'p.htm',
      '<body><div>Sidebar junk</div><main><p>The content.</p></main><div>More junk</div></body>',
    );
    expect(doc.text).toBe('The content.');
  });

  it('PDF: text per page with each page’s offsets, and the title from its metadata', async () => {
    const file = pdf([['First page, line one.', 'Line two (with parens).'], [], ['Third page.']], { title: 'Report' });
    const doc = await parse('report.pdf', file);
    expect(doc.kind).toBe('pdf');
    expect(doc.title).toBe('Report');
    expect(doc.pages).toHaveLength(3);
    const pages = (doc.pages ?? []).map((p) => doc.text.slice(p.start, p.end));
    expect(pages).toEqual(['First page, line one.\nLine two (with parens).', '', 'Third page.']);
  });

  it('a PDF is read as a PDF whatever its name says', async () => {
    const doc = await parse('misnamed.txt', pdf([['Hello from a PDF.']]));
    expect(doc.kind).toBe('pdf');
    expect(doc.text).toBe('Hello from a PDF.');
  });

  it('DOCX: paragraphs as text, Word headings as sections, the first level-1 heading as title', async () => {
    const file = docx([
      { text: 'Annual plan', style: 'Title' },
      { text: 'Goals', style: 'Heading1' },
      { text: 'Ship the knowledge base & search.' },
      { text: 'Risks', style: 'Heading2' },
      { text: 'None <known>.' },
    ]);
    const doc = await parse('plan.docx', file);
    expect(doc.kind).toBe('docx');
    expect(doc.text).toBe('# Annual plan\n\n# Goals\n\nShip the knowledge base & search.\n\n## Risks\n\nNone <known>.');
    expect(doc.title).toBe('Annual plan');
    expect(doc.sections?.map((s) => s.title)).toEqual(['Annual plan', 'Goals', 'Risks']);
    expectSectionsAt(doc);
  });

  it('CSV: one line per row with the header’s names; quoted commas, quotes and newlines; empty cells left out', async () => {
    const csv = 'name,age,note\r\nAda,36,"likes, commas"\r\nBob,,"said ""hi""\nthen left"\r\n,,\r\nCy,40,x,extra\r\n';
    const doc = await parse('people.csv', csv);
    expect(doc.kind).toBe('csv');
    expect(doc.text).toBe(
      [
        'name: Ada | age: 36 | note: likes, commas',
        'name: Bob | note: said "hi" then left',
        'name: Cy | age: 40 | note: x | column 4: extra',
      ].join('\n'),
    );
  });

  it('CSV with semicolons is sniffed, TSV is read by tabs, and a header alone still names its columns', async () => {
    expect((await parse('eu.csv', 'city;price\nParis;1,50\n')).text).toBe('city: Paris | price: 1,50');
    expect((await parse('t.tsv', 'a\tb\n1\t2,3\n')).text).toBe('a: 1 | b: 2,3');
    expect((await parse('h.csv', 'only,headers\n')).text).toBe('only | headers');
  });

  it('JSON: pretty-printed with its keys in order and numbers exactly as written', async () => {
    const doc = await parse(
      'd.json',
      '{"z":1,"a":[1,2,{"c":"caf\\u00e9","q":"a\\"b"}],"big":12345678901234567890,"e":{},"f":[ ]}',
    );
    expect(doc.kind).toBe('json');
    expect(doc.text).toBe(
      [
        '{',
        '  "z": 1,',
        '  "a": [',
        '    1,',
        '    2,',
        '    {',
        '      "c": "café",',
        '      "q": "a\\"b"',
        '    }',
        '  ],',
        '  "big": 12345678901234567890,',
        '  "e": {},',
        '  "f": []',
        '}',
      ].join('\n'),
    );
  });

  it('JSON Lines: each record pretty-printed, a blank line between records', async () => {
    const doc = await parse('events.jsonl', '{"a":1}\n\n{"b":[true,null]}\n');
    expect(doc.text).toBe('{\n  "a": 1\n}\n\n{\n  "b": [\n    true,\n    null\n  ]\n}');
  });

  it('source code is kept verbatim (indentation, tabs, trailing spaces, blank lines), with its language', async () => {
    const code = 'def f(x):  \r\n\tif x:\r\n\r\n\r\n        return "<|endoftext|>"\r\n\r\n';
    const doc = await parse('tool.py', code);
    expect(doc).toEqual({
      kind: 'code',
      text: 'def f(x):  \n\tif x:\n\n\n        return "<|endoftext|>"',
      encoding: 'utf-8',
      language: 'py',
    });
    expect((await parse('Dockerfile', 'FROM node:20\n')).language).toBe('dockerfile');
  });

  it('a file without a telling name is typed by its content (HTML, JSON, else text)', async () => {
    expect((await parse('upload', '<!DOCTYPE html><p>Hi</p>')).kind).toBe('html');
    expect((await parse('upload', '[1, 2]')).kind).toBe('json');
    expect((await parse('upload', '[not json')).kind).toBe('text');
    expect((await parse('upload', 'plain', { declaredType: 'text/markdown' })).kind).toBe('markdown');
  });
});

describe('encodings', () => {
  it('Latin-1 / Windows-1252 text, short or long', async () => {
    const long = await parse(
      'fr.txt',
      Buffer.from('Café crème brûlée à la façon de grand-mère. Über die Brücke.', 'latin1'),
    );
    expect(long.text).toBe('Café crème brûlée à la façon de grand-mère. Über die Brücke.');
    expect(long.encoding).toBe('windows-1252');
    const short = await parse('s.txt', Buffer.from([0x43, 0x61, 0x66, 0xe9]));
    expect(short.text).toBe('Café');
    // Windows-1252's curly quotes and euro sign (0x80-0x9F) are not C1 controls.
    const quotes = await parse('q.txt', Buffer.from([0x93, 0x48, 0x69, 0x94, 0x20, 0x80, 0x35]));
    expect(quotes.text).toBe('“Hi” €5');
  });

  it('Shift_JIS, GB18030 and EUC-KR text', async () => {
    const ja = '日本語のテキストです。これは検索のためのテストの文書です。東京は日本の首都です。';
    const sjis = await parse('ja.txt', encodeLegacy('shift_jis', ja));
    expect(sjis).toMatchObject({ text: ja, encoding: 'shift_jis' });
    const zh = '这是一个用于搜索的中文测试文档。北京是中国的首都。我们在这里测试编码的检测。';
    expect(await parse('zh.md', encodeLegacy('gb18030', zh))).toMatchObject({ text: zh, encoding: 'gb18030' });
    const ko = '이것은 검색을 위한 한국어 테스트 문서입니다. 서울은 한국의 수도입니다.';
    expect(await parse('ko.txt', encodeLegacy('euc-kr', ko))).toMatchObject({ text: ko, encoding: 'euc-kr' });
  });

  it('UTF-16 with a BOM (both byte orders) and without one', async () => {
    const s = 'Hello wörld, 日本';
    const le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(s, 'utf16le')]);
    expect(await parse('le.txt', le)).toMatchObject({ text: s, encoding: 'utf-16le' });
    const be = Buffer.from(le);
    be.swap16();
    expect(await parse('be.txt', be)).toMatchObject({ text: s, encoding: 'utf-16be' });
    expect(await parse('nobom.csv', Buffer.from('a,b\n1,2\n', 'utf16le'))).toMatchObject({
      text: 'a: 1 | b: 2',
      encoding: 'utf-16le',
    });
  });

  it('a UTF-8 BOM is dropped', async () => {
    expect((await parse('b.txt', Buffer.from([0xef, 0xbb, 0xbf, 0x68, 0x69]))).text).toBe('hi');
  });
});

describe('errors', () => {
  it('a zero-byte file is empty_file', async () => {
    expect(await codeOf(parse('empty.txt', new Uint8Array()))).toBe('empty_file');
    expect(await codeOf(parse('empty.pdf', new Uint8Array()))).toBe('empty_file');
  });

  it('a file over the byte limit is file_too_large before it is read (default limit: 50 MiB)', async () => {
    expect(await codeOf(parse('big.txt', Buffer.alloc(50 * 1024 * 1024 + 1, 0x61)))).toBe('file_too_large');
    expect(await codeOf(parse('big.txt', 'x'.repeat(2048), { limits: { maxBytes: 1024 } }))).toBe('file_too_large');
    expect(await codeOf(parse('ok.txt', 'x'.repeat(1024), { limits: { maxBytes: 1024 } }))).toBe('ok');
  });

  it('text, pages and unzipped sizes over their limits are file_too_large', async () => {
    expect(await codeOf(parse('long.md', 'word '.repeat(100), { limits: { maxTextChars: 100 } }))).toBe(
      'file_too_large',
    );
    const threePages = pdf([['a'], ['b'], ['c']]);
    expect(await codeOf(parse('p.pdf', threePages, { limits: { maxPages: 2 } }))).toBe('file_too_large');
    // A zip bomb: the archive declares 4 GB of document.
    const bomb = docx([{ text: 'x' }], { declaredSize: 0xfffffff0 });
    expect(await codeOf(parse('bomb.docx', bomb))).toBe('file_too_large');
  });

  it('binary content under a text name is binary_content; a binary type by its own name is unsupported_type', async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
    expect(await codeOf(parse('photo.txt', png))).toBe('binary_content');
    expect(await codeOf(parse('photo.md', png))).toBe('binary_content');
    expect(await codeOf(parse('photo', png))).toBe('binary_content');
    expect(await codeOf(parse('photo.png', png))).toBe('unsupported_type');
    expect(await codeOf(parse('photo', png, { declaredType: 'image/png' }))).toBe('unsupported_type');
    const archive = zip([{ name: 'xl/workbook.xml', data: '<workbook/>' }]);
    expect(await codeOf(parse('sheet.xlsx', archive))).toBe('unsupported_type');
    expect(await codeOf(parse('sheet.txt', archive))).toBe('binary_content');
    const ole = Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1, 0, 0, 0, 0]);
    expect(await codeOf(parse('old.doc', ole))).toBe('unsupported_type');
    // Control bytes without NULs (over 1%) are binary too.
    expect(await codeOf(parse('ctl.txt', Buffer.from('ab\x01\x02\x03cd\x04\x05\x06'.repeat(10))))).toBe(
      'binary_content',
    );
  });

  it('damaged PDFs are corrupt_file; a PDF with no text is no_text; a protected one encrypted_file', async () => {
    expect(await codeOf(parse('bad.pdf', '%PDF-1.4\nthis is not a pdf at all'))).toBe('corrupt_file');
    const good = pdf([['Some text on page one.'], ['Page two.']]);
    expect(await codeOf(parse('cut.pdf', good.subarray(0, Math.floor(good.length * 0.6))))).toBe('corrupt_file');
    expect(await codeOf(parse('fake.pdf', 'just text'))).toBe('corrupt_file');
    expect(await codeOf(parse('blank.pdf', pdf([[], []])))).toBe('no_text');
    expect(await codeOf(parse('locked.pdf', pdf([['secret']], { encrypt: true })))).toBe('encrypted_file');
  });

  it('damaged or fake DOCX files are corrupt_file; a protected one (an OLE container) encrypted_file', async () => {
    const broken = docx([], { documentXml: docxBody([{ text: 'x' }]).slice(0, 60) });
    expect(await codeOf(parse('broken.docx', broken))).toBe('corrupt_file');
    expect(await codeOf(parse('fake.docx', 'plain text'))).toBe('corrupt_file');
    expect(await codeOf(parse('other.docx', zip([{ name: 'a.txt', data: 'a' }])))).toBe('corrupt_file');
    const ole = Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1, 0, 0, 0, 0]);
    expect(await codeOf(parse('locked.docx', ole))).toBe('encrypted_file');
  });

  it('text in no encoding that decodes cleanly is encoding_unknown, as is UTF-32', async () => {
    // 0x81, 0x8D, 0x8F, 0x90 and 0x9D are undefined in Windows-1252 and invalid as lead bytes here.
    expect(
      await codeOf(parse('x.txt', Buffer.from([0x81, 0x20, 0x8d, 0x20, 0x8f, 0x20, 0x90, 0x20, 0x9d, 0x41]))),
    ).toBe('encoding_unknown');
    expect(await codeOf(parse('u32.txt', Buffer.from([0xff, 0xfe, 0, 0, 0x41, 0, 0, 0])))).toBe('encoding_unknown');
  });

  it('invalid JSON is corrupt_file, naming the bad record of JSON Lines', async () => {
    expect(await codeOf(parse('d.json', '{"a": 1,}'))).toBe('corrupt_file');
    await expect(parse('e.jsonl', '{"a":1}\n{oops}\n')).rejects.toThrow(/record 2/);
  });

  it('a file whose content has no text is no_text', async () => {
    expect(await codeOf(parse('s.html', '<html><script>alert(1)</script><style>p{}</style></html>'))).toBe('no_text');
    expect(await codeOf(parse('w.txt', ' \n\t\n\u200B'))).toBe('no_text');
  });
});

describe('security', () => {
  afterEach(() => vi.restoreAllMocks());

  it('failure messages never contain the file’s content', async () => {
    const secret = 'SECRET_CONTENT_4242';
    const attempts = [
      () => parse('d.json', `{"k": "${secret}",}`),
      () => parse('x.pdf', `%PDF-1.4\n${secret}`),
      () => parse('x.docx', docx([], { documentXml: `<w:document>${secret}` })),
      () => parse('x.txt', Buffer.concat([Buffer.from(secret), Buffer.from([0, 1, 2, 3])])),
    ];
    for (const attempt of attempts) {
      const error = await attempt().then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ParseFailure);
      expect(String((error as Error).message)).not.toContain(secret);
    }
  });

  it('reading a damaged PDF writes nothing to the console', async () => {
    const spies = (['log', 'warn', 'error', 'info', 'debug'] as const).map((m) =>
      vi.spyOn(console, m).mockImplementation(() => undefined),
    );
    const good = pdf([['Confidential page.']]);
    await codeOf(parse('cut.pdf', good.subarray(0, good.length - 40)));
    await codeOf(parse('bad.pdf', '%PDF-1.7\n1 0 obj garbage'));
    for (const spy of spies) expect(spy).not.toHaveBeenCalled();
  });

  it('script, style and hidden content of HTML never reaches the text', async () => {
    const doc = await parse(
      'x.html',
      '<p>Visible</p><script>SCRIPT_X</script><style>.a{}</style><template>TPL_X</template><div hidden>HIDDEN_X</div><svg><text>SVG_X</text></svg>',
    );
    expect(doc.text).toBe('Visible');
  });
});
