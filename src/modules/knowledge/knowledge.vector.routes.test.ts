import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HASH_EMBEDDING_DIMS, hashEmbedding } from '../../../test/fakes/hash-embeddings.ts';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { onServerPostgres } from '../../../test/helpers/db.ts';
import { findEverywhere, ownerQuery } from '../../../test/helpers/dump.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { type FormFile, multipartForm } from '../../../test/helpers/multipart.ts';
import { embeddingText } from './knowledge.embed.ts';
import { RRF_K } from './knowledge.retrieve.ts';
import type { KnowledgeBaseView, SearchResult, UploadResult } from './knowledge.schemas.ts';

/**
 * Vector and hybrid search over HTTP, with embeddings through the gateway (a fake OpenAI
 * upstream answering bag-of-words hash embeddings). On PGlite the vectors are searched by
 * pgvector; on server Postgres without pgvector by the exact in-process search: the same
 * answers either way, checked against a brute-force ranking computed here. Also: metadata
 * filters, reranking by a chat model, metering, failures that are never silent, and the
 * exact search's cache following deletions and new documents.
 */

let app: TestApp;
let upstream: FakeOpenAi;
let owner: SignedInClient;
let ws: string;
let kb: KnowledgeBaseView;

const EMBEDDINGS = 'text-embedding-3-small';
const RERANKER = 'gpt-4o-mini';

const docs = {
  tides: {
    name: 'tides.md',
    data: '# Tides\n\nThe moon pulls the ocean and the tides rise twice a day along the coast.\n',
  },
  bread: {
    name: 'bread.md',
    data: '# Bread\n\nKnead the dough, let the yeast rise overnight, then bake the loaf hot.\n',
  },
  bees: {
    name: 'bees.md',
    data: '# Bees\n\nHoney bees carry pollen between flowers and keep the hive warm in winter.\n',
  },
  stars: {
    name: 'stars.md',
    data: '# Stars\n\nA star burns hydrogen in its core; the moon only reflects light of the sun.\n',
  },
};
const ids: Record<string, string> = {};

const kbUrl = (k = kb.id) => `/api/workspaces/${ws}/knowledge/${k}`;

async function upload(k: string, files: FormFile[], metadata?: Record<string, unknown>) {
  const { payload, headers } = multipartForm(files, metadata ? { metadata: JSON.stringify(metadata) } : {});
  return owner.request<UploadResult>('POST', `${kbUrl(k)}/documents`, payload, headers);
}

function search(body: Record<string, unknown>, k = kb.id) {
  return owner.post<SearchResult & { code?: string; detail?: string }>(`${kbUrl(k)}/search`, body);
}

const ingest = () => app.jobs.drain('knowledge.ingest');

async function createKb(body: Record<string, unknown>) {
  const res = await owner.post<KnowledgeBaseView & { code?: string }>(`/api/workspaces/${ws}/knowledge`, body);
  return res;
}

/** Cosine similarity of two unit vectors. */
const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * (b[i] as number), 0);

beforeAll(async () => {
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 } });
  upstream = await startFakeOpenAi();
  owner = await signUp(app);
  ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Vectors' })).body.id;
  const provider = await owner.post(`/api/workspaces/${ws}/providers`, {
    adapter: 'openai-compatible',
    name: 'fake',
    baseUrl: upstream.baseUrl,
  });
  if (provider.status !== 201) throw new Error(`provider: ${provider.status} ${provider.text}`);
  const created = await createKb({ name: 'Nature', embeddingModel: EMBEDDINGS, textSearch: 'english' });
  expect(created.status, created.text).toBe(201);
  kb = created.body;
  const up = await upload(kb.id, [docs.tides, docs.bread], { lang: 'en', shelf: 1 });
  expect(up.status, up.text).toBe(202);
  const up2 = await upload(kb.id, [docs.bees, docs.stars], { lang: 'de', shelf: 2, reviewed: true });
  expect(up2.status, up2.text).toBe(202);
  for (const d of [...up.body.data, ...up2.body.data]) ids[d.filename] = d.document.id;
  await ingest();
});

afterAll(async () => {
  await app?.close();
  await upstream?.close();
});

describe('ingestion', () => {
  it('embeds every chunk through the gateway, metered to the uploader with the document as request id', async () => {
    const list = await owner.get<{ data: Array<{ id: string; status: string; metadata: unknown }> }>(
      `${kbUrl()}/documents`,
    );
    expect(list.body.data.map((d) => d.status)).toEqual(['ready', 'ready', 'ready', 'ready']);
    expect(list.body.data.find((d) => d.id === ids['bees.md'])?.metadata).toEqual({
      lang: 'de',
      shelf: 2,
      reviewed: true,
    });
    const base = await owner.get<KnowledgeBaseView>(kbUrl());
    expect(base.body.embeddingDimensions).toBe(HASH_EMBEDDING_DIMS);

    const rows = (await app.db.system((tx) =>
      tx.execute(sql`select document_id, embedding_dims from knowledge_chunks where knowledge_base_id = ${kb.id}`),
    )) as unknown as { rows: Array<{ document_id: string; embedding_dims: number }> };
    expect(rows.rows).toHaveLength(4);
    expect(rows.rows.every((r) => r.embedding_dims === HASH_EMBEDDING_DIMS)).toBe(true);

    await app.modules.gateway.service.usage.flush();
    const usage = (await app.db.system((tx) =>
      tx.execute(
        sql`select request_id, endpoint, model, status from usage_events where workspace_id = ${ws} and endpoint = 'embeddings'`,
      ),
    )) as unknown as { rows: Array<{ request_id: string; endpoint: string; model: string; status: number }> };
    expect(usage.rows.map((r) => r.request_id).sort()).toEqual(Object.values(ids).sort());
    expect(usage.rows.every((r) => r.status === 200 && r.model === EMBEDDINGS)).toBe(true);
  });

  it('refuses an embeddings or rerank model the workspace cannot reach', async () => {
    const missing = await createKb({ name: 'Nowhere', embeddingModel: 'no-such-embedder' });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('model_not_found');
    const rerank = await createKb({ name: 'Nowhere', rerankModel: 'no-such-chat-model' });
    expect(rerank.body.code).toBe('model_not_found');
  });

  it('fails a document whose embeddings cannot be made, naming the code; the same file again is retried', async () => {
    const file = { name: 'fail.md', data: '# Failing\n\nThis text meets a broken embeddings provider.\n' };
    upstream.next({ kind: 'status', status: 400 });
    const up = await upload(kb.id, [file]);
    await ingest();
    const failed = await owner.get<{ status: string; failure: { code: string; reason: string } }>(
      `${kbUrl()}/documents/${up.body.data[0]?.document.id}`,
    );
    expect(failed.body.status).toBe('failed');
    expect(failed.body.failure.code).toBe('embedding_failed');
    expect(failed.body.failure.reason).toMatch(/text-embedding-3-small could not embed the document \(\w+\)/);

    const again = await upload(kb.id, [file]);
    expect(again.body.data[0]).toMatchObject({ outcome: 'retried', document: { status: 'queued', failure: null } });
    await ingest();
    const ready = await owner.get<{ status: string }>(`${kbUrl()}/documents/${up.body.data[0]?.document.id}`);
    expect(ready.body.status).toBe('ready');
    await owner.delete(`${kbUrl()}/documents/${up.body.data[0]?.document.id}`);
  });
});

describe('parallel ingestion', () => {
  it('documents of one knowledge base ingested at once all get embedded, with one dimension count', async () => {
    const res = await createKb({ name: 'Parallel', embeddingModel: EMBEDDINGS });
    const files = Array.from({ length: 6 }, (_, i) => ({
      name: `p${i}.md`,
      data: `# Part ${i}\n\nParallel text number ${i} about rivers and deltas.\n`,
    }));
    const up = await upload(res.body.id, files);
    const docIds = up.body.data.map((d) => d.document.id);
    // The jobs' own runs are not needed: the workers' calls, all at once (on server Postgres, in parallel).
    await ownerQuery(app, "delete from pgboss.job where name = 'knowledge.ingest'");
    await Promise.all(docIds.map((id) => app.modules.knowledge.service.ingest(ws, id)));
    const list = await owner.get<{ data: Array<{ status: string }> }>(`${kbUrl(res.body.id)}/documents`);
    expect(list.body.data.map((d) => d.status)).toEqual(Array(6).fill('ready'));
    const base = (await app.db.system((tx) =>
      tx.execute(sql`select embedding_dims, vector_generation from knowledge_bases where id = ${res.body.id}`),
    )) as unknown as { rows: Array<{ embedding_dims: number; vector_generation: string | number }> };
    expect(base.rows[0]?.embedding_dims).toBe(HASH_EMBEDDING_DIMS);
    expect(Number(base.rows[0]?.vector_generation)).toBe(6);
    const hits = await search({ query: 'rivers deltas', mode: 'vector', topK: 10 }, res.body.id);
    expect(new Set(hits.body.data.map((h) => h.documentId))).toEqual(new Set(docIds));
  });
});

// Embedded PGlite only: server Postgres keeps them by autovacuum (and serves as a role that may not ANALYZE).
describe.skipIf(onServerPostgres())('planner statistics (PGlite)', () => {
  it('are refreshed when the chunks changed by more than a tenth, and not again until they do', async () => {
    const estimate = async () => {
      const res = (await app.db.system((tx) =>
        tx.execute(sql`select reltuples::float8 as n from pg_class where oid = 'knowledge_chunks'::regclass`),
      )) as unknown as { rows: Array<{ n: number }> };
      return res.rows[0]?.n ?? -1;
    };
    const service = app.modules.knowledge.service;
    // Nothing ever analysed these tables (no autovacuum): the first refresh runs and brings the
    // planner's estimate to the table's size.
    expect(await service.refreshPlannerStatistics()).toBe(true);
    const rows = (await app.db.system((tx) =>
      tx.execute(sql`select count(*)::float8 as n from knowledge_chunks`),
    )) as unknown as { rows: Array<{ n: number }> };
    expect(await estimate()).toBe(rows.rows[0]?.n);
    // ... after which there is nothing to do.
    expect(await service.refreshPlannerStatistics()).toBe(false);
  });
});

describe('sweep', () => {
  /** Backdates a document's last progress by `minutes`. */
  const stall = (id: string, minutes: number) =>
    app.db.system((tx) =>
      tx.execute(
        sql`update knowledge_documents set updated_at = now() - make_interval(mins => ${minutes}) where id = ${id}`,
      ),
    );

  it('queues again a document whose job was lost, and fails one stalled for twice as long', async () => {
    const up = await upload(kb.id, [
      { name: 'lost.md', data: '# Lost\n\nA job that a crashed worker took with it.\n' },
      { name: 'stuck.md', data: '# Stuck\n\nA document that never finishes.\n' },
    ]);
    const [lost, stuck] = up.body.data.map((d) => d.document.id) as [string, string];
    // Their jobs are gone (a worker crashed with them): nothing would process them.
    await ownerQuery(app, "delete from pgboss.job where name = 'knowledge.ingest'");
    await stall(lost, 20);
    await stall(stuck, 45);
    const swept = await app.modules.knowledge.service.sweep();
    expect(swept).toEqual({ resent: 1, failed: 1 });
    await ingest();
    const doc = (id: string) =>
      owner.get<{ status: string; failure: { code: string } | null }>(`${kbUrl()}/documents/${id}`);
    expect((await doc(lost)).body.status).toBe('ready');
    expect((await doc(stuck)).body).toMatchObject({ status: 'failed', failure: { code: 'processing_stalled' } });
    // Fresh documents are left alone.
    expect(await app.modules.knowledge.service.sweep()).toEqual({ resent: 0, failed: 0 });
    for (const id of [lost, stuck]) await owner.delete(`${kbUrl()}/documents/${id}`);
  });
});

describe('search', () => {
  it('vector search ranks chunks by cosine similarity, exactly as a brute-force ranking does', async () => {
    const query = 'moon and ocean tides';
    const res = await search({ query, mode: 'vector', topK: 4 });
    expect(res.status, res.text).toBe(200);
    expect(res.body.mode).toBe('vector');
    // Every chunk (one per document), each at the cosine similarity of the text it was embedded as.
    expect(new Set(res.body.data.map((h) => h.documentId))).toEqual(new Set(Object.values(ids)));
    const q = hashEmbedding(query, HASH_EMBEDDING_DIMS);
    const expected = res.body.data.map((h) => dot(q, hashEmbedding(embeddingText(h), HASH_EMBEDDING_DIMS)));
    for (const [i, h] of res.body.data.entries()) {
      expect(h.score).toBeCloseTo(expected[i] as number, 4);
      expect(h.vectorRank).toBe(i + 1);
      expect(h.lexicalRank).toBeNull();
    }
    expect(expected).toEqual([...expected].sort((a, b) => b - a));
    expect(res.body.data[0]?.documentId).toBe(ids['tides.md']);
  });

  it('the full-text match may be an index condition under row-level security (migration 0044)', async () => {
    const res = (await app.db.system((tx) =>
      tx.execute(sql`select proleakproof from pg_proc where proname = 'ts_match_vq'`),
    )) as unknown as { rows: Array<{ proleakproof: boolean }> };
    expect(res.rows.map((r) => r.proleakproof)).toEqual([true]);
  });

  it('hybrid is the default with an embeddings model, and fuses both rankings by reciprocal rank', async () => {
    const res = await search({ query: 'moon', topK: 10 });
    expect(res.status, res.text).toBe(200);
    expect(res.body.mode).toBe('hybrid');
    const top = res.body.data[0];
    // "moon" is in two documents: both sides rank them, lexical finds nothing else.
    expect(
      res.body.data
        .filter((h) => h.lexicalRank !== null)
        .map((h) => h.documentId)
        .sort(),
    ).toEqual([ids['tides.md'], ids['stars.md']].sort());
    expect([ids['tides.md'], ids['stars.md']]).toContain(top?.documentId);
    for (const h of res.body.data) {
      const expected =
        (h.lexicalRank ? 1 / (RRF_K + h.lexicalRank) : 0) + (h.vectorRank ? 1 / (RRF_K + h.vectorRank) : 0);
      expect(h.score).toBeCloseTo(expected, 10);
    }
    const scores = res.body.data.map((h) => h.score);
    expect(scores).toEqual([...scores].sort((a, b) => b - a));
  });

  it('filters by metadata and by document, on every mode', async () => {
    for (const mode of ['lexical', 'vector', 'hybrid']) {
      const de = await search({ query: 'moon or honey', mode, filters: { metadata: { lang: 'de' } } });
      expect(de.status, de.text).toBe(200);
      expect(new Set(de.body.data.map((h) => h.documentId))).toEqual(new Set([ids['bees.md'], ids['stars.md']]));
      // Vector search ranks every document of the filter (nearest first); lexical only matches.
      const en = await search({ query: 'moon or honey', mode, filters: { metadata: { lang: 'en' } } });
      expect(en.body.data[0]?.documentId).toBe(ids['tides.md']);
      const enDocs = [ids['tides.md'], ids['bread.md']];
      expect(en.body.data.every((h) => enDocs.includes(h.documentId))).toBe(true);
      const both = await search({
        query: 'moon or honey',
        mode,
        filters: { metadata: { lang: 'de', reviewed: true }, documentIds: [ids['stars.md']] },
      });
      expect(both.body.data.map((h) => h.documentId)).toEqual([ids['stars.md']]);
      const none = await search({ query: 'moon', mode, filters: { metadata: { lang: 'fr' } } });
      expect(none.body.data).toEqual([]);
    }
    const bad = await search({ query: 'moon', filters: { metadata: { 'bad key!': 1 } } });
    expect(bad.status).toBe(400);
  });

  it('meters the query embedding to the searching member', async () => {
    const before = await embeddingCalls();
    await search({ query: 'pollen and flowers', mode: 'vector' });
    await search({ query: 'pollen and flowers', mode: 'lexical' });
    expect(await embeddingCalls()).toBe(before + 1);
  });

  it('a hybrid search whose query cannot be embedded fails with the gateway code instead of answering lexically', async () => {
    upstream.next({ kind: 'status', status: 503 });
    const res = await search({ query: 'moon', mode: 'hybrid' });
    expect(res.status).toBeGreaterThanOrEqual(500);
    expect(res.body.code).toMatch(/^upstream_/);
    expect(res.body.data).toBeUndefined();
  });

  it('a knowledge base without an embeddings model is lexical only and says so', async () => {
    const plain = await createKb({ name: 'Plain' });
    expect(plain.body.embeddingModel).toBeNull();
    await upload(plain.body.id, [docs.tides]);
    await ingest();
    const lexical = await search({ query: 'tides' }, plain.body.id);
    expect(lexical.body.mode).toBe('lexical');
    expect(lexical.body.data).toHaveLength(1);
    for (const mode of ['vector', 'hybrid']) {
      const res = await search({ query: 'tides', mode }, plain.body.id);
      expect(res.status).toBe(400);
      expect(res.body.code).toBe('search_mode_unavailable');
    }
    const rerank = await search({ query: 'tides', rerank: true }, plain.body.id);
    expect(rerank.body.code).toBe('rerank_unavailable');
  });

  it('follows deletions and new documents at once (the exact search cache is never stale)', async () => {
    const first = await search({ query: 'yeast dough loaf', mode: 'vector', topK: 1 });
    expect(first.body.data[0]?.documentId).toBe(ids['bread.md']);
    const chunk = first.body.data[0]?.chunkId as string;
    await owner.delete(`${kbUrl()}/documents/${ids['bread.md']}`);
    // The document, its chunk and its vector are gone from every table. Left: the audit log
    // naming the document, and the billing record of its embeddings call (request id = the
    // document's id; no content).
    const left = await findEverywhere(app, [chunk, ids['bread.md'] as string, 'overnight']);
    expect(left.filter((hit) => !/^(public\.audit_|pgboss\.)/.test(hit))).toEqual([
      `public.usage_events.request_id: ${ids['bread.md']}`,
    ]);
    const gone = await search({ query: 'yeast dough loaf', mode: 'vector', topK: 10 });
    expect(gone.body.data.map((h) => h.documentId)).not.toContain(ids['bread.md']);
    const up = await upload(kb.id, [{ name: 'rolls.md', data: '# Rolls\n\nYeast dough rolls, a small loaf each.\n' }]);
    await ingest();
    const back = await search({ query: 'yeast dough loaf', mode: 'vector', topK: 1 });
    expect(back.body.data[0]?.documentId).toBe(up.body.data[0]?.document.id);
  });
});

describe('rerank', () => {
  let reranked: KnowledgeBaseView;

  beforeAll(async () => {
    const res = await createKb({ name: 'Reranked', embeddingModel: EMBEDDINGS, rerankModel: RERANKER });
    expect(res.status, res.text).toBe(201);
    reranked = res.body;
    await upload(reranked.id, [docs.tides, docs.stars]);
    await ingest();
  });

  it('reorders the fused candidates by the model relevance scores (the default with a rerank model)', async () => {
    const plain = await search({ query: 'moon', rerank: false }, reranked.id);
    expect(plain.body.reranked).toBe(false);
    const [a, b] = plain.body.data;
    if (!a || !b) throw new Error('two results expected');
    // The model rates the second candidate higher.
    // The query's embedding first, then the rerank call.
    upstream.next(
      { kind: 'ok' },
      { kind: 'reply', content: 'Scores: {"scores":[{"id":1,"score":2},{"id":2,"score":9}]}' },
    );
    const res = await search({ query: 'moon' }, reranked.id);
    expect(res.status, res.text).toBe(200);
    expect(res.body.reranked).toBe(true);
    expect(res.body.data.map((h) => [h.chunkId, h.rerankScore])).toEqual([
      [b.chunkId, 9],
      [a.chunkId, 2],
    ]);
    // The passages went to the model as data, numbered, with the query.
    const call = [...upstream.received].reverse().find((r) => r.path.endsWith('/chat/completions'));
    const prompt = JSON.stringify(call?.body);
    expect(prompt).toContain('Query: moon');
    expect(prompt).toContain('[1]');
  });

  it('an answer without scores fails the search with rerank_failed', async () => {
    upstream.next({ kind: 'ok' }, { kind: 'reply', content: 'I think the first one is best.' });
    const res = await search({ query: 'moon' }, reranked.id);
    expect(res.status).toBe(502);
    expect(res.body.code).toBe('rerank_failed');
  });
});

async function embeddingCalls(): Promise<number> {
  await app.modules.gateway.service.usage.flush();
  const res = (await app.db.system((tx) =>
    tx.execute(sql`select count(*)::int as n from usage_events where workspace_id = ${ws} and endpoint = 'embeddings'`),
  )) as unknown as { rows: Array<{ n: number }> };
  return res.rows[0]?.n ?? 0;
}
