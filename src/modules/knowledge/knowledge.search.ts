import type { Db } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Caller } from '../gateway/index.ts';
import { type Embed, embedTexts } from './knowledge.embed.ts';
import { queryOf } from './knowledge.lexical.ts';
import type { KnowledgeRepo, SearchHit } from './knowledge.repo.ts';
import {
  type Complete,
  candidatesPerSide,
  type Fused,
  fuse,
  RERANK_MAX_CANDIDATES,
  rerank,
} from './knowledge.retrieve.ts';
import {
  MAX_QUERY_CHARS,
  SearchBody,
  type SearchInput,
  type SearchMode,
  type SearchResult,
} from './knowledge.schemas.ts';
import { type ExactVectors, searchPgvector, type VectorHit, type VectorMode } from './knowledge.vectors.ts';

export type SearchDeps = {
  db: Pick<Db, 'tenant'>;
  repo: KnowledgeRepo;
  embed: Embed;
  complete: Complete;
  /** Which vector search the database has (detected once). */
  vectorMode(): Promise<VectorMode>;
  exact: ExactVectors;
};

type Hit = SearchResult['data'][number];

const asHit = (h: SearchHit, extra: Partial<Hit> = {}): Hit => ({
  ...h,
  lexicalRank: null,
  vectorRank: null,
  rerankScore: null,
  ...extra,
});

/**
 * Search of one knowledge base: lexical (the stored tsvector), vector (the query's embedding
 * against the chunks', through the gateway and metered to `caller`) or hybrid (reciprocal rank
 * fusion of both sides' best `candidatesPerSide`), then optionally reranked by the knowledge
 * base's rerank model. Only ready documents are searched; `pendingDocuments` says how many are
 * not yet. Nothing degrades quietly: a vector side that cannot be computed fails the search
 * with the gateway's code instead of answering lexical results as hybrid ones.
 */
export function knowledgeSearch(deps: SearchDeps) {
  const { db, repo } = deps;

  return async function search(workspaceId: string, kbId: string, input: SearchInput, caller: Caller) {
    const body = SearchBody.parse(input);
    if (body.query.trim() === '') throw new AppError('search_query_empty', 'The query is empty.');
    if (body.query.length > MAX_QUERY_CHARS) {
      throw new AppError('search_query_too_long', `The query is longer than ${MAX_QUERY_CHARS} characters.`);
    }
    const plan = await db.tenant(workspaceId, async (tx) => {
      const kb = await repo.findBase(tx, workspaceId, kbId);
      if (!kb) throw notFound('knowledge base');
      const counts = await repo.statusCounts(tx, workspaceId, kbId);
      const pending = counts.queued + counts.processing;
      if (counts.ready === 0 && pending > 0) {
        throw new AppError(
          'knowledge_base_processing',
          'The knowledge base has no processed document yet; search again when one is ready.',
        );
      }
      const { documentIds, metadata } = body.filters;
      const only =
        documentIds || metadata
          ? await repo.filteredDocuments(tx, { workspaceId, kbId, documentIds, metadata })
          : undefined;
      return { kb, pending, ready: counts.ready, only };
    });
    const { kb, pending } = plan;
    const mode: SearchMode = body.mode ?? (kb.embeddingModel ? 'hybrid' : 'lexical');
    if (mode !== 'lexical' && !kb.embeddingModel) {
      throw new AppError(
        'search_mode_unavailable',
        `The knowledge base has no embeddings model: only lexical search is available, not ${mode}.`,
      );
    }
    const doRerank = body.rerank ?? kb.rerankModel !== null;
    if (doRerank && !kb.rerankModel) {
      throw new AppError('rerank_unavailable', 'The knowledge base has no rerank model to rerank with.');
    }
    const empty: SearchResult = { data: [], mode, reranked: false, pendingDocuments: pending };
    if (plan.ready === 0 || (plan.only && plan.only.length === 0)) return empty;

    // How many each side contributes: topK alone for one ranking without rerank.
    const pool = doRerank ? Math.max(RERANK_MAX_CANDIDATES, body.topK) : body.topK;
    const perSide = mode === 'hybrid' ? Math.max(candidatesPerSide(body.topK), pool) : pool;

    // No dimension count yet means no chunk has been embedded (no ready document has a chunk):
    // there is nothing for the vector side to find, so the query is not embedded either.
    let queryVector: Float32Array | undefined;
    if (mode !== 'lexical' && kb.embeddingModel && kb.embeddingDims !== null) {
      [queryVector] = await embedTexts(deps.embed, caller, kb.embeddingModel, [body.query], { dims: kb.embeddingDims });
    }

    const ranked: Hit[] = await db.tenant(workspaceId, async (tx) => {
      const vectorMode = queryVector ? await deps.vectorMode() : null;
      // The lexical statements are sent first: Postgres answers them while this process scans
      // the vectors (exact search), and the two sides overlap.
      let lexicalQuery: Promise<SearchHit[]> = Promise.resolve([]);
      if (mode !== 'vector') {
        const q = queryOf(kb.textSearch, body.query);
        lexicalQuery = repo.searchLexical(tx, {
          workspaceId,
          kbId,
          config: q.config,
          query: q.text,
          match: q.match,
          limit: perSide,
          documentIds: plan.only,
        });
      }
      let vector: VectorHit[] = [];
      try {
        if (queryVector && kb.embeddingDims !== null) {
          const vq = {
            workspaceId,
            kbId,
            dims: kb.embeddingDims,
            query: queryVector,
            limit: perSide,
            documentIds: plan.only,
          };
          vector =
            vectorMode === 'pgvector'
              ? await searchPgvector(tx, vq)
              : await deps.exact.search(tx, { ...vq, generation: kb.vectorGeneration });
        }
      } catch (err) {
        await lexicalQuery.catch(() => undefined);
        throw err;
      }
      const lexical = await lexicalQuery;
      if (mode === 'lexical') return lexical.map((h, i) => asHit(h, { lexicalRank: i + 1 }));
      const fused: Fused[] =
        mode === 'hybrid'
          ? fuse(lexical, vector).slice(0, pool)
          : vector.map((v, i) => ({ chunkId: v.chunkId, score: v.score, lexicalRank: null, vectorRank: i + 1 }));
      const known = new Map(lexical.map((h) => [h.chunkId, h]));
      const missing = fused.filter((f) => !known.has(f.chunkId)).map((f) => f.chunkId);
      for (const h of await repo.chunksByIds(tx, workspaceId, missing)) known.set(h.chunkId, h);
      return fused.flatMap((f) => {
        const h = known.get(f.chunkId);
        // A chunk deleted between the two reads is left out.
        return h ? [asHit(h, { score: f.score, lexicalRank: f.lexicalRank, vectorRank: f.vectorRank })] : [];
      });
    });

    if (!doRerank || !kb.rerankModel) return { ...empty, data: ranked.slice(0, body.topK) };
    // The model judges the best RERANK_MAX_CANDIDATES; any further results follow in fused order.
    const judged = await rerank(
      deps.complete,
      caller,
      kb.rerankModel,
      body.query,
      ranked.slice(0, RERANK_MAX_CANDIDATES),
    );
    const data = [...judged, ...ranked.slice(RERANK_MAX_CANDIDATES)].slice(0, body.topK);
    return { ...empty, reranked: true, data };
  };
}
