import { sql } from 'drizzle-orm';
import type { EmbeddingsRequest, EmbeddingsResponse } from '../../src/modules/gateway/index.ts';
import type { Embed } from '../../src/modules/knowledge/knowledge.embed.ts';
import type { SearchMode } from '../../src/modules/knowledge/knowledge.schemas.ts';
import { type knowledgeService, UPLOAD_LIMITS } from '../../src/modules/knowledge/knowledge.service.ts';
import { type Db, openPglite } from '../../src/platform/db/db.ts';
import { migratePglite } from '../../src/platform/db/migrate.ts';
import { AppError } from '../../src/platform/errors.ts';
import type { Scope } from '../../src/platform/http/context.ts';
import { newId } from '../../src/platform/ids.ts';
import { HASH_EMBEDDING_DIMS, hashEmbedding } from '../../test/fakes/hash-embeddings.ts';
import { benchKnowledgeService } from '../knowledge-service.ts';
import type { BeirCollection, BeirDocument } from './beir.ts';
import { evaluate } from './metrics.ts';

/**
 * Runs a BEIR collection through Berth's knowledge service as an application would: one
 * knowledge base per text search setting, every document uploaded as a Markdown file (its
 * title as a `#` heading, then its text) and ingested (parse, chunk, embed, store), every
 * judged query searched with topK 100 in each mode. Chunk hits become a document ranking
 * (a document counts once, at its best chunk's rank) scored with nDCG@10 and recall@100.
 */

export const MODES: readonly SearchMode[] = ['lexical', 'vector', 'hybrid'];
const TOP_K = 100;
const MAX_QUERY_CHARS = 2000;

export type Embedder = {
  /** What the report says the embeddings are. */
  label: string;
  /** The model name the knowledge base records. */
  model: string;
  embed: Embed;
};

/**
 * The default embeddings: `hashEmbedding`, a deterministic bag-of-words feature hashing (no
 * network). It rewards shared words, so "vector" here is a lexical proxy, not a semantic model.
 */
export function hashEmbedder(dims = HASH_EMBEDDING_DIMS): Embedder {
  return {
    label: `hash embeddings (${dims} dims): a lexical proxy, not a semantic model`,
    model: 'hash-embedding',
    embed: async (_caller, body) =>
      respond(
        body,
        inputsOf(body).map((t) => hashEmbedding(t, dims)),
      ),
  };
}

/**
 * An OpenAI-compatible embeddings endpoint: `url` is the API base (`https://host/v1`) or the
 * full `/embeddings` URL. Vectors are kept per text, so a second knowledge base of the same
 * corpus (another text search setting) costs no second call.
 */
export function remoteEmbedder(opts: { url: string; key?: string | undefined; model: string }): Embedder {
  const endpoint = /\/embeddings\/?$/.test(opts.url) ? opts.url : `${opts.url.replace(/\/+$/, '')}/embeddings`;
  const cache = new Map<string, number[]>();
  return {
    label: `${opts.model} at ${new URL(endpoint).host}`,
    model: opts.model,
    embed: async (_caller, body) => {
      const inputs = inputsOf(body);
      const todo = [...new Set(inputs.filter((t) => !cache.has(t)))];
      if (todo.length > 0) {
        const res = await fetch(endpoint, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            ...(opts.key ? { authorization: `Bearer ${opts.key}` } : {}),
          },
          body: JSON.stringify({ model: opts.model, input: todo, encoding_format: 'float' }),
          signal: AbortSignal.timeout(120_000),
        });
        if (!res.ok) {
          throw new AppError('embedding_failed', `The embeddings endpoint answered HTTP ${res.status}.`);
        }
        const json = (await res.json()) as Partial<EmbeddingsResponse>;
        for (const d of json.data ?? []) {
          const text = todo[d.index];
          if (text !== undefined && Array.isArray(d.embedding)) cache.set(text, d.embedding);
        }
      }
      // A text the endpoint did not answer for gets an empty vector, which embedTexts refuses.
      return respond(
        body,
        inputs.map((t) => cache.get(t) ?? []),
      );
    },
  };
}

function inputsOf(body: EmbeddingsRequest): string[] {
  const input = Array.isArray(body.input) ? body.input : [body.input];
  return input.map((t) => {
    if (typeof t !== 'string') throw new AppError('embedding_failed', 'The harness embeds only text inputs.');
    return t;
  });
}

function respond(body: EmbeddingsRequest, vectors: number[][]): { response: EmbeddingsResponse } {
  return {
    response: {
      object: 'list',
      model: body.model,
      data: vectors.map((embedding, index) => ({ object: 'embedding', index, embedding })),
      usage: { prompt_tokens: 0, total_tokens: 0 },
    },
  };
}

/** The file a corpus document is uploaded as. */
export function documentFile(doc: BeirDocument): { filename: string; contentType: string; bytes: Buffer } {
  const markdown = doc.title ? `# ${doc.title}\n\n${doc.text}\n` : `${doc.text}\n`;
  const safe = doc.id.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 100);
  return { filename: `${safe}.md`, contentType: 'text/markdown', bytes: Buffer.from(markdown, 'utf8') };
}

export type ModeResult = {
  textSearch: string;
  mode: SearchMode;
  ndcg10: number;
  recall100: number;
  /** Queries averaged (at least one relevant document). */
  queries: number;
  /** Queries the search answered nothing for. */
  empty: number;
  /** Wall time of all the mode's searches. */
  ms: number;
  /** Per query, the corpus ids best first (at most 100). */
  rankings: Map<string, string[]>;
};

export type BaseResult = {
  textSearch: string;
  ingestMs: number;
  /** Corpus documents whose ingestion failed, with the failure code. */
  failed: Array<{ id: string; code: string }>;
  /** Corpus documents with the same bytes as an earlier one (one Berth document, ranked for each id). */
  duplicates: number;
  chunks: number;
  results: ModeResult[];
};

export type HarnessOptions = {
  textSearch?: readonly string[];
  modes?: readonly SearchMode[];
  embedder?: Embedder;
  /** A migrated database to use (tests); default: a fresh in-memory PGlite, closed afterwards. */
  db?: Db;
  onProgress?: (message: string) => void;
};

/** Runs the collection; one `BaseResult` per text search setting. */
export async function runHarness(collection: BeirCollection, opts: HarnessOptions = {}): Promise<BaseResult[]> {
  const embedder = opts.embedder ?? hashEmbedder();
  const progress = opts.onProgress ?? (() => undefined);
  let db = opts.db;
  if (!db) {
    db = await openPglite();
    if (!db.pglite) throw new Error('PGlite expected');
    await migratePglite(db.pglite);
  }
  try {
    const workspaceId = await createWorkspace(db);
    const scope: Scope = { workspaceId, actor: { type: 'system', name: 'bench-retrieval-quality' }, role: 'owner' };
    const service = buildService(db, embedder);
    const out: BaseResult[] = [];
    for (const textSearch of opts.textSearch ?? ['simple']) {
      out.push(
        await runBase(collection, { service, scope, textSearch, embedder, modes: opts.modes ?? MODES, progress }),
      );
    }
    return out;
  } finally {
    if (!opts.db) await db.close();
  }
}

type Service = ReturnType<typeof knowledgeService>;

/** The workspace row the knowledge tables' foreign keys need. */
async function createWorkspace(db: Db): Promise<string> {
  const id = newId('ws');
  const now = new Date();
  await db.system((tx) =>
    tx.execute(
      sql`insert into workspaces (id, name, created_at, updated_at) values (${id}, 'retrieval quality', ${now}, ${now})`,
    ),
  );
  return id;
}

const buildService = (db: Db, embedder: Embedder): Service =>
  benchKnowledgeService(db, embedder.embed, embedder.model, 256 * 1024 * 1024);

async function runBase(
  collection: BeirCollection,
  ctx: {
    service: Service;
    scope: Scope;
    textSearch: string;
    embedder: Embedder;
    modes: readonly SearchMode[];
    progress: (message: string) => void;
  },
): Promise<BaseResult> {
  const { service, scope, textSearch } = ctx;
  const kb = await service.createBase({
    scope,
    input: { name: `beir ${textSearch}`, textSearch, embeddingModel: ctx.embedder.model },
  });
  const started = performance.now();
  // Berth document id -> the corpus ids uploaded as it (more than one when contents are equal).
  const corpusIds = new Map<string, string[]>();
  let duplicates = 0;
  const docs = collection.documents;
  for (let i = 0; i < docs.length; i += UPLOAD_LIMITS.maxFiles) {
    const batch = docs.slice(i, i + UPLOAD_LIMITS.maxFiles);
    const { data } = await service.upload({ scope, kbId: kb.id, files: batch.map(documentFile) });
    for (const [j, item] of data.entries()) {
      const doc = batch[j] as BeirDocument;
      const ids = corpusIds.get(item.document.id);
      if (ids) {
        ids.push(doc.id);
        duplicates++;
        continue;
      }
      corpusIds.set(item.document.id, [doc.id]);
      await service.ingest(scope.workspaceId, item.document.id);
    }
    if (i > 0 && (i / UPLOAD_LIMITS.maxFiles) % 25 === 0)
      ctx.progress(`${textSearch}: ingested ${i} of ${docs.length}`);
  }
  const ingestMs = performance.now() - started;
  const failed: BaseResult['failed'] = [];
  let chunks = 0;
  for (const d of await service.listDocuments({ scope, kbId: kb.id })) {
    chunks += d.chunkCount;
    if (d.status === 'ready') continue;
    for (const id of corpusIds.get(d.id) ?? []) failed.push({ id, code: d.failure?.code ?? d.status });
  }
  if (failed.length === docs.length) {
    throw new Error(`Every document failed to ingest (${failed[0]?.code ?? 'unknown'}); see the embeddings settings.`);
  }
  const results: ModeResult[] = [];
  for (const mode of ctx.modes) {
    const rankings = new Map<string, string[]>();
    let empty = 0;
    const t0 = performance.now();
    for (const q of collection.queries) {
      const { data } = await service.search({
        scope,
        kbId: kb.id,
        input: { query: q.text.slice(0, MAX_QUERY_CHARS), mode, topK: TOP_K },
      });
      if (data.length === 0) empty++;
      const ranking: string[] = [];
      const seen = new Set<string>();
      for (const hit of data) {
        if (seen.has(hit.documentId)) continue;
        seen.add(hit.documentId);
        ranking.push(...(corpusIds.get(hit.documentId) ?? []));
      }
      rankings.set(q.id, ranking);
    }
    const ms = performance.now() - t0;
    const scores = evaluate(rankings, collection.qrels);
    results.push({
      textSearch,
      mode,
      ndcg10: scores.ndcg10,
      recall100: scores.recall100,
      queries: scores.queries,
      empty,
      ms,
      rankings,
    });
  }
  return { textSearch, ingestMs, failed, duplicates, chunks, results };
}
