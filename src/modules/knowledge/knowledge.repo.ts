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
    },
  ): Promise<SearchHit[]> {
    const c = knowledgeChunks;
    // `any`: the words of plainto_tsquery (normalised, stop words dropped) ORed; phrases of
    // compound words (<->) stay phrases.
    const tsquery =
      q.match === 'websearch'
        ? sql`websearch_to_tsquery(${q.config}::regconfig, ${q.query})`
        : sql`regexp_replace(plainto_tsquery(${q.config}::regconfig, ${q.query})::text, ' & ', ' | ', 'g')::tsquery`;
    const score = sql<number>`ts_rank_cd(${c.tsv}, ${tsquery})`;
    const rows = await tx
      .select({ ...hitColumns, score })
      .from(c)
      .innerJoin(knowledgeDocuments, eq(knowledgeDocuments.id, c.documentId))
      .where(
        and(
          eq(c.workspaceId, q.workspaceId),
          eq(c.knowledgeBaseId, q.kbId),
          sql`${c.tsv} @@ ${tsquery}`,
          eq(knowledgeDocuments.status, 'ready'),
          q.documentIds ? inArray(c.documentId, [...q.documentIds]) : undefined,
        ),
      )
      .orderBy(desc(score), asc(c.documentId), asc(c.chunkIndex))
      .limit(q.limit);
    return rows.map((r) => ({ ...r, score: Number(r.score) }));
  },
};

export type KnowledgeRepo = typeof knowledgeRepo;
