// The knowledge module: knowledge bases, uploaded documents (originals encrypted with the
// workspace key), their chunks with a stored tsvector and an embedding, ingestion jobs, and
// lexical, vector and hybrid search with optional reranking.
// Other modules import only this file.
import type { FastifyRequest } from 'fastify';
import { moduleDataMap } from '../../platform/db/datamap.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { AuditService } from '../audit/index.ts';
import type { GatewayService } from '../gateway/index.ts';
import type { Module, PlatformDeps } from '../types.ts';
import type { VaultService } from '../vault/index.ts';
import type { Permission } from '../workspaces/index.ts';
import { fetchDocument, fetchTransport } from './knowledge.fetch.ts';
import { knowledgeRepo } from './knowledge.repo.ts';
import { registerKnowledgeRoutes } from './knowledge.routes.ts';
import { INGEST_JOB, type KnowledgeService, knowledgeService, SWEEP_JOB, UPLOAD_LIMITS } from './knowledge.service.ts';
import { knowledgeTables } from './knowledge.tables.ts';
import { detectVectorMode, ExactVectors, type VectorMode } from './knowledge.vectors.ts';

export { type Chunk, type ChunkSettings, chunkDocument, countTokens } from './knowledge.chunk.ts';
export { type ParsedDocument, ParseFailure, parseDocument } from './knowledge.parse.ts';
export type { DocumentView, KnowledgeBaseView, SearchResult, UploadResult } from './knowledge.schemas.ts';
export { type Billing, INGEST_JOB, type KnowledgeService, SWEEP_JOB, UPLOAD_LIMITS } from './knowledge.service.ts';

export type KnowledgeDeps = PlatformDeps & {
  audit: Pick<AuditService, 'record'>;
  /** Originals are vault ciphertext under the workspace's data key. */
  vault: Pick<VaultService, 'encrypt' | 'decrypt'>;
  /** Embeddings of chunks and queries, and reranking, are gateway calls (metered and billed). */
  gateway: Pick<GatewayService, 'embed' | 'complete' | 'listModels'>;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

/**
 * Builds the knowledge module. Its service: `createBase`, `listBases`, `getBase`, `deleteBase`,
 * `upload`, `listDocuments`, `getDocument`, `deleteDocument`, `search` (each taking a `scope`)
 * and `ingest` (the `knowledge.ingest` job).
 *
 * @example
 * const knowledge = createKnowledgeModule({ ...deps, audit: audit.service, vault: vault.service, requirePermission });
 * const { data } = await knowledge.service.search({ scope, kbId, input: { query: 'refunds' } });
 */
export function createKnowledgeModule(deps: KnowledgeDeps): Module<KnowledgeService> {
  const transport = fetchTransport(deps.config.BERTH_EGRESS_ALLOW);
  let vectorMode: Promise<VectorMode> | undefined;
  const service = knowledgeService({
    db: deps.db,
    repo: knowledgeRepo,
    clock: deps.clock,
    logger: deps.logger,
    jobs: deps.jobs,
    vault: deps.vault,
    audit: deps.audit,
    fetchUrl: (url) => fetchDocument(transport, url, { maxBytes: UPLOAD_LIMITS.maxFileBytes, timeoutMs: 30_000 }),
    embed: (caller, body) => deps.gateway.embed(caller, body),
    complete: (caller, body) => deps.gateway.complete(caller, body),
    models: async (workspaceId) => (await deps.gateway.listModels(workspaceId)).map((m) => m.id),
    vectorMode: () => {
      vectorMode ??= deps.db
        .system((tx) => detectVectorMode(tx))
        .catch((err: unknown) => {
          vectorMode = undefined;
          throw err;
        });
      return vectorMode;
    },
    exact: new ExactVectors(deps.config.BERTH_VECTOR_CACHE_MB * 1024 * 1024),
  });
  return {
    service,
    dataMap: moduleDataMap('knowledge', knowledgeTables),
    registerRoutes(app: HttpServer) {
      registerKnowledgeRoutes(app, { service, requirePermission: deps.requirePermission });
      app.addHook('onClose', async () => {
        await transport.dispatcher.close();
      });
    },
    async registerJobs(jobs: Jobs) {
      await jobs.register<{ workspaceId: string; documentId: string }>(
        INGEST_JOB,
        async ({ workspaceId, documentId }) => service.ingest(workspaceId, documentId),
        { concurrency: 2, retryLimit: 2, expireInSeconds: 30 * 60 },
      );
      await jobs.register(SWEEP_JOB, async () => {
        await service.sweep();
        // Server Postgres keeps its statistics by autovacuum; embedded PGlite has none.
        if (deps.db.engine === 'pglite') await service.refreshPlannerStatistics();
      });
      await jobs.schedule(SWEEP_JOB, '*/5 * * * *');
    },
  };
}
