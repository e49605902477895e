import { and, asc, count, desc, eq, getTableColumns, inArray, lt, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import type { QueryMatch } from './knowledge.lexical.ts';
import {
  type DocumentMetadata,
  type DocumentStatus,
  type KnowledgeBaseRow,
  type KnowledgeChunkInsert,
  type KnowledgeDocumentRow,
  knowledgeBases,
  knowledgeChunks,
  knowledgeDocuments,
} from './knowledge.tables.ts';

/** A document's row without its original file (lists and status reads never load it). */
export type DocumentMeta = Omit<KnowledgeDocumentRow, 'originalCiphertext'>;

export type SearchHit = {
  chunkId: string;
  documentId: string;
  title: string;
  chunkIndex: number;
  text: string;
  headingPath: string[];
  startOffset: number;
  endOffset: number;
  score: number;
};

const { originalCiphertext: _original, ...metaColumns } = getTableColumns(knowledgeDocuments);

const CHUNK_BATCH = 500;

/** A search hit's columns but its score. */
const hitColumns = {
  chunkId: knowledgeChunks.id,
  documentId: knowledgeChunks.documentId,
  title: knowledgeDocuments.title,
  chunkIndex: knowledgeChunks.chunkIndex,
  text: knowledgeChunks.text,
  headingPath: knowledgeChunks.headingPath,
  startOffset: knowledgeChunks.startOffset,
  endOffset: knowledgeChunks.endOffset,
};

/** A word in more than this share of a knowledge base's chunks is dropped from a question that has rarer ones. */
export const COMMON_WORD_SHARE = 0.1;

/**
 * The most matching chunks lexical search ranks. A question of common words only can match
 * most of a large knowledge base; it then ranks the first RANK_BUDGET matches (in storage
 * order), which bounds its time. Questions with a rarer word stay exact.
 */
export const RANK_BUDGET = 5_000;

/**
 * The `any` query without the words in more than COMMON_WORD_SHARE of the knowledge base's
 * chunks, when it has rarer words: those match most chunks, rank them all and add little; and
 * of the others, the rarest ones whose chunks together stay within RANK_BUDGET (the knowledge
 * base's own counts, never other workspaces'). A query of common words only is left as it is. Answers the query and how many chunks it can match at most.
 */
async function withoutCommonWords(
  tx: Database,
  q: { workspaceId: string; kbId: string; config: string; query: string },
  text: string,
): Promise<{ text: string; matches: number }> {
  const res = (await tx.execute(sql`
    with words as (select distinct lexeme from unnest(to_tsvector(${q.config}::regconfig, ${q.query})))
    select w.lexeme, coalesce(l.chunks, 0) as chunks,
      (select coalesce(sum(chunk_count), 0) from knowledge_documents
        where workspace_id = ${q.workspaceId} and knowledge_base_id = ${q.kbId} and status = 'ready') as total
    from words w left join knowledge_lexemes l
      on l.workspace_id = ${q.workspaceId} and l.knowledge_base_id = ${q.kbId} and l.lexeme = w.lexeme
    order by w.lexeme`)) as unknown as { rows: Array<{ lexeme: string; chunks: number; total: number | string }> };
  const total = Number(res.rows[0]?.total ?? 0);
  const sum = (rows: typeof res.rows) => rows.reduce((n, r) => n + Number(r.chunks), 0);
  // The rarest words first; a further one only while the matches stay within the rank budget
  // (the rarest is always kept): a word adds the more to a question the fewer chunks have it.
  const byRarity = res.rows.filter((r) => Number(r.chunks) <= total * COMMON_WORD_SHARE);
  byRarity.sort((a, b) => Number(a.chunks) - Number(b.chunks));
  const rare: typeof res.rows = [];
  for (const r of byRarity) {
    if (rare.length > 0 && sum(rare) + Number(r.chunks) > RANK_BUDGET) continue;
    rare.push(r);
  }
  if (rare.length === 0 || rare.length === res.rows.length) return { text, matches: sum(res.rows) };
  const kept = rare.map((r) => `'${r.lexeme.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`).join(' | ');
  return { text: kept, matches: sum(rare) };
}

/** Every SQL statement on the knowledge tables. Each names its workspace. */
export const knowledgeRepo = {
  async insertBase(tx: Database, row: KnowledgeBaseRow): Promise<void> {
    await tx.insert(knowledgeBases).values(row);
  },

  /** Whether the database has a text search configuration of this name. */
  async textSearchExists(tx: Database, name: string): Promise<boolean> {
    const res = (await tx.execute(sql`select 1 from pg_ts_config where cfgname = ${name}`)) as unknown as {
      rows: unknown[];
    };
    return res.rows.length > 0;
  },

  async findBase(tx: Database, workspaceId: string, id: string): Promise<KnowledgeBaseRow | undefined> {
    const [row] = await tx
      .select()
      .from(knowledgeBases)
      .where(and(eq(knowledgeBases.workspaceId, workspaceId), eq(knowledgeBases.id, id)));
    return row;
  },

  async listBases(tx: Database, workspaceId: string): Promise<KnowledgeBaseRow[]> {
    return tx
      .select()
      .from(knowledgeBases)
      .where(eq(knowledgeBases.workspaceId, workspaceId))
      .orderBy(asc(knowledgeBases.name), asc(knowledgeBases.id));
  },

  /** Deletes the knowledge base; its documents and chunks go with it (foreign keys cascade). */
  async deleteBase(tx: Database, workspaceId: string, id: string): Promise<{ id: string; name: string } | undefined> {
    const [row] = await tx
      .delete(knowledgeBases)
      .where(and(eq(knowledgeBases.workspaceId, workspaceId), eq(knowledgeBases.id, id)))
      .returning({ id: knowledgeBases.id, name: knowledgeBases.name });
    return row;
  },

  /** Documents per status of one knowledge base. */
  async statusCounts(tx: Database, workspaceId: string, kbId: string): Promise<Record<DocumentStatus, number>> {
    const rows = await tx
      .select({ status: knowledgeDocuments.status, n: count() })
      .from(knowledgeDocuments)
      .where(and(eq(knowledgeDocuments.workspaceId, workspaceId), eq(knowledgeDocuments.knowledgeBaseId, kbId)))
      .groupBy(knowledgeDocuments.status);
    const out = { queued: 0, processing: 0, ready: 0, failed: 0 };
    for (const r of rows) out[r.status] = Number(r.n);
    return out;
  },

  async insertDocument(tx: Database, row: KnowledgeDocumentRow): Promise<void> {
    await tx.insert(knowledgeDocuments).values(row);
  },

  async findDocumentByHash(
    tx: Database,
    workspaceId: string,
    kbId: string,
    sha256: Buffer,
  ): Promise<DocumentMeta | undefined> {
    const [row] = await tx
      .select(metaColumns)
      .from(knowledgeDocuments)
      .where(
        and(
          eq(knowledgeDocuments.workspaceId, workspaceId),
          eq(knowledgeDocuments.knowledgeBaseId, kbId),
          eq(knowledgeDocuments.sha256, sha256),
        ),
      );
    return row;
  },

  async listDocuments(tx: Database, workspaceId: string, kbId: string): Promise<DocumentMeta[]> {
    return tx
      .select(metaColumns)
      .from(knowledgeDocuments)
      .where(and(eq(knowledgeDocuments.workspaceId, workspaceId), eq(knowledgeDocuments.knowledgeBaseId, kbId)))
      .orderBy(desc(knowledgeDocuments.createdAt), desc(knowledgeDocuments.id));
  },

  async findDocument(tx: Database, workspaceId: string, kbId: string, id: string): Promise<DocumentMeta | undefined> {
    const [row] = await tx
      .select(metaColumns)
      .from(knowledgeDocuments)
      .where(
        and(
          eq(knowledgeDocuments.workspaceId, workspaceId),
          eq(knowledgeDocuments.knowledgeBaseId, kbId),
          eq(knowledgeDocuments.id, id),
        ),
      );
    return row;
  },

  /** The document (without its original), locked until the transaction ends: ingestion's claim. */
  async lockDocument(tx: Database, workspaceId: string, id: string): Promise<DocumentMeta | undefined> {
    const [row] = await tx
      .select(metaColumns)
      .from(knowledgeDocuments)
      .where(and(eq(knowledgeDocuments.workspaceId, workspaceId), eq(knowledgeDocuments.id, id)))
      .for('update');
    return row;
  },

  /** The original file's ciphertext. */
  async originalOf(tx: Database, workspaceId: string, id: string): Promise<Buffer | undefined> {
    const [row] = await tx
      .select({ ct: knowledgeDocuments.originalCiphertext })
      .from(knowledgeDocuments)
      .where(and(eq(knowledgeDocuments.workspaceId, workspaceId), eq(knowledgeDocuments.id, id)));
    return row?.ct;
  },

  async updateDocument(
    tx: Database,
    workspaceId: string,
    id: string,
    set: Partial<
      Pick<
        KnowledgeDocumentRow,
        'status' | 'progress' | 'failureCode' | 'failureReason' | 'chunkCount' | 'kind' | 'title' | 'updatedAt'
      >
    >,
  ): Promise<void> {
    await tx
      .update(knowledgeDocuments)
      .set(set)
      .where(and(eq(knowledgeDocuments.workspaceId, workspaceId), eq(knowledgeDocuments.id, id)));
  },

  /** Deletes the document; its chunks go with it (foreign keys cascade). */
  async deleteDocument(
    tx: Database,
    workspaceId: string,
    kbId: string,
    id: string,
  ): Promise<{ id: string; filename: string } | undefined> {
    const [row] = await tx
      .delete(knowledgeDocuments)
      .where(
        and(
          eq(knowledgeDocuments.workspaceId, workspaceId),
          eq(knowledgeDocuments.knowledgeBaseId, kbId),
          eq(knowledgeDocuments.id, id),
        ),
      )
      .returning({ id: knowledgeDocuments.id, filename: knowledgeDocuments.filename });
    return row;
  },

  /**
   * Notes a change of the knowledge base's embeddings (ingested or deleted): bumps its
   * `vector_generation` and records the dimension count when it is the first. Answers the
   * dimension count now recorded.
   */
  async embeddingsChanged(
    tx: Database,
    workspaceId: string,
    kbId: string,
    dims: number | null,
  ): Promise<number | null> {
    const [row] = await tx
      .update(knowledgeBases)
      .set({
        vectorGeneration: sql`${knowledgeBases.vectorGeneration} + 1`,
        ...(dims !== null ? { embeddingDims: sql`coalesce(${knowledgeBases.embeddingDims}, ${dims})` } : {}),
      })
      .where(and(eq(knowledgeBases.workspaceId, workspaceId), eq(knowledgeBases.id, kbId)))
      .returning({ dims: knowledgeBases.embeddingDims });
    return row?.dims ?? null;
  },

  /**
   * The ready documents of the knowledge base among `documentIds` (when given) whose metadata
   * holds every key and value of `metadata` (when given): what a filtered search may return.
   */
  async filteredDocuments(
    tx: Database,
    q: {
      workspaceId: string;
      kbId: string;
      documentIds?: string[] | undefined;
      metadata?: DocumentMetadata | undefined;
    },
  ): Promise<string[]> {
    const d = knowledgeDocuments;
    const rows = await tx
      .select({ id: d.id })
      .from(d)
      .where(
        and(
          eq(d.workspaceId, q.workspaceId),
          eq(d.knowledgeBaseId, q.kbId),
          eq(d.status, 'ready'),
          q.documentIds ? inArray(d.id, q.documentIds) : undefined,
          q.metadata ? sql`${d.metadata} @> ${JSON.stringify(q.metadata)}::jsonb` : undefined,
        ),
      );
    return rows.map((r) => r.id);
  },

  /** Chunks by id with their citation fields (score 0): what vector search found, made hits. */
  async chunksByIds(tx: Database, workspaceId: string, ids: string[]): Promise<SearchHit[]> {
    if (ids.length === 0) return [];
    const c = knowledgeChunks;
    return tx
      .select({ ...hitColumns, score: sql<number>`0` })
      .from(c)
      .innerJoin(knowledgeDocuments, eq(knowledgeDocuments.id, c.documentId))
      .where(and(eq(c.workspaceId, workspaceId), inArray(c.id, ids)));
  },

  /** Documents of every workspace queued or processing since before `cutoff`: the sweep's work. */
  async staleDocuments(
    tx: Database,
    cutoff: Date,
    limit: number,
  ): Promise<Array<{ workspaceId: string; id: string; updatedAt: Date }>> {
    const d = knowledgeDocuments;
    return tx
      .select({ workspaceId: d.workspaceId, id: d.id, updatedAt: d.updatedAt })
      .from(d)
      .where(and(inArray(d.status, ['queued', 'processing']), lt(d.updatedAt, cutoff)))
      .orderBy(asc(d.updatedAt))
      .limit(limit);
  },

  /**
   * Counts a document's chunks into its knowledge base's lexeme counts (after its chunks are
   * stored), or out of them (`-1`, before they are deleted). Rows are locked in lexeme order,
   * so two documents changing counts at once wait for each other instead of deadlocking.
   */
  async countLexemes(tx: Database, workspaceId: string, kbId: string, documentId: string, sign: 1 | -1): Promise<void> {
    // ts_stat takes its rows as a query text: the document id is quoted by format(%L).
    const chunksOf = sql`format('select tsv from knowledge_chunks where document_id = %L', ${documentId}::text)`;
    if (sign === 1) {
      await tx.execute(sql`
        insert into knowledge_lexemes (workspace_id, knowledge_base_id, lexeme, chunks)
        select ${workspaceId}, ${kbId}, word, ndoc from ts_stat(${chunksOf}) order by word
        on conflict (knowledge_base_id, lexeme) do update set chunks = knowledge_lexemes.chunks + excluded.chunks`);
      return;
    }
    await tx.execute(sql`
      with stat as (select word, ndoc from ts_stat(${chunksOf})),
      locked as (
        select l.lexeme, s.ndoc from knowledge_lexemes l join stat s on s.word = l.lexeme
        where l.workspace_id = ${workspaceId} and l.knowledge_base_id = ${kbId}
        order by l.lexeme for update of l
      ),
      gone as (
        delete from knowledge_lexemes l using locked
        where l.knowledge_base_id = ${kbId} and l.lexeme = locked.lexeme and l.chunks <= locked.ndoc
      )
      update knowledge_lexemes l set chunks = l.chunks - locked.ndoc from locked
      where l.knowledge_base_id = ${kbId} and l.lexeme = locked.lexeme and l.chunks > locked.ndoc`);
  },

  /**
   * Whether the planner's statistics of the chunks are missing (no column statistics: a
   * CREATE INDEX sets the row count, not these) or their row count is off by more than a tenth
   * (and 500 rows): then its plans (HNSW or a sort, GIN or a scan) are guesses. Every workspace's.
   */
  async plannerStatisticsStale(tx: Database): Promise<boolean> {
    const res = (await tx.execute(sql`
      select (select count(*) from knowledge_chunks)::float8 as rows,
             (select reltuples from pg_class where oid = 'knowledge_chunks'::regclass)::float8 as estimate,
             exists (select 1 from pg_stats where schemaname = current_schema()
                       and tablename = 'knowledge_chunks' and attname = 'knowledge_base_id') as analysed`)) as unknown as {
      rows: Array<{ rows: number; estimate: number; analysed: boolean }>;
    };
    const { rows = 0, estimate = -1, analysed = false } = res.rows[0] ?? {};
    if (rows === 0) return false;
    if (!analysed || estimate < 0) return true;
    return Math.abs(rows - estimate) > Math.max(500, estimate * 0.1);
  },

  /** Refreshes the planner's statistics of the knowledge tables (ANALYZE). */
  async analyze(tx: Database): Promise<void> {
    await tx.execute(sql`analyze knowledge_chunks, knowledge_documents, knowledge_lexemes`);
  },

  /** Replaces a document's chunks (an ingestion run again starts from none). */
  async replaceChunks(
    tx: Database,
    workspaceId: string,
    documentId: string,
    rows: KnowledgeChunkInsert[],
  ): Promise<void> {
    await tx
      .delete(knowledgeChunks)
      .where(and(eq(knowledgeChunks.workspaceId, workspaceId), eq(knowledgeChunks.documentId, documentId)));
    for (let i = 0; i < rows.length; i += CHUNK_BATCH) {
      await tx.insert(knowledgeChunks).values(rows.slice(i, i + CHUNK_BATCH));
    }
  },

  /**
   * Lexical search: chunks of the knowledge base matching the query (any of its words, or
   * `websearch_to_tsquery` when it uses that syntax: see `queryOf`), ranked by `ts_rank_cd` on
   * the stored tsvector (GIN index), best first.
   */
  async searchLexical(
    tx: Database,
    q: {
      workspaceId: string;
      kbId: string;
      config: string;
      query: string;
      match: QueryMatch;
      limit: number;
      documentIds?: readonly string[] | undefined;
      /** Tests: a smaller RANK_BUDGET. */
      rankBudget?: number;
    },
  ): Promise<SearchHit[]> {
    const c = knowledgeChunks;
    // `any`: the words of plainto_tsquery (normalised, stop words dropped) ORed; phrases of
    // compound words (<->) stay phrases. Read once, so the statement below has a constant
    // query: the GIN index answers it, and the rank does not parse it again per row.
    const parsed = (await tx.execute(
      q.match === 'websearch'
        ? sql`select websearch_to_tsquery(${q.config}::regconfig, ${q.query})::text as q`
        : sql`select regexp_replace(plainto_tsquery(${q.config}::regconfig, ${q.query})::text, ' & ', ' | ', 'g') as q`,
    )) as unknown as { rows: Array<{ q: string }> };
    let text = parsed.rows[0]?.q ?? '';
    // Only stop words (or nothing searchable): nothing can match.
    if (text === '') return [];
    // How many chunks the query can match at most (unknown for web-search syntax: not bounded).
    let matches = 0;
    if (q.match === 'any') ({ text, matches } = await withoutCommonWords(tx, q, text));
    const tsquery = sql`${text}::tsquery`;
    const score = sql<number>`ts_rank_cd(${c.tsv}, ${tsquery})`;
    // The best chunks first, from the chunks alone (a chunk exists only for a ready document:
    // ingestion stores them and marks the document ready in one transaction); then their
    // citations.
    const matching = and(
      eq(c.workspaceId, q.workspaceId),
      eq(c.knowledgeBaseId, q.kbId),
      sql`${c.tsv} @@ ${tsquery}`,
      q.documentIds ? inArray(c.documentId, [...q.documentIds]) : undefined,
    );
    let top: Array<{ id: string; score: number }>;
    const budget = q.rankBudget ?? RANK_BUDGET;
    if (matches <= budget) {
      top = await tx
        .select({ id: c.id, score })
        .from(c)
        .where(matching)
        .orderBy(desc(score), asc(c.documentId), asc(c.chunkIndex))
        .limit(q.limit);
    } else {
      const first = tx
        .select({ id: c.id, tsv: c.tsv, documentId: c.documentId, chunkIndex: c.chunkIndex })
        .from(c)
        .where(matching)
        .limit(budget)
        .as('first');
      const firstScore = sql<number>`ts_rank_cd(${first.tsv}, ${tsquery})`;
      top = await tx
        .select({ id: first.id, score: firstScore })
        .from(first)
        .orderBy(desc(firstScore), asc(first.documentId), asc(first.chunkIndex))
        .limit(q.limit);
    }
    const scores = new Map(top.map((r) => [r.id, Number(r.score)]));
    const hits = await knowledgeRepo.chunksByIds(tx, q.workspaceId, [...scores.keys()]);
    const byId = new Map(hits.map((h) => [h.chunkId, h]));
    return top.flatMap((r) => {
      const h = byId.get(r.id);
      return h ? [{ ...h, score: scores.get(r.id) ?? 0 }] : [];
    });
  },
};

export type KnowledgeRepo = typeof knowledgeRepo;
