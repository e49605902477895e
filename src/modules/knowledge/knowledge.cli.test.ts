import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { listen } from '../../../test/helpers/gateway.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { runCli } from '../../cli/index.ts';
import type { TtyAwareIo } from '../../cli/kb.commands.ts';
import type { DocumentView, KnowledgeBaseView, SearchResult, UploadResult } from './knowledge.schemas.ts';

/**
 * `berth kb create|list|docs|upload|search|delete` in process, over HTTP against a listening
 * test app with API keys as a script would use them. Uploads that wait are answered by the
 * real `knowledge.ingest` job, drained while the command polls.
 */

let app: TestApp;
let upstream: FakeOpenAi;
let owner: SignedInClient;
let ws: string;
let url: string;
let dir: string;
/** knowledge:read + knowledge:write */
let writer: string;
/** knowledge:read only */
let reader: string;

async function key(scopes: string[]) {
  const res = await owner.post<{ secret: string }>(`/api/workspaces/${ws}/keys`, { name: 'cli', scopes });
  if (res.status !== 201) throw new Error(`key: ${res.status} ${res.text}`);
  return res.body.secret;
}

const berth = (args: string[], apiKey = writer) => berthInProcess(args, { BERTH_URL: url, BERTH_API_KEY: apiKey });

/** A file in the test's directory. */
function file(name: string, data: string | Buffer): string {
  const p = path.join(dir, name);
  writeFileSync(p, data);
  return p;
}

/** Runs queued ingestion jobs until `work` (a command waiting for them) has ended. */
async function draining<T>(work: Promise<T>): Promise<T> {
  let done = false;
  const watched = work.finally(() => {
    done = true;
  });
  while (!done) {
    await app.jobs.drain('knowledge.ingest');
    await new Promise((r) => setTimeout(r, 20));
  }
  return watched;
}

async function createKb(name: string): Promise<KnowledgeBaseView> {
  const r = await berth(['kb', 'create', name, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as KnowledgeBaseView;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-kb-cli-'));
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  owner = await signUp(app);
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Knowledge CLI' })).body.id;
  url = await listen(app);
  // The embeddings model of the first knowledge base is a gateway model of the workspace.
  upstream = await startFakeOpenAi();
  const provider = await owner.post(`/api/workspaces/${ws}/providers`, {
    adapter: 'openai-compatible',
    name: 'fake',
    baseUrl: upstream.baseUrl,
  });
  if (provider.status !== 201) throw new Error(`provider: ${provider.status} ${provider.text}`);
  writer = await key(['knowledge:read', 'knowledge:write']);
  reader = await key(['knowledge:read']);
});

afterAll(async () => {
  await app?.close();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('happy', () => {
  let kb: KnowledgeBaseView;
  const guide = '# Guide\n\nIntro text.\n\n## Refunds\n\nA refund is paid within fourteen days of a returned parcel.\n';

  it('creates a knowledge base and lists it', async () => {
    const human = await berth(['kb', 'create', 'Handbook', '--embedding-model', 'text-embedding-3-small']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(
      /^Created kb_\S+ {2}Handbook {2}\(0 ready, 0 pending, 0 failed; text search simple; embeddings text-embedding-3-small\)$/,
    );

    const list = await berth(['kb', 'list', '--json'], reader);
    expect(list.code, list.stderr).toBe(0);
    const found = (JSON.parse(list.stdout) as { data: KnowledgeBaseView[] }).data.find((b) => b.name === 'Handbook');
    expect(found).toMatchObject({ embeddingModel: 'text-embedding-3-small', textSearch: 'simple' });
    kb = found as KnowledgeBaseView;
    const plain = await berth(['kb', 'list'], reader);
    expect(plain.stdout).toContain(`${kb.id}  Handbook  (0 ready`);
  });

  it('uploads several files in one request, waits for them with plain progress lines, and prints each ready', async () => {
    const r = await draining(
      berth(['kb', 'upload', 'handbook', file('guide.md', guide), file('notes.txt', 'The keeper counts zephyrs.')]),
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^kdoc_\S+ {2}guide\.md {2}ready, 2 chunks, markdown$/m);
    expect(r.stdout).toMatch(/^kdoc_\S+ {2}notes\.txt {2}ready, 1 chunk, text$/m);
    // Not a terminal: one plain line per status change, no escape sequences.
    const err = r.stderr.split('\n');
    expect(err[0]).toBe('guide.md: queued');
    expect(err).toContain('guide.md: ready');
    expect(err).toContain('notes.txt: ready');
    expect(r.stderr).not.toContain('\x1b');

    const docs = await berth(['kb', 'docs', kb.id, '--json'], reader);
    const data = (JSON.parse(docs.stdout) as { data: DocumentView[] }).data;
    expect(data.map((d) => [d.filename, d.status]).sort()).toEqual([
      ['guide.md', 'ready'],
      ['notes.txt', 'ready'],
    ]);
  });

  it('searches with citations: title and headings, document, offsets, score, text; the same as JSON', async () => {
    const asJson = await berth(['kb', 'search', 'Handbook', 'refund parcel', '--json'], reader);
    expect(asJson.code, asJson.stderr).toBe(0);
    const result = JSON.parse(asJson.stdout) as SearchResult;
    // An embeddings model: hybrid by default, each result with its rank on both sides.
    expect(result.mode).toBe('hybrid');
    const hit = result.data[0];
    if (!hit) throw new Error('no result');
    expect(guide.slice(hit.startOffset, hit.endOffset)).toBe(hit.text);

    const human = await berth(['kb', 'search', 'Handbook', 'refund parcel'], reader);
    expect(human.code, human.stderr).toBe(0);
    const lines = human.stdout.split('\n');
    expect(lines[0]).toBe('1. Guide > Refunds');
    expect(lines[1]).toBe(
      `   ${hit.documentId} chunk ${hit.chunkIndex}, chars ${hit.startOffset}-${hit.endOffset}, score ${hit.score.toFixed(4)} (lexical #${hit.lexicalRank}, vector #${hit.vectorRank})`,
    );
    expect(lines[2]).toBe(`   ${hit.text.replace(/\s+/g, ' ').trim()}`);

    const none = await berth(['kb', 'search', 'Handbook', 'xylophone', '--mode', 'lexical'], reader);
    expect(none).toMatchObject({ code: 0, stdout: 'No matches.' });
  });

  it('limits results with --top-k and filters by --document', async () => {
    const all = JSON.parse((await berth(['kb', 'search', kb.id, 'guide or zephyrs', '--json'])).stdout) as SearchResult;
    expect(new Set(all.data.map((r) => r.documentId)).size).toBe(2);
    const one = JSON.parse(
      (await berth(['kb', 'search', kb.id, 'guide or zephyrs', '--top-k', '1', '--json'])).stdout,
    ) as SearchResult;
    expect(one.data).toHaveLength(1);
    const only = all.data.find((r) => r.title !== 'Guide')?.documentId as string;
    const filtered = JSON.parse(
      (await berth(['kb', 'search', kb.id, 'guide or zephyrs', '--json', '--document', only])).stdout,
    ) as SearchResult;
    expect(filtered.data.map((r) => r.documentId)).toEqual([only]);
  });

  it('--no-wait prints the queued documents at once; the same file again is a duplicate', async () => {
    const p = file('later.txt', 'Queued text about pelicans.');
    const r = await berth(['kb', 'upload', kb.id, p, '--no-wait', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const up = JSON.parse(r.stdout) as UploadResult;
    expect(up.data).toMatchObject([{ filename: 'later.txt', outcome: 'created', document: { status: 'queued' } }]);
    expect(r.stderr).toBe('');

    // Searching while it is pending says so.
    const pending = await berth(['kb', 'search', kb.id, 'zephyrs']);
    expect(pending.stdout).toContain('1 document is still processing and not searched.');

    const again = await berth(['kb', 'upload', kb.id, p, '--no-wait']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`${up.data[0]?.document.id}  later.txt  queued 0%  [already uploaded]`);
    await app.jobs.drain('knowledge.ingest');
  });

  it('on a terminal draws one progress bar redrawn in place', async () => {
    const kbt = await createKb('Terminal');
    const out: string[] = [];
    const err: string[] = [];
    const stdin = new PassThrough();
    stdin.end();
    const io: TtyAwareIo = {
      out: (s) => out.push(s),
      err: (s) => err.push(s),
      errIsTty: true,
      env: { BERTH_LOG_LEVEL: 'silent', BERTH_URL: url, BERTH_API_KEY: writer },
      stdin: stdin as unknown as NodeJS.ReadStream,
    };
    const code = await draining(
      runCli(['node', 'berth', 'kb', 'upload', kbt.id, file('a.txt', 'alpha text'), file('b.txt', 'beta text')], io),
    );
    expect(code, err.join('\n')).toBe(0);
    expect(err[0]).toMatch(/^\[-{24}\] {3}0% {2}0\/2 done$/);
    // Each later draw first moves up a line and clears it.
    expect(err.slice(1).every((l) => l.startsWith('\x1b[1A\x1b[2K'))).toBe(true);
    expect(err.at(-1)).toBe(`\x1b[1A\x1b[2K[${'#'.repeat(24)}] 100%  2/2 done`);
    expect(out.join('\n').split('\n')).toHaveLength(2);
  });

  it('deletes a document, and a knowledge base only with --yes', async () => {
    const docs = (JSON.parse((await berth(['kb', 'docs', kb.id, '--json'])).stdout) as { data: DocumentView[] }).data;
    const doc = docs.find((d) => d.filename === 'later.txt') as DocumentView;
    const one = await berth(['kb', 'delete', kb.id, '--document', doc.id]);
    expect(one).toMatchObject({ code: 0, stdout: `Deleted ${doc.id} from Handbook.` });
    const left = await berth(['kb', 'docs', kb.id]);
    expect(left.stdout).not.toContain(doc.id);

    const unconfirmed = await berth(['kb', 'delete', 'Handbook']);
    expect(unconfirmed.code).toBe(2);
    expect(unconfirmed.stderr).toContain('add --yes');
    expect((await berth(['kb', 'list'])).stdout).toContain(kb.id);

    const gone = await berth(['kb', 'delete', 'Handbook', '--yes', '--json']);
    expect(gone.code, gone.stderr).toBe(0);
    expect(JSON.parse(gone.stdout)).toEqual({ deleted: kb.id });
    expect((await berth(['kb', 'list'])).stdout).not.toContain(kb.id);
  });
});

describe('errors', () => {
  let kb: KnowledgeBaseView;

  beforeAll(async () => {
    kb = await createKb('Errors');
  });

  it('exits 1 when a document failed, printing its code and reason; the others are ready', async () => {
    const corrupt = Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(300)]);
    const r = await draining(
      berth(['kb', 'upload', kb.id, file('broken.pdf', corrupt), file('fine.txt', 'Fine text about pelicans.')]),
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^kdoc_\S+ {2}broken\.pdf {2}failed: corrupt_file \(.+\)$/m);
    expect(r.stdout).toMatch(/^kdoc_\S+ {2}fine\.txt {2}ready, 1 chunk, text$/m);
    expect(r.stderr).toContain('broken.pdf: failed (corrupt_file)');
    expect(r.stderr).toMatch(/berth: 1 document failed:\nbroken\.pdf: corrupt_file: .+/);

    // As JSON: the documents on stdout (one JSON value), exit 1 all the same.
    const j = await draining(berth(['kb', 'upload', kb.id, file('empty.txt', ''), '--json']));
    expect(j.code).toBe(1);
    const up = JSON.parse(j.stdout) as UploadResult;
    expect(up.data[0]?.document).toMatchObject({ status: 'failed', failure: { code: 'empty_file' } });
  });

  it('searches in the mode asked for; a mode the knowledge base cannot serve is the server refusal; an unknown one a usage error', async () => {
    const made = await berth(['kb', 'create', 'Embedded', '--embedding-model', 'text-embedding-3-small', '--json']);
    const embedded = JSON.parse(made.stdout) as KnowledgeBaseView;
    const reranked = await berth(['kb', 'create', 'Reranked', '--rerank-model', 'gpt-4o-mini']);
    expect(reranked.stdout).toMatch(/\(0 ready, 0 pending, 0 failed; text search simple; rerank gpt-4o-mini\)$/);
    await draining(berth(['kb', 'upload', embedded.id, file('birds.txt', 'Pelicans dive for fish.')]));
    const vector = await berth(['kb', 'search', embedded.id, 'pelicans', '--mode', 'vector', '--json']);
    expect(vector.code, vector.stdout + vector.stderr).toBe(0);
    const v = JSON.parse(vector.stdout) as SearchResult;
    expect(v.mode).toBe('vector');
    expect(v.data.length).toBeGreaterThan(0);
    expect(v.data.every((h, i) => h.vectorRank === i + 1 && h.lexicalRank === null)).toBe(true);
    const lexical = await berth(['kb', 'search', kb.id, 'pelicans', '--mode', 'lexical', '--json']);
    expect((JSON.parse(lexical.stdout) as SearchResult).mode).toBe('lexical');

    // This describe's knowledge base has no embeddings model.
    const refused = await berth(['kb', 'search', kb.id, 'pelicans', '--mode', 'hybrid', '--json']);
    expect(refused.code).toBe(4);
    expect(JSON.parse(refused.stdout)).toMatchObject({ error: { code: 'search_mode_unavailable' } });

    const bogus = await berth(['kb', 'search', kb.id, 'pelicans', '--mode', 'semantic']);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toContain('--mode: one of lexical, vector, hybrid');
  });

  it('uploads with --meta and filters searches with --where', async () => {
    const tagged = await createKb('Tagged');
    const en = file('en.txt', 'Gulls and pelicans nest on the cliffs.');
    const de = file('de.txt', 'Pelikane und Möwen nisten an den Klippen, pelicans too.');
    expect((await draining(berth(['kb', 'upload', tagged.id, en, '--meta', 'lang=en', 'year=2024']))).code).toBe(0);
    expect((await draining(berth(['kb', 'upload', tagged.id, de, '--meta', 'lang=de', 'reviewed=true']))).code).toBe(0);
    const docs = (JSON.parse((await berth(['kb', 'docs', tagged.id, '--json'])).stdout) as { data: DocumentView[] })
      .data;
    expect(docs.find((d) => d.filename === 'en.txt')?.metadata).toEqual({ lang: 'en', year: 2024 });
    expect(docs.find((d) => d.filename === 'de.txt')?.metadata).toEqual({ lang: 'de', reviewed: true });

    const all = JSON.parse((await berth(['kb', 'search', tagged.id, 'pelicans', '--json'])).stdout) as SearchResult;
    expect(all.data).toHaveLength(2);
    const only = JSON.parse(
      (await berth(['kb', 'search', tagged.id, 'pelicans', '--where', 'lang=de', 'reviewed=true', '--json'])).stdout,
    ) as SearchResult;
    expect(only.data.map((h) => h.documentId)).toEqual([docs.find((d) => d.filename === 'de.txt')?.id]);
    const none = await berth(['kb', 'search', tagged.id, 'pelicans', '--where', 'year=1999']);
    expect(none.stdout).toBe('No matches.');
    const bad = await berth(['kb', 'search', tagged.id, 'pelicans', '--where', 'nokey']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--where: key=value (got nokey).');
  });

  it("passes on the server's refusals with exit 4 and its code", async () => {
    const empty = await berth(['kb', 'search', kb.id, '   ', '--json']);
    expect(empty.code).toBe(4);
    expect(JSON.parse(empty.stdout)).toMatchObject({ error: { code: 'search_query_empty' } });
    const taken = await berth(['kb', 'create', 'errors', '--json']);
    expect(taken.code).toBe(4);
    expect(JSON.parse(taken.stdout)).toMatchObject({ error: { code: 'knowledge_base_name_taken' } });
    const unknown = await berth(['kb', 'docs', 'Nowhere']);
    expect(unknown).toMatchObject({ code: 4, stderr: 'berth: No knowledge base named Nowhere.' });
  });

  it('stops before sending anything when a file cannot be read, and on a bad --top-k', async () => {
    const before = (JSON.parse((await berth(['kb', 'docs', kb.id, '--json'])).stdout) as { data: unknown[] }).data;
    const r = await berth(['kb', 'upload', kb.id, file('ok.txt', 'ok'), path.join(dir, 'missing.txt')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('missing.txt');
    const after = (JSON.parse((await berth(['kb', 'docs', kb.id, '--json'])).stdout) as { data: unknown[] }).data;
    expect(after).toHaveLength(before.length);
    expect((await berth(['kb', 'search', kb.id, 'x', '--top-k', '0'])).code).toBe(2);
  });
});

describe('security', () => {
  it('a key with knowledge:read only searches but cannot upload, create or delete', async () => {
    const kb = await createKb('Readable');
    const up = await berth(['kb', 'upload', kb.id, file('r.txt', 'readable'), '--no-wait', '--json'], reader);
    expect(up.code).toBe(4);
    expect(JSON.parse(up.stdout)).toMatchObject({ error: { code: 'insufficient_scope' } });
    expect((await berth(['kb', 'create', 'Mine'], reader)).code).toBe(4);
    expect((await berth(['kb', 'delete', kb.id, '--yes'], reader)).code).toBe(4);
    expect((await berth(['kb', 'search', kb.id, 'anything'], reader)).code).toBe(0);
  });

  it('without an API key it stops with exit 2 before any request', async () => {
    const r = await berthInProcess(['kb', 'list'], { BERTH_URL: url });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--api-key');
  });

  it('never prints control characters from customer content to the terminal', async () => {
    // The server keeps C0 and C1 controls (U+009B is CSI on 8-bit terminals) out of file names;
    // the CLI masks any that content brings in the human lines as well.
    const kb = await createKb('Escapes');
    const r = await draining(berth(['kb', 'upload', kb.id, file('evil\u009b2J\u0007.txt', 'The walrus sings.')]));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^kdoc_\S+ {2}evil2J\.txt {2}ready/m);
    const docs = (JSON.parse((await berth(['kb', 'docs', kb.id, '--json'])).stdout) as { data: DocumentView[] }).data;
    expect(docs[0]?.filename).toBe('evil2J.txt');
    const human = await berth(['kb', 'docs', kb.id]);
    expect(human.stdout).toContain('evil2J.txt');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what must be absent
    expect(human.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
  });
});
