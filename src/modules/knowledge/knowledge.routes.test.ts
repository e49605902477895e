import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import type { TestResponse } from '../../../test/helpers/client.ts';
import { docx, pdf } from '../../../test/helpers/documents.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { type FormFile, multipartForm } from '../../../test/helpers/multipart.ts';
import { parseDocument } from './knowledge.parse.ts';
import { knowledgeRepo } from './knowledge.repo.ts';
import type { DocumentView, KnowledgeBaseView, SearchResult, UploadResult } from './knowledge.schemas.ts';

/**
 * Knowledge over HTTP: knowledge bases, multipart uploads of every supported type processed
 * by the `knowledge.ingest` job, duplicates skipped, a corrupt file failing alone, lexical
 * search with exact citations (also CJK), bad queries, tenancy and permissions, and deletion
 * (of a document, a knowledge base, a workspace) that leaves nothing behind.
 */

let app: TestApp;
let owner: SignedInClient;
let viewer: SignedInClient;
let stranger: SignedInClient;
let ws: string;
let otherWs: string;
let remote: Server;
let origin: string;

type File = FormFile;

const kbUrl = (kb = '', workspace = ws) => `/api/workspaces/${workspace}/knowledge${kb ? `/${kb}` : ''}`;

async function createKb(body: Record<string, unknown>, client = owner): Promise<KnowledgeBaseView> {
  const res = await client.post<KnowledgeBaseView>(kbUrl(), body);
  expect(res.status, res.text).toBe(201);
  return res.body;
}

async function upload(kb: string, files: File[], client = owner): Promise<TestResponse<UploadResult>> {
  const { payload, headers } = multipartForm(files);
  return client.request<UploadResult>('POST', `${kbUrl(kb)}/documents`, payload, headers);
}

async function ingest() {
  return app.jobs.drain('knowledge.ingest');
}

async function documents(kb: string): Promise<DocumentView[]> {
  const res = await owner.get<{ data: DocumentView[] }>(`${kbUrl(kb)}/documents`);
  expect(res.status).toBe(200);
  return res.body.data;
}

function search(kb: string, body: Record<string, unknown>, client = owner) {
  return client.post<SearchResult & { code?: string }>(`${kbUrl(kb)}/search`, body);
}

/** Tables (schema.table) holding any of the needles anywhere in a row, read by the database owner. */
async function tablesContaining(needles: string[]): Promise<Map<string, string[]>> {
  const list =
    "select table_schema as s, table_name as t from information_schema.tables where table_schema not in ('pg_catalog', 'information_schema') and table_type = 'BASE TABLE'";
  const scan = async (query: (text: string) => Promise<Array<Record<string, unknown>>>) => {
    const found = new Map<string, string[]>();
    for (const r of await query(list)) {
      const name = `${String(r.s)}.${String(r.t)}`;
      for (const row of await query(`select x::text as row from "${String(r.s)}"."${String(r.t)}" x`)) {
        for (const n of needles) {
          if (String(row.row).includes(n)) found.set(name, [...new Set([...(found.get(name) ?? []), n])]);
        }
      }
    }
    return found;
  };
  if (!app.testDb.url) return scan((text) => app.db.query(text));
  const client = new pg.Client({ connectionString: app.testDb.url });
  await client.connect();
  try {
    return await scan(async (text) => (await client.query(text)).rows);
  } finally {
    await client.end();
  }
}

/** The rows of the knowledge tables naming `id` in any column. */
async function knowledgeRows(id: string): Promise<number> {
  const found = await tablesContaining([id]);
  return [...found.keys()].filter((t) => t.includes('knowledge_')).length;
}

const FILES = {
  text: { name: 'notes.txt', data: 'Plain notes.\n\nThe lighthouse keeper counts zephyrs every evening.' },
  markdown: {
    name: 'guide.md',
    data: '# Guide\n\nIntro text.\n\n## Refunds\n\nA refund is paid within fourteen days of a returned parcel.\n',
  },
  html: {
    name: 'page.html',
    data: '<html><head><title>Page</title></head><body><h1>Harbour</h1><p>The harbour master logs every quokka sighting.</p></body></html>',
  },
  pdf: { name: 'report.pdf', data: pdf([['Quarterly report', 'Revenue grew through marmalade exports.']]) },
  docx: {
    name: 'memo.docx',
    data: docx([
      { text: 'Memo', style: 'Title' },
      { text: 'The orchestra rehearses the xylophone concerto on Tuesdays.' },
    ]),
  },
  csv: { name: 'table.csv', data: 'city,fruit\nLisbon,persimmon\nOslo,cloudberry\n' },
  json: { name: 'data.json', data: JSON.stringify({ animal: 'axolotl', habitat: 'lake' }) },
  code: { name: 'main.ts', data: 'export function frobnicateWidget(x: number) {\n  return x * 2;\n}\n' },
} satisfies Record<string, File>;

beforeAll(async () => {
  // A web server documents are fetched from by URL (loopback: allowed here by BERTH_EGRESS_ALLOW).
  remote = createServer((req, res) => {
    if (req.url === '/docs/fetched.md') {
      res.writeHead(200, { 'content-type': 'text/markdown; charset=utf-8' });
      return res.end('# Fetched\n\nThis page was fetched and mentions capybaras.\n');
    }
    if (req.url === '/redirect') {
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data' });
      return res.end();
    }
    if (req.url === '/huge') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(100 * 1024 * 1024) });
      return res.end('x');
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not here');
  });
  await new Promise<void>((r) => remote.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${(remote.address() as AddressInfo).port}`;
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  owner = await signUp(app);
  viewer = await signUp(app);
  stranger = await signUp(app);
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Knowledge' })).body.id;
  otherWs = (await stranger.post<{ id: string }>('/api/workspaces', { name: 'Elsewhere' })).body.id;
  const scope = { workspaceId: ws, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
  const { token } = await app.modules.workspaces.service.invite({ scope, email: viewer.email, role: 'viewer' });
  await app.modules.workspaces.service.acceptInvitation({ token, userId: viewer.userId });
});

afterAll(async () => {
  await app?.close();
  await new Promise<void>((r) => remote.close(() => r()));
});

describe('happy', () => {
  let kb: string;

  it('creates and lists knowledge bases', async () => {
    const created = await createKb({ name: 'Handbook', textSearch: 'english' });
    kb = created.id;
    expect(created).toMatchObject({
      name: 'Handbook',
      embeddingModel: null,
      chunking: { targetTokens: 512, overlapTokens: 64 },
      textSearch: 'english',
      documents: { queued: 0, processing: 0, ready: 0, failed: 0 },
      createdBy: owner.userId,
    });
    const list = await viewer.get<{ data: KnowledgeBaseView[] }>(kbUrl());
    expect(list.body.data.map((k) => k.id)).toEqual([kb]);
  });

  it('uploads every supported type; each is parsed, chunked and ready', async () => {
    const res = await upload(kb, Object.values(FILES));
    expect(res.status, res.text).toBe(202);
    expect(res.body.data.map((d) => d.outcome)).toEqual(Object.values(FILES).map(() => 'created'));
    expect(res.body.data.every((d) => d.document.status === 'queued')).toBe(true);
    expect(await ingest()).toMatchObject({ failed: 0 });
    const docs = await documents(kb);
    expect(docs).toHaveLength(8);
    for (const d of docs) {
      expect(d, d.filename).toMatchObject({ status: 'ready', progress: 100, failure: null });
      expect(d.chunkCount, d.filename).toBeGreaterThan(0);
    }
    const kinds = Object.fromEntries(docs.map((d) => [d.filename, d.kind]));
    expect(kinds).toEqual({
      'notes.txt': 'text',
      'guide.md': 'markdown',
      'page.html': 'html',
      'report.pdf': 'pdf',
      'memo.docx': 'docx',
      'table.csv': 'csv',
      'data.json': 'json',
      'main.ts': 'code',
    });
    // The document's own title replaces the file name where it has one.
    expect(docs.find((d) => d.filename === 'page.html')?.title).toBe('Page');
  });

  it('skips the same content uploaded again (by hash), under any name', async () => {
    const res = await upload(kb, [{ ...FILES.markdown, name: 'copy-of-guide.md' }]);
    expect(res.status).toBe(202);
    expect(res.body.data[0]).toMatchObject({
      outcome: 'duplicate',
      document: { filename: 'guide.md', status: 'ready' },
    });
    expect(await documents(kb)).toHaveLength(8);
    expect(await ingest()).toMatchObject({ completed: 0 });
  });

  it('stores content uploaded by two requests at once only once', async () => {
    const file = { name: 'race.txt', data: `Raced content ${randomBytes(4).toString('hex')}` };
    const [a, b] = await Promise.all([upload(kb, [file]), upload(kb, [file])]);
    expect([a.status, b.status]).toEqual([202, 202]);
    expect([a.body.data[0]?.outcome, b.body.data[0]?.outcome].sort()).toEqual(['created', 'duplicate']);
    expect(a.body.data[0]?.document.id).toBe(b.body.data[0]?.document.id);
    await ingest();
    const deleted = await owner.delete(`${kbUrl(kb)}/documents/${a.body.data[0]?.document.id}`);
    expect(deleted.status).toBe(204);
    expect(await documents(kb)).toHaveLength(8);
  });

  it('finds the right chunk of each type, citing exact offsets into the parsed text', async () => {
    const docs = await documents(kb);
    const cases: Array<[keyof typeof FILES, string, string]> = [
      ['text', 'zephyrs', 'zephyrs'],
      ['markdown', 'refunds paid', 'fourteen days'],
      ['html', 'quokka', 'quokka'],
      ['pdf', 'marmalade', 'marmalade'],
      ['docx', 'xylophone', 'xylophone'],
      ['csv', 'cloudberry', 'cloudberry'],
      ['json', 'axolotl', 'axolotl'],
      ['code', 'frobnicateWidget', 'frobnicateWidget'],
    ];
    for (const [type, query, expected] of cases) {
      const file = FILES[type];
      const res = await search(kb, { query, topK: 3 });
      expect(res.status, res.text).toBe(200);
      const [top] = res.body.data;
      const doc = docs.find((d) => d.filename === file.name);
      expect(top?.documentId, `${type}: ${query}`).toBe(doc?.id);
      expect(top?.text).toContain(expected);
      expect(top?.score).toBeGreaterThan(0);
      const parsed = await parseDocument({ bytes: Buffer.from(file.data), filename: file.name });
      expect(parsed.text.slice(top?.startOffset, top?.endOffset), type).toBe(top?.text);
    }
    // Stemming by the knowledge base's configuration (english): "refunds paid" matched "refund is paid".
    const markdown = await search(kb, { query: 'refunds paid' });
    expect(markdown.body.data[0]?.headingPath).toEqual(['Guide', 'Refunds']);
    expect(markdown.body).toMatchObject({ mode: 'lexical', pendingDocuments: 0 });
  });

  it('filters by document and limits to topK', async () => {
    const docs = await documents(kb);
    const pdfDoc = docs.find((d) => d.filename === 'report.pdf');
    const none = await search(kb, { query: 'quokka', filters: { documentIds: [pdfDoc?.id] } });
    expect(none.body.data).toEqual([]);
    const html = docs.find((d) => d.filename === 'page.html');
    const one = await search(kb, { query: 'quokka', filters: { documentIds: [html?.id] }, topK: 1 });
    expect(one.body.data.map((h) => h.documentId)).toEqual([html?.id]);
  });

  it('searches CJK text (character bigrams) with exact offsets', async () => {
    const cjk = await createKb({ name: 'Japanese', textSearch: 'cjk' });
    const text =
      '# 案内\n\n私は東京都に住んでいます。週末は京都の寺を訪ねます。\n\n## 料金\n\n返金は十四日以内に行われます。';
    const other = '大阪の天気は晴れです。';
    const res = await upload(cjk.id, [
      { name: 'ja.md', data: text },
      { name: 'other.txt', data: other },
    ]);
    expect(res.status).toBe(202);
    await ingest();
    const [jaDoc] = (await documents(cjk.id)).filter((d) => d.filename === 'ja.md');
    const hit = await search(cjk.id, { query: '返金' });
    expect(hit.status, hit.text).toBe(200);
    expect(hit.body.data).toHaveLength(1);
    const [top] = hit.body.data;
    expect(top?.documentId).toBe(jaDoc?.id);
    expect(top?.text).toContain('返金は十四日以内');
    const parsed = await parseDocument({ bytes: Buffer.from(text), filename: 'ja.md' });
    expect(parsed.text.slice(top?.startOffset, top?.endOffset)).toBe(top?.text);
    // A word inside a longer run (東京都) is found; a word in neither document is not.
    expect((await search(cjk.id, { query: '京都' })).body.data.length).toBeGreaterThan(0);
    expect((await search(cjk.id, { query: '晴れ' })).body.data[0]?.text).toBe(other);
    expect((await search(cjk.id, { query: '北海道' })).body.data).toEqual([]);
    // Without the cjk setting a run without spaces is one word: the same query finds nothing.
    const simple = await createKb({ name: 'Simple', textSearch: 'simple' });
    await upload(simple.id, [{ name: 'ja.md', data: text }]);
    await ingest();
    expect((await search(simple.id, { query: '返金' })).body.data).toEqual([]);
  });

  it('uploads a document by URL through the SSRF guard', async () => {
    const res = await owner.post<UploadResult>(`${kbUrl(kb)}/documents/from-url`, { url: `${origin}/docs/fetched.md` });
    expect(res.status, res.text).toBe(202);
    expect(res.body.data[0]).toMatchObject({
      outcome: 'created',
      document: { filename: 'fetched.md', contentType: 'text/markdown' },
    });
    await ingest();
    const [top] = (await search(kb, { query: 'capybaras' })).body.data;
    expect(top).toMatchObject({ title: 'Fetched', headingPath: ['Fetched'] });
  });

  it('searches what is ready and counts what is pending', async () => {
    await upload(kb, [{ name: 'late.txt', data: 'A late arrival about walruses.' }]);
    const res = await search(kb, { query: 'walruses' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ data: [], pendingDocuments: 1 });
    await ingest();
    const after = await search(kb, { query: 'walruses' });
    expect(after.body.pendingDocuments).toBe(0);
    expect(after.body.data).toHaveLength(1);
  });
});

describe('common words', () => {
  /** The knowledge base's count of chunks containing `lexeme` (0: no row). */
  async function count(kbId: string, lexeme: string): Promise<number> {
    const res = (await app.db.system((tx) =>
      tx.execute(sql`select chunks from knowledge_lexemes where knowledge_base_id = ${kbId} and lexeme = ${lexeme}`),
    )) as unknown as { rows: Array<{ chunks: number }> };
    return res.rows[0]?.chunks ?? 0;
  }

  it("counts each word's chunks per knowledge base, and drops a question's words that are in most of them", async () => {
    const kb = await createKb({ name: 'Words', textSearch: 'english' });
    const files = Array.from({ length: 12 }, (_, i) => ({
      name: `w${i}.txt`,
      data: `Ferries cross the harbour every hour. Timetable code alpha${i}.`,
    }));
    const up = await upload(kb.id, files);
    await ingest();
    expect(await count(kb.id, 'ferri')).toBe(12);
    expect(await count(kb.id, 'alpha3')).toBe(1);

    // "ferries" is in every chunk: with a rarer word it adds nothing but work, and is dropped.
    const both = await search(kb.id, { query: 'ferries alpha3' });
    expect(both.body.data.map((h) => h.text)).toEqual([files[3]?.data]);
    // Alone it is searched.
    const alone = await search(kb.id, { query: 'ferries', topK: 100 });
    expect(alone.body.data).toHaveLength(12);

    // Past the rank budget, a question of common words ranks the first matches only.
    const bounded = await app.db.tenant(ws, (tx) =>
      knowledgeRepo.searchLexical(tx, {
        workspaceId: ws,
        kbId: kb.id,
        config: 'english',
        query: 'ferries',
        match: 'any',
        limit: 10,
        rankBudget: 5,
      }),
    );
    expect(bounded).toHaveLength(5);
    expect(bounded.every((h) => h.text.startsWith('Ferries'))).toBe(true);

    // Deleting a document takes its words out of the counts.
    const first = up.body.data[0]?.document.id as string;
    expect((await owner.delete(`${kbUrl(kb.id)}/documents/${first}`)).status).toBe(204);
    expect(await count(kb.id, 'ferri')).toBe(11);
    expect(await count(kb.id, 'alpha0')).toBe(0);
  });
});

describe('errors', () => {
  let kb: string;
  beforeAll(async () => {
    kb = (await createKb({ name: 'Errors' })).id;
  });

  it('fails a corrupt PDF alone, with its stable code; the other documents are ready', async () => {
    const corrupt = Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(300)]);
    const res = await upload(kb, [
      { name: 'broken.pdf', data: corrupt, type: 'application/pdf' },
      { name: 'fine.txt', data: 'Perfectly fine text about pelicans.' },
      { name: 'empty.txt', data: '' },
      { name: 'binary.txt', data: randomBytes(512) },
    ]);
    expect(res.status).toBe(202);
    await ingest();
    const byName = Object.fromEntries((await documents(kb)).map((d) => [d.filename, d]));
    expect(byName['broken.pdf']).toMatchObject({ status: 'failed', failure: { code: 'corrupt_file' }, chunkCount: 0 });
    expect(byName['empty.txt']).toMatchObject({ status: 'failed', failure: { code: 'empty_file' } });
    expect(byName['binary.txt']).toMatchObject({ status: 'failed', failure: { code: 'binary_content' } });
    expect(byName['fine.txt']).toMatchObject({ status: 'ready', failure: null });
    expect((await search(kb, { query: 'pelicans' })).body.data).toHaveLength(1);
  });

  it('refuses empty and over-long queries with stable codes', async () => {
    for (const query of ['', '   \n']) {
      const res = await search(kb, { query });
      expect(res.status).toBe(400);
      expect(res.body.code).toBe('search_query_empty');
    }
    for (const query of ['x'.repeat(2001), 'word '.repeat(2000)]) {
      const res = await search(kb, { query });
      expect(res.status).toBe(400);
      expect(res.body.code).toBe('search_query_too_long');
    }
    expect((await search(kb, { query: 'x'.repeat(2000) })).status).toBe(200);
  });

  it('refuses a search while nothing is ready yet (409 knowledge_base_processing)', async () => {
    const fresh = await createKb({ name: 'Fresh' });
    await upload(fresh.id, [{ name: 'a.txt', data: 'Something about herons.' }]);
    const res = await search(fresh.id, { query: 'herons' });
    expect(res.status).toBe(409);
    expect(res.body.code).toBe('knowledge_base_processing');
    await ingest();
    expect((await search(fresh.id, { query: 'herons' })).body.data).toHaveLength(1);
    // An empty knowledge base answers an empty list (there is nothing to wait for).
    const empty = await createKb({ name: 'Empty' });
    expect((await search(empty.id, { query: 'herons' })).body).toMatchObject({ data: [], pendingDocuments: 0 });
  });

  it('refuses URLs to private addresses, redirects, failures and oversized documents', async () => {
    const cases: Array<[string, number, string]> = [
      ['http://169.254.169.254/latest/meta-data', 400, 'egress_denied'],
      ['http://10.0.0.1/internal', 400, 'egress_denied'],
      [`${origin}/redirect`, 502, 'upstream_error'],
      [`${origin}/missing`, 502, 'upstream_error'],
      [`${origin}/huge`, 413, 'payload_too_large'],
    ];
    for (const [url, status, code] of cases) {
      const res = await owner.post(`${kbUrl(kb)}/documents/from-url`, { url });
      expect(res.status, url).toBe(status);
      expect(res.body.code, url).toBe(code);
      // The remote's body is never relayed.
      expect(res.text).not.toContain('not here');
    }
    expect((await owner.post(`${kbUrl(kb)}/documents/from-url`, { url: 'file:///etc/passwd' })).status).toBe(400);
  });

  it('refuses a taken name (any case) and an unknown text search configuration', async () => {
    const taken = await owner.post(kbUrl(), { name: 'errors' });
    expect(taken.status).toBe(409);
    expect(taken.body.code).toBe('knowledge_base_name_taken');
    const unknown = await owner.post(kbUrl(), { name: 'Klingon', textSearch: 'klingon' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.code).toBe('unknown_text_search');
    const overlap = await owner.post(kbUrl(), { name: 'Overlap', chunking: { targetTokens: 100, overlapTokens: 60 } });
    expect(overlap.status).toBe(400);
  });

  it('refuses uploads that are not multipart, too many files and unknown documents', async () => {
    const json = await owner.post(`${kbUrl(kb)}/documents`, { file: 'x' });
    expect(json.status).toBe(415);
    const many = await upload(
      kb,
      Array.from({ length: 21 }, (_, i) => ({ name: `f${i}.txt`, data: `file number ${i}` })),
    );
    expect(many.status).toBe(400);
    expect(many.body as unknown as { code: string }).toMatchObject({ code: 'too_many_files' });
    const none = await owner.delete(`${kbUrl(kb)}/documents/kdoc_00000000000000000000000000`);
    expect(none.status).toBe(404);
    const noKb = await upload('kb_00000000000000000000000000', [{ name: 'a.txt', data: 'a' }]);
    expect(noKb.status).toBe(404);
  });
});

describe('security', () => {
  let kb: string;
  let docId: string;
  beforeAll(async () => {
    kb = (await createKb({ name: 'Private' })).id;
    const res = await upload(kb, [{ name: 'secret.txt', data: 'The vault combination mentions narwhals.' }]);
    docId = res.body.data[0]?.document.id ?? '';
    await ingest();
  });

  it('another workspace sees nothing of it (404 through its own workspace and through this one)', async () => {
    for (const url of [
      kbUrl(kb, otherWs),
      `${kbUrl(kb, otherWs)}/documents`,
      `${kbUrl(kb, otherWs)}/documents/${docId}`,
    ]) {
      expect((await stranger.get(url)).status, url).toBe(404);
    }
    // Not a member: the workspace itself is not found.
    expect((await search(kb, { query: 'narwhals' }, stranger)).status).toBe(404);
    const viaOwn = await stranger.post(`${kbUrl(kb, otherWs)}/search`, { query: 'narwhals' });
    expect(viaOwn.status).toBe(404);
    expect((await stranger.delete(`${kbUrl(kb, otherWs)}/documents/${docId}`)).status).toBe(404);
    expect((await stranger.delete(kbUrl(kb, otherWs))).status).toBe(404);
    expect((await upload(kb, [{ name: 'x.txt', data: 'intrusion' }], stranger)).status).toBe(404);
    expect((await search(kb, { query: 'narwhals' })).body.data).toHaveLength(1);
  });

  it('a viewer searches and lists but cannot upload, create or delete', async () => {
    expect((await search(kb, { query: 'narwhals' }, viewer)).body.data).toHaveLength(1);
    expect((await viewer.get(`${kbUrl(kb)}/documents`)).status).toBe(200);
    expect((await upload(kb, [{ name: 'v.txt', data: 'viewer text' }], viewer)).status).toBe(403);
    expect((await viewer.post(kbUrl(), { name: 'Mine' })).status).toBe(403);
    expect((await viewer.delete(`${kbUrl(kb)}/documents/${docId}`)).status).toBe(403);
  });

  it('stores the original encrypted, never in plain text', async () => {
    const found = await tablesContaining(['vault combination mentions narwhals']);
    // Only the chunk holds the text (it is what search reads); the original is ciphertext.
    expect([...found.keys()]).toEqual(['public.knowledge_chunks']);
  });

  it('deleting a document leaves nothing of it in any table (ids only in the audit log and job queue)', async () => {
    const marker = `unique${randomBytes(6).toString('hex')}`;
    const res = await upload(kb, [{ name: 'gone.md', data: `# Gone\n\nThis mentions ${marker} twice: ${marker}.` }]);
    const id = res.body.data[0]?.document.id ?? '';
    await ingest();
    expect((await search(kb, { query: marker })).body.data).toHaveLength(1);
    const chunkIds = (await search(kb, { query: marker })).body.data.map((h) => h.chunkId);
    expect(await knowledgeRows(id)).toBeGreaterThan(0);

    const del = await owner.delete(`${kbUrl(kb)}/documents/${id}`);
    expect(del.status).toBe(204);
    const found = await tablesContaining([marker, id, ...chunkIds]);
    for (const [table, needles] of found) {
      // The audit log names the deleted document by id; the job queue keeps its job's ids.
      const allowed = /^(public|berth_partitions)\.audit_/.test(table) || table.startsWith('pgboss.');
      expect(allowed && needles.every((n) => n === id), `${table}: ${needles.join(', ')}`).toBe(true);
    }
    expect((await search(kb, { query: marker })).body.data).toEqual([]);
    expect((await owner.get(`${kbUrl(kb)}/documents/${id}`)).status).toBe(404);
  });

  it('deleting a knowledge base removes its documents, originals and chunks', async () => {
    const doomed = await createKb({ name: 'Doomed' });
    const marker = `doomed${randomBytes(6).toString('hex')}`;
    const res = await upload(doomed.id, [{ name: 'd.txt', data: `Doomed text ${marker}.` }]);
    const id = res.body.data[0]?.document.id ?? '';
    await ingest();
    expect((await owner.delete(kbUrl(doomed.id))).status).toBe(204);
    const found = await tablesContaining([marker, id, doomed.id]);
    for (const [table] of found) {
      expect(/^(public|berth_partitions)\.audit_/.test(table) || table.startsWith('pgboss.'), table).toBe(true);
    }
    expect((await owner.get(kbUrl(doomed.id))).status).toBe(404);
  });

  it('deleting the workspace erases its knowledge', async () => {
    const gone = await signUp(app);
    const gws = (await gone.post<{ id: string }>('/api/workspaces', { name: 'Ephemeral' })).body.id;
    const created = await gone.post<KnowledgeBaseView>(kbUrl('', gws), { name: 'Temp' });
    const marker = `ephemeral${randomBytes(6).toString('hex')}`;
    const { payload, headers } = multipartForm([{ name: 'e.txt', data: `Ephemeral ${marker}` }]);
    await gone.request('POST', `${kbUrl(created.body.id, gws)}/documents`, payload, headers);
    await ingest();
    // Its chunk, and the knowledge base's count of the word.
    expect([...(await tablesContaining([marker])).keys()].sort()).toEqual([
      'public.knowledge_chunks',
      'public.knowledge_lexemes',
    ]);
    const scope = { workspaceId: gws, actor: { type: 'user' as const, userId: gone.userId }, role: 'owner' as const };
    await app.modules.workspaces.service.deleteWorkspace({ scope, confirmName: 'Ephemeral' });
    const found = await tablesContaining([marker, created.body.id]);
    expect([...found.keys()].filter((t) => !t.startsWith('pgboss.') && !/\.audit_/.test(t))).toEqual([]);
  });
});
