import { sql } from 'drizzle-orm';
import { bigint, customType, integer, jsonb, pgTable, smallint, text } from 'drizzle-orm/pg-core';
import { bytea, ts } from '../../platform/db/columns.ts';
import { col, mapTable } from '../../platform/db/datamap.ts';

// Knowledge bases, their documents and chunks (see migrations/0042_knowledge.sql).

const regconfig = customType<{ data: string }>({ dataType: () => 'regconfig' });
const tsvector = customType<{ data: string }>({ dataType: () => 'tsvector' });
/**
 * A chunk's embedding: `vector` where pgvector is installed (written as its text form
 * `[0.1,0.2,...]`), otherwise `bytea` (little-endian float32). See 0043_knowledge_vectors.sql.
 */
const embedding = customType<{ data: string | Buffer }>({ dataType: () => 'vector' });

export const knowledgeBases = pgTable('knowledge_bases', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  name: text('name').notNull(),
  embeddingModel: text('embedding_model'),
  chunkTargetTokens: integer('chunk_target_tokens').notNull(),
  chunkOverlapTokens: integer('chunk_overlap_tokens').notNull(),
  textSearch: text('text_search').notNull(),
  embeddingDims: integer('embedding_dims'),
  rerankModel: text('rerank_model'),
  vectorGeneration: bigint('vector_generation', { mode: 'number' }).notNull(),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
});

export const DOCUMENT_STATUSES = ['queued', 'processing', 'ready', 'failed'] as const;
export type DocumentStatus = (typeof DOCUMENT_STATUSES)[number];

/** Metadata given at upload: a flat object of short strings, numbers and booleans (search filters). */
export type DocumentMetadata = Record<string, string | number | boolean>;

export const knowledgeDocuments = pgTable('knowledge_documents', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  knowledgeBaseId: text('knowledge_base_id').notNull(),
  title: text('title').notNull(),
  filename: text('filename').notNull(),
  contentType: text('content_type'),
  kind: text('kind'),
  sizeBytes: integer('size_bytes').notNull(),
  sha256: bytea('sha256').notNull(),
  status: text('status').$type<DocumentStatus>().notNull(),
  progress: smallint('progress').notNull(),
  failureCode: text('failure_code'),
  failureReason: text('failure_reason'),
  chunkCount: integer('chunk_count').notNull(),
  originalCiphertext: bytea('original_ciphertext').notNull(),
  metadata: jsonb('metadata').$type<DocumentMetadata>().notNull(),
  createdBy: text('created_by'),
  createdAt: ts('created_at').notNull(),
  updatedAt: ts('updated_at').notNull(),
});

export const knowledgeChunks = pgTable('knowledge_chunks', {
  id: text('id').primaryKey(),
  workspaceId: text('workspace_id').notNull(),
  knowledgeBaseId: text('knowledge_base_id').notNull(),
  documentId: text('document_id').notNull(),
  chunkIndex: integer('chunk_index').notNull(),
  text: text('text').notNull(),
  headingPath: text('heading_path').array().notNull(),
  startOffset: integer('start_offset').notNull(),
  endOffset: integer('end_offset').notNull(),
  tokenCount: integer('token_count').notNull(),
  searchConfig: regconfig('search_config').notNull(),
  searchText: text('search_text'),
  tsv: tsvector('tsv').generatedAlwaysAs(sql`to_tsvector(search_config, coalesce(search_text, text))`),
  embeddingDims: integer('embedding_dims'),
  embedding: embedding('embedding'),
});

/** How many chunks of a knowledge base contain each lexeme (see 0044_knowledge_lexical_index.sql). */
export const knowledgeLexemes = pgTable('knowledge_lexemes', {
  workspaceId: text('workspace_id').notNull(),
  knowledgeBaseId: text('knowledge_base_id').notNull(),
  lexeme: text('lexeme').notNull(),
  chunks: integer('chunks').notNull(),
});

export type KnowledgeBaseRow = typeof knowledgeBases.$inferSelect;
export type KnowledgeDocumentRow = typeof knowledgeDocuments.$inferSelect;
export type KnowledgeChunkInsert = typeof knowledgeChunks.$inferInsert;

const content = (purpose: string) => col('content', false, { purpose });

/** The data map entries: documents are customer content, kept until deleted and erased with the workspace. */
export const knowledgeTables = [
  mapTable(knowledgeBases, {
    purpose: "The workspace's knowledge bases: what agents and members search, and how documents are indexed",
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      name: content('The name the workspace gave the knowledge base'),
      embeddingModel: col('tenancy', false, { purpose: 'The embeddings model for vector search (none: lexical only)' }),
      chunkTargetTokens: col('tenancy', false, { purpose: 'Chunking: the largest chunk in tokens' }),
      chunkOverlapTokens: col('tenancy', false, { purpose: 'Chunking: the overlap between chunks in tokens' }),
      textSearch: col('tenancy', false, { purpose: 'The text search configuration (language, or cjk)' }),
      embeddingDims: col('tenancy', false, { purpose: "The embeddings model's dimension count, once known" }),
      rerankModel: col('tenancy', false, { purpose: 'The chat model that reranks search results, if any' }),
      vectorGeneration: col('tenancy', false, {
        purpose: 'A counter bumped when the embeddings change (for cached exact search)',
      }),
      createdBy: col('identifier', true, { purpose: 'The member who created the knowledge base' }),
      createdAt: col('tenancy', false),
      updatedAt: col('tenancy', false),
    },
  }),
  mapTable(knowledgeDocuments, {
    purpose: 'Documents uploaded to a knowledge base (customer content), with their processing status',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      knowledgeBaseId: col('identifier', false),
      title: content("The document's title (its own, or the file name)"),
      filename: content('The name of the uploaded file'),
      contentType: col('usage_metadata', false, { purpose: 'The MIME type the uploader declared' }),
      kind: col('usage_metadata', false, { purpose: 'The type found from the content' }),
      sizeBytes: col('usage_metadata', false, { purpose: 'The size of the original file' }),
      sha256: col('usage_metadata', false, { purpose: 'Hash of the original, to skip the same file uploaded twice' }),
      status: col('usage_metadata', false, { purpose: 'Processing status (queued, processing, ready, failed)' }),
      progress: col('usage_metadata', false, { purpose: 'Processing progress in percent' }),
      failureCode: col('usage_metadata', false, { purpose: 'Why processing failed: a stable code' }),
      failureReason: col('usage_metadata', false, {
        purpose: 'Why processing failed: a fixed message (never content)',
      }),
      chunkCount: col('usage_metadata', false, { purpose: 'How many chunks the document was cut into' }),
      // Vault ciphertext under the workspace key (the context knowledge.service.ts's
      // `originalContext` encrypts it under): a workspace export holds the original as a file of
      // its own. Only a workspace's: the bytes cannot be scrubbed of other members' data, and a
      // member's export has no document text either (chunks name no member).
      originalCiphertext: col('content', false, {
        purpose: 'The original file, encrypted with the workspace data key',
        export: 'file',
        workspaceExportOnly: true,
        exportFile: {
          context: (row) => ({
            owner: { type: 'workspace', id: String(row.workspace_id) },
            record: String(row.id),
            field: 'knowledge_original',
          }),
          file: (row) => ({ record: String(row.id), name: String(row.filename) }),
        },
      }),
      metadata: content('Metadata the uploader gave the document (for search filters)'),
      createdBy: col('identifier', true, { purpose: 'The member who uploaded the document' }),
      createdAt: col('tenancy', false),
      updatedAt: col('tenancy', false),
    },
  }),
  mapTable(knowledgeChunks, {
    purpose: 'The text of uploaded documents cut into chunks, indexed for search (customer content)',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      id: col('identifier', false),
      workspaceId: col('identifier', false),
      knowledgeBaseId: col('identifier', false),
      documentId: col('identifier', false),
      chunkIndex: col('usage_metadata', false, { purpose: "The chunk's place in its document" }),
      text: content("The chunk's text, as extracted from the document"),
      headingPath: content('The headings the chunk is under (for citations)'),
      startOffset: col('usage_metadata', false, { purpose: "Where the chunk starts in the document's text" }),
      endOffset: col('usage_metadata', false, { purpose: "Where the chunk ends in the document's text" }),
      tokenCount: col('usage_metadata', false, { purpose: "The chunk's size in tokens" }),
      searchConfig: col('usage_metadata', false, {
        purpose: 'The text search configuration the chunk is indexed with',
      }),
      // Derived from `text` (which is exported): an index, not data of its own.
      searchText: col('content', false, {
        purpose: 'CJK text written as character bigrams for indexing (derived from the chunk text)',
        export: 'never',
      }),
      tsv: col('content', false, {
        purpose: 'The lexical search index of the chunk (derived from its text)',
        export: 'never',
      }),
      embeddingDims: col('usage_metadata', false, { purpose: "The chunk embedding's dimension count" }),
      // Derived from `text` by the knowledge base's embeddings model: an index, not data of its own.
      embedding: col('content', false, {
        purpose: 'The vector search index of the chunk (its embedding, derived from its text)',
        export: 'never',
      }),
    },
  }),
  mapTable(knowledgeLexemes, {
    purpose: 'Per knowledge base, how many chunks contain each word (derived from the chunks, for search)',
    basis: 'contract',
    retention: 'workspace_lifetime',
    subject: 'workspace',
    columns: {
      workspaceId: col('identifier', false),
      knowledgeBaseId: col('identifier', false),
      // Derived from the chunks' text (which is exported): an index, not data of its own.
      lexeme: col('content', false, { purpose: 'A word of the documents, as indexed', export: 'never' }),
      chunks: col('usage_metadata', false, { purpose: 'How many chunks contain the word' }),
    },
  }),
];
