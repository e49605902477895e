import { z } from 'zod';
import { DEFAULT_CHUNK_SETTINGS } from './knowledge.chunk.ts';
import { DOCUMENT_STATUSES } from './knowledge.tables.ts';

/** Request and response shapes of the knowledge API. */

const Id = z.string().min(1).max(64);

/** The longest search query (characters); a longer one is refused with `search_query_too_long`. */
export const MAX_QUERY_CHARS = 2000;

/** Metadata of a document: a flat object (at most 32 keys) of short strings, numbers and booleans. */
export const DocumentMetadata = z
  .record(
    z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'a key of letters, digits, _ . - (at most 64)'),
    z.union([z.string().max(500), z.number().finite(), z.boolean()]),
  )
  .refine((m) => Object.keys(m).length <= 32, 'at most 32 keys');

export const KnowledgeParams = z.strictObject({ workspaceId: Id });
export const KnowledgeBaseParams = z.strictObject({ workspaceId: Id, kbId: Id });
export const DocumentParams = z.strictObject({ workspaceId: Id, kbId: Id, documentId: Id });

export const CreateKnowledgeBaseBody = z.strictObject({
  name: z.string().trim().min(1).max(100),
  embeddingModel: z
    .string()
    .min(1)
    .max(200)
    .nullable()
    .default(null)
    .describe('An embeddings model the workspace reaches through the gateway; null: lexical search only'),
  chunking: z
    .strictObject({
      targetTokens: z.number().int().min(64).max(8192),
      overlapTokens: z.number().int().min(0).max(4096),
    })
    .refine((s) => s.overlapTokens * 2 <= s.targetTokens, {
      message: 'overlapTokens must be at most half of targetTokens',
      path: ['overlapTokens'],
    })
    .default(DEFAULT_CHUNK_SETTINGS),
  textSearch: z
    .string()
    .regex(/^[a-z_]{1,63}$/, 'a text search configuration name')
    .default('simple')
    .describe("'simple', a language's configuration ('english', 'german' ...), or 'cjk' for Chinese, Japanese, Korean"),
  rerankModel: z
    .string()
    .min(1)
    .max(200)
    .nullable()
    .default(null)
    .describe('A chat model the workspace reaches through the gateway that reorders the best results; null: none'),
});
export type CreateKnowledgeBaseInput = z.input<typeof CreateKnowledgeBaseBody>;

export const KnowledgeBaseView = z.object({
  id: z.string(),
  name: z.string(),
  embeddingModel: z.string().nullable(),
  chunking: z.object({ targetTokens: z.number(), overlapTokens: z.number() }),
  textSearch: z.string(),
  rerankModel: z.string().nullable(),
  /** The embeddings' dimension count, once the first document is embedded. */
  embeddingDimensions: z.number().nullable(),
  documents: z.object({ queued: z.number(), processing: z.number(), ready: z.number(), failed: z.number() }),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type KnowledgeBaseView = z.infer<typeof KnowledgeBaseView>;
export const KnowledgeBaseList = z.object({ data: z.array(KnowledgeBaseView) });

export const DocumentView = z.object({
  id: z.string(),
  knowledgeBaseId: z.string(),
  title: z.string(),
  filename: z.string(),
  contentType: z.string().nullable(),
  kind: z.string().nullable(),
  sizeBytes: z.number(),
  sha256: z.string(),
  status: z.enum(DOCUMENT_STATUSES),
  progress: z.number(),
  failure: z.object({ code: z.string(), reason: z.string() }).nullable(),
  chunkCount: z.number(),
  metadata: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type DocumentView = z.infer<typeof DocumentView>;
export const DocumentList = z.object({ data: z.array(DocumentView) });

export const UploadUrlBody = z.strictObject({
  url: z
    .string()
    .max(2048)
    .regex(/^https?:\/\//i, 'an http or https URL')
    .refine((u) => URL.canParse(u), 'a valid URL')
    .describe('Fetched once through the SSRF guard (no redirects, same size limit as uploads)'),
  metadata: DocumentMetadata.default({}),
});

export const UploadResult = z.object({
  data: z.array(
    z.object({
      filename: z.string(),
      /**
       * `created`: stored and queued; `duplicate`: the same content is already in the knowledge
       * base; `retried`: the same content had failed, and is queued again.
       */
      outcome: z.enum(['created', 'duplicate', 'retried']),
      document: DocumentView,
    }),
  ),
});
export type UploadResult = z.infer<typeof UploadResult>;

export const SEARCH_MODES = ['lexical', 'vector', 'hybrid'] as const;
export type SearchMode = (typeof SEARCH_MODES)[number];

export const SearchBody = z.strictObject({
  // Bounded here only against abuse; the 2,000-character limit is checked with its own code.
  query: z.string().max(100_000),
  mode: z
    .enum(SEARCH_MODES)
    .optional()
    .describe('Default: hybrid when the knowledge base has an embeddings model, else lexical'),
  topK: z.number().int().min(1).max(100).default(10),
  rerank: z.boolean().optional().describe('Default: true when the knowledge base has a rerank model'),
  filters: z
    .strictObject({
      documentIds: z.array(Id).min(1).max(100).optional(),
      metadata: DocumentMetadata.optional().describe('Documents whose metadata has every one of these values'),
    })
    .default({}),
});
export type SearchInput = z.input<typeof SearchBody>;

export const SearchResult = z.object({
  data: z.array(
    z.object({
      documentId: z.string(),
      title: z.string(),
      chunkId: z.string(),
      chunkIndex: z.number(),
      headingPath: z.array(z.string()),
      startOffset: z.number(),
      endOffset: z.number(),
      /** Lexical: ts_rank_cd; vector: cosine similarity; hybrid: the fused RRF score. */
      score: z.number(),
      /** The chunk's rank in each ranking hybrid search fused (null: not among that side's candidates). */
      lexicalRank: z.number().nullable(),
      vectorRank: z.number().nullable(),
      /** The rerank model's relevance (0-10) when the search was reranked. */
      rerankScore: z.number().nullable(),
      text: z.string(),
    }),
  ),
  mode: z.enum(SEARCH_MODES),
  reranked: z.boolean(),
  /** Documents not searched because they are still queued or processing. */
  pendingDocuments: z.number(),
});
export type SearchResult = z.infer<typeof SearchResult>;
