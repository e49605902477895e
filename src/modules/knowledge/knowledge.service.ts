import { createHash } from 'node:crypto';
import type { Clock } from '../../platform/clock.ts';
import { afterCommit, type Database, type Db, isUniqueViolation } from '../../platform/db/db.ts';
import { AppError, notFound } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Jobs } from '../../platform/jobs/jobs.ts';
import type { Logger } from '../../platform/logger.ts';
import type { AuditInput } from '../audit/index.ts';
import type { Caller } from '../gateway/index.ts';
import type { VaultService } from '../vault/index.ts';
import { chunkDocument } from './knowledge.chunk.ts';
import { type Embed, embeddingText, embedTexts } from './knowledge.embed.ts';
import { CJK, indexingOf } from './knowledge.lexical.ts';
import { ParseFailure, parseDocument } from './knowledge.parse.ts';
import type { DocumentMeta, KnowledgeRepo } from './knowledge.repo.ts';
import type { Complete } from './knowledge.retrieve.ts';
import {
  CreateKnowledgeBaseBody,
  type CreateKnowledgeBaseInput,
  type DocumentView,
  type KnowledgeBaseView,
  type SearchInput,
  type SearchResult,
  type UploadResult,
} from './knowledge.schemas.ts';
import { knowledgeSearch } from './knowledge.search.ts';
import type { DocumentMetadata, KnowledgeBaseRow, KnowledgeChunkInsert } from './knowledge.tables.ts';
import { type ExactVectors, encodeEmbedding, type VectorMode } from './knowledge.vectors.ts';

export const INGEST_JOB = 'knowledge.ingest';
export const SWEEP_JOB = 'knowledge.sweep';

/** A document queued or processing this long without progress has its job sent again; twice as long, it fails. */
export const STALL_AFTER_MS = 15 * 60_000;

/** Limits of uploads: per file, per request, per knowledge base. */
export const UPLOAD_LIMITS = { maxFileBytes: 25 * 1024 * 1024, maxFiles: 20, maxDocuments: 10_000 } as const;

export type UploadFile = { filename: string; contentType: string | null; bytes: Buffer };

export type KnowledgeDeps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: KnowledgeRepo;
  clock: Clock;
  logger: Logger;
  jobs: Pick<Jobs, 'send'>;
  vault: Pick<VaultService, 'encrypt' | 'decrypt'>;
  audit: { record(tx: Database, input: AuditInput): Promise<unknown> };
  /** Uploads by URL: one bounded GET through the SSRF guard (knowledge.fetch.ts). */
  fetchUrl(url: URL): Promise<UploadFile>;
  /** The gateway's embeddings and chat calls (metered to the caller). */
  embed: Embed;
  complete: Complete;
  /** The models the workspace reaches through the gateway (checked when a knowledge base names one). */
  models(workspaceId: string): Promise<string[]>;
  /** Which vector search the database has (detected once), and the exact in-process one. */
  vectorMode(): Promise<VectorMode>;
  exact: ExactVectors;
};

/** Who a knowledge call's gateway calls are metered to when they are not an HTTP caller's. */
export type Billing = { userId: string | null; keyId: string | null; requestId: string };

/** The gateway caller metered as `billing` says (the knowledge base's models are its settings: no key policy). */
const billedTo = (workspaceId: string, billing: Billing): Caller => ({
  workspaceId,
  ...billing,
  allowedModels: null,
  rateLimitRpm: null,
  rateLimitTpm: null,
});

/** The vault context of a document's original file: the workspace's data key, bound to the document. */
const originalContext = (workspaceId: string, documentId: string) =>
  ({ owner: { type: 'workspace', id: workspaceId }, record: documentId, field: 'knowledge_original' }) as const;

function baseView(row: KnowledgeBaseRow, documents: KnowledgeBaseView['documents']): KnowledgeBaseView {
  return {
    id: row.id,
    name: row.name,
    embeddingModel: row.embeddingModel,
    chunking: { targetTokens: row.chunkTargetTokens, overlapTokens: row.chunkOverlapTokens },
    textSearch: row.textSearch,
    rerankModel: row.rerankModel,
    embeddingDimensions: row.embeddingDims,
    documents,
    createdBy: row.createdBy,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

function documentView(row: DocumentMeta): DocumentView {
  return {
    id: row.id,
    knowledgeBaseId: row.knowledgeBaseId,
    title: row.title,
    filename: row.filename,
    contentType: row.contentType,
    kind: row.kind,
    sizeBytes: row.sizeBytes,
    sha256: row.sha256.toString('hex'),
    status: row.status,
    progress: row.progress,
    failure: row.failureCode ? { code: row.failureCode, reason: row.failureReason ?? '' } : null,
    chunkCount: row.chunkCount,
    metadata: row.metadata,
    createdBy: row.createdBy,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

const nameTaken = () =>
  new AppError('knowledge_base_name_taken', 'Another knowledge base of this workspace has that name.');

/**
 * Knowledge bases, their documents and lexical search. Uploads are stored encrypted and
 * queued; the `knowledge.ingest` job parses, chunks and indexes each document on its own, so
 * one document's failure (a corrupt PDF) leaves the others as they are. Deleting a document
 * or a knowledge base removes its original, its chunks and its index entries in one
 * transaction. Every change is audited without content (no names, no text).
 *
 * @example
 * const kb = await knowledge.createBase({ scope, input: { name: 'Handbook', textSearch: 'english' } });
 * await knowledge.upload({ scope, kbId: kb.id, files: [{ filename: 'guide.md', contentType: 'text/markdown', bytes }] });
 * const { data } = await knowledge.search({ scope, kbId: kb.id, input: { query: 'refund policy' } });
 */
export function knowledgeService(deps: KnowledgeDeps) {
  const { db, repo, clock } = deps;
  const actorUser = (scope: Scope) => (scope.actor.type === 'system' ? null : scope.actor.userId);
  const searchIn = knowledgeSearch(deps);

  /** The gateway caller of a knowledge call: the member or key acting, or who `billing` names. */
  function callerOf(scope: Scope, billing?: Billing): Caller {
    const a = scope.actor;
    return billedTo(
      scope.workspaceId,
      billing ?? {
        keyId: a.type === 'api_key' ? a.keyId : null,
        userId: actorUser(scope),
        requestId: a.meta?.requestId ?? newId('req', clock.now()),
      },
    );
  }

  async function checkModel(workspaceId: string, model: string | null): Promise<void> {
    if (model === null) return;
    if (!(await deps.models(workspaceId)).includes(model)) {
      throw new AppError('model_not_found', `No provider of this workspace serves the model ${model}.`);
    }
  }

  async function mustFindBase(tx: Database, workspaceId: string, kbId: string): Promise<KnowledgeBaseRow> {
    const kb = await repo.findBase(tx, workspaceId, kbId);
    if (!kb) throw notFound('knowledge base');
    return kb;
  }

  async function checkTextSearch(tx: Database, name: string): Promise<void> {
    if (name === CJK) return;
    // A name the database does not know would fail every insert of a chunk: refuse it here.
    if (!(await repo.textSearchExists(tx, name))) {
      throw new AppError('unknown_text_search', `There is no text search configuration named ${name}.`);
    }
  }

  /** Marks a document failed (if it still exists) with a stable code and a content-free reason. */
  async function fail(workspaceId: string, documentId: string, code: string, reason: string): Promise<void> {
    await db.tenant(workspaceId, async (tx) => {
      if (!(await repo.lockDocument(tx, workspaceId, documentId))) return;
      await repo.updateDocument(tx, workspaceId, documentId, {
        status: 'failed',
        progress: 100,
        failureCode: code,
        failureReason: reason.slice(0, 500),
        updatedAt: clock.now(),
      });
    });
  }

  /** Stores new files (encrypted) and queues them; content already in the knowledge base is a duplicate. */
  async function storeFiles(
    scope: Scope,
    kbId: string,
    files: UploadFile[],
    metadata: DocumentMetadata,
  ): Promise<UploadResult> {
    return db.tenant(scope.workspaceId, async (tx) => {
      await mustFindBase(tx, scope.workspaceId, kbId);
      const counts = await repo.statusCounts(tx, scope.workspaceId, kbId);
      let total = counts.queued + counts.processing + counts.ready + counts.failed;
      const data: UploadResult['data'] = [];
      for (const file of files) {
        const sha256 = createHash('sha256').update(file.bytes).digest();
        const existing = await repo.findDocumentByHash(tx, scope.workspaceId, kbId, sha256);
        if (existing?.status === 'failed') {
          // The same content failed before (a model or credits problem since fixed, say): try again.
          const now = clock.now();
          const retry = {
            status: 'queued',
            progress: 0,
            failureCode: null,
            failureReason: null,
            updatedAt: now,
          } as const;
          await repo.updateDocument(tx, scope.workspaceId, existing.id, retry);
          afterCommit(tx, async () => {
            await deps.jobs.send(
              INGEST_JOB,
              { workspaceId: scope.workspaceId, documentId: existing.id },
              { singletonKey: existing.id },
            );
          });
          data.push({ filename: file.filename, outcome: 'retried', document: documentView({ ...existing, ...retry }) });
          continue;
        }
        if (existing) {
          data.push({ filename: file.filename, outcome: 'duplicate', document: documentView(existing) });
          continue;
        }
        if (++total > UPLOAD_LIMITS.maxDocuments) {
          throw new AppError(
            'knowledge_base_full',
            `A knowledge base holds at most ${UPLOAD_LIMITS.maxDocuments} documents.`,
          );
        }
        const now = clock.now();
        const id = newId('kdoc', now);
        const row = {
          id,
          workspaceId: scope.workspaceId,
          knowledgeBaseId: kbId,
          title: file.filename,
          filename: file.filename,
          contentType: file.contentType,
          kind: null,
          sizeBytes: file.bytes.length,
          sha256,
          status: 'queued' as const,
          progress: 0,
          failureCode: null,
          failureReason: null,
          chunkCount: 0,
          originalCiphertext: await deps.vault.encrypt(originalContext(scope.workspaceId, id), file.bytes, tx),
          metadata,
          createdBy: actorUser(scope),
          createdAt: now,
          updatedAt: now,
        };
        await repo.insertDocument(tx, row);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'knowledge_document.uploaded',
          target: { type: 'knowledge_document', id },
          diff: { knowledgeBaseId: kbId, sizeBytes: row.sizeBytes },
        });
        afterCommit(tx, async () => {
          await deps.jobs.send(INGEST_JOB, { workspaceId: scope.workspaceId, documentId: id }, { singletonKey: id });
        });
        const { originalCiphertext: _original, ...meta } = row;
        data.push({ filename: file.filename, outcome: 'created', document: documentView(meta) });
      }
      return { data };
    });
  }

  const service = {
    async createBase({ scope, input }: { scope: Scope; input: CreateKnowledgeBaseInput }): Promise<KnowledgeBaseView> {
      const body = CreateKnowledgeBaseBody.parse(input);
      const now = clock.now();
      const row: KnowledgeBaseRow = {
        id: newId('kb', now),
        workspaceId: scope.workspaceId,
        name: body.name,
        embeddingModel: body.embeddingModel,
        chunkTargetTokens: body.chunking.targetTokens,
        chunkOverlapTokens: body.chunking.overlapTokens,
        textSearch: body.textSearch,
        embeddingDims: null,
        rerankModel: body.rerankModel,
        vectorGeneration: 0,
        createdBy: actorUser(scope),
        createdAt: now,
        updatedAt: now,
      };
      await checkModel(scope.workspaceId, body.embeddingModel);
      await checkModel(scope.workspaceId, body.rerankModel);
      try {
        return await db.tenant(scope.workspaceId, async (tx) => {
          await checkTextSearch(tx, body.textSearch);
          await repo.insertBase(tx, row);
          await deps.audit.record(tx, {
            workspaceId: scope.workspaceId,
            actor: scope.actor,
            action: 'knowledge_base.created',
            target: { type: 'knowledge_base', id: row.id },
            diff: { textSearch: row.textSearch, embeddingModel: row.embeddingModel, rerankModel: row.rerankModel },
          });
          return baseView(row, { queued: 0, processing: 0, ready: 0, failed: 0 });
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw nameTaken();
        throw err;
      }
    },

    async listBases({ scope }: { scope: Scope }): Promise<KnowledgeBaseView[]> {
      return db.tenant(scope.workspaceId, async (tx) => {
        const rows = await repo.listBases(tx, scope.workspaceId);
        const out: KnowledgeBaseView[] = [];
        for (const row of rows) out.push(baseView(row, await repo.statusCounts(tx, scope.workspaceId, row.id)));
        return out;
      });
    },

    async getBase({ scope, kbId }: { scope: Scope; kbId: string }): Promise<KnowledgeBaseView> {
      return db.tenant(scope.workspaceId, async (tx) => {
        const row = await mustFindBase(tx, scope.workspaceId, kbId);
        return baseView(row, await repo.statusCounts(tx, scope.workspaceId, row.id));
      });
    },

    /** Deletes the knowledge base with every document, original and chunk of it, in one transaction. */
    async deleteBase({ scope, kbId }: { scope: Scope; kbId: string }): Promise<void> {
      await db.tenant(scope.workspaceId, async (tx) => {
        const gone = await repo.deleteBase(tx, scope.workspaceId, kbId);
        if (!gone) throw notFound('knowledge base');
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'knowledge_base.deleted',
          target: { type: 'knowledge_base', id: gone.id },
        });
      });
    },

    /**
     * Stores uploaded files (encrypted) and queues each for ingestion. A file whose content is
     * already in the knowledge base (same SHA-256) is not stored again: its outcome is `duplicate`.
     */
    async upload({
      scope,
      kbId,
      files,
      metadata = {},
    }: {
      scope: Scope;
      kbId: string;
      files: UploadFile[];
      metadata?: DocumentMetadata;
    }): Promise<UploadResult> {
      if (files.length === 0) throw new AppError('bad_request', 'Send at least one file.');
      if (files.length > UPLOAD_LIMITS.maxFiles) {
        throw new AppError('too_many_files', `Send at most ${UPLOAD_LIMITS.maxFiles} files at once.`);
      }
      for (const f of files) {
        if (f.bytes.length > UPLOAD_LIMITS.maxFileBytes) {
          throw new AppError('payload_too_large', `A file is larger than ${UPLOAD_LIMITS.maxFileBytes} bytes.`);
        }
      }
      // The same content uploaded at once by two requests: one stores it, the other's insert
      // meets the unique (knowledge base, hash) and runs again, finding it a duplicate.
      for (let attempt = 1; ; attempt++) {
        try {
          return await storeFiles(scope, kbId, files, metadata);
        } catch (err) {
          if (attempt >= 2 || !isUniqueViolation(err)) throw err;
        }
      }
    },

    /** Fetches a document by URL (through the SSRF guard, no transaction open meanwhile) and uploads it. */
    async uploadFromUrl({
      scope,
      kbId,
      url,
      metadata = {},
    }: {
      scope: Scope;
      kbId: string;
      url: string;
      metadata?: DocumentMetadata;
    }): Promise<UploadResult> {
      await db.tenant(scope.workspaceId, (tx) => mustFindBase(tx, scope.workspaceId, kbId));
      const file = await deps.fetchUrl(new URL(url));
      return service.upload({ scope, kbId, files: [file], metadata });
    },

    async listDocuments({ scope, kbId }: { scope: Scope; kbId: string }): Promise<DocumentView[]> {
      return db.tenant(scope.workspaceId, async (tx) => {
        await mustFindBase(tx, scope.workspaceId, kbId);
        return (await repo.listDocuments(tx, scope.workspaceId, kbId)).map(documentView);
      });
    },

    async getDocument({ scope, kbId, documentId }: { scope: Scope; kbId: string; documentId: string }) {
      return db.tenant(scope.workspaceId, async (tx) => {
        const row = await repo.findDocument(tx, scope.workspaceId, kbId, documentId);
        if (!row) throw notFound('document');
        return documentView(row);
      });
    },

    /** Deletes a document with its original and its chunks, in one transaction. */
    async deleteDocument({ scope, kbId, documentId }: { scope: Scope; kbId: string; documentId: string }) {
      await db.tenant(scope.workspaceId, async (tx) => {
        // Its words leave the knowledge base's counts with its chunks.
        await repo.countLexemes(tx, scope.workspaceId, kbId, documentId, -1);
        const gone = await repo.deleteDocument(tx, scope.workspaceId, kbId, documentId);
        if (!gone) throw notFound('document');
        await repo.embeddingsChanged(tx, scope.workspaceId, kbId, null);
        await deps.audit.record(tx, {
          workspaceId: scope.workspaceId,
          actor: scope.actor,
          action: 'knowledge_document.deleted',
          target: { type: 'knowledge_document', id: gone.id },
          diff: { knowledgeBaseId: kbId },
        });
      });
    },

    /**
     * Lexical, vector or hybrid search over the knowledge base's ready documents (see
     * knowledge.search.ts). Documents still queued or processing are not searched and are
     * counted in `pendingDocuments`; when none is ready yet and some are pending, the search is
     * refused with 409 `knowledge_base_processing` rather than answering an empty list that
     * looks like "nothing matches". The query's embedding and a rerank are gateway calls metered
     * to the caller (or to `billing`: an agent run's user and run id).
     */
    async search({
      scope,
      kbId,
      input,
      billing,
    }: {
      scope: Scope;
      kbId: string;
      input: SearchInput;
      billing?: Billing;
    }): Promise<SearchResult> {
      return searchIn(scope.workspaceId, kbId, input, callerOf(scope, billing));
    },

    /**
     * `search` on the knowledge base of that name (without regard to case) in the scope's
     * workspace: what agents' `knowledge_search` calls. No such name: 404 `not_found`.
     */
    async searchByName({
      scope,
      name,
      input,
      billing,
    }: {
      scope: Scope;
      name: string;
      input: SearchInput;
      billing?: Billing;
    }) {
      const wanted = name.toLowerCase();
      const kb = await db.tenant(scope.workspaceId, async (tx) =>
        (await repo.listBases(tx, scope.workspaceId)).find((b) => b.name.toLowerCase() === wanted),
      );
      if (!kb) throw notFound('knowledge base');
      return service.search({ scope, kbId: kb.id, input, ...(billing ? { billing } : {}) });
    },

    /**
     * The `knowledge.ingest` job: parse, chunk, embed (when the knowledge base has an
     * embeddings model) and index one document. A file that cannot be parsed fails with its
     * `ParseFailure` code, an embeddings call that fails with the gateway's code; a document
     * deleted meanwhile is left alone. No transaction is open while the file is parsed or
     * embedded; progress is written after each batch of embeddings.
     */
    async ingest(workspaceId: string, documentId: string): Promise<void> {
      const claimed = await db.tenant(workspaceId, async (tx) => {
        const doc = await repo.lockDocument(tx, workspaceId, documentId);
        if (!doc || doc.status === 'ready' || doc.status === 'failed') return null;
        const kb = await repo.findBase(tx, workspaceId, doc.knowledgeBaseId);
        const ct = await repo.originalOf(tx, workspaceId, documentId);
        if (!kb || !ct) return null;
        await repo.updateDocument(tx, workspaceId, documentId, {
          status: 'processing',
          progress: 10,
          updatedAt: clock.now(),
        });
        const bytes = await deps.vault.decrypt(originalContext(workspaceId, documentId), ct, tx);
        return { doc, kb, bytes };
      });
      if (!claimed) return;
      const { doc, kb, bytes } = claimed;
      let rows: KnowledgeChunkInsert[];
      let parsed: Awaited<ReturnType<typeof parseDocument>>;
      let chunks: ReturnType<typeof chunkDocument>;
      try {
        parsed = await parseDocument({
          bytes,
          filename: doc.filename,
          ...(doc.contentType ? { declaredType: doc.contentType } : {}),
          limits: { maxBytes: UPLOAD_LIMITS.maxFileBytes },
        });
        chunks = chunkDocument(parsed, { targetTokens: kb.chunkTargetTokens, overlapTokens: kb.chunkOverlapTokens });
        const now = clock.now();
        rows = chunks.map((c) => ({
          id: newId('kchk', now),
          workspaceId,
          knowledgeBaseId: kb.id,
          documentId,
          chunkIndex: c.index,
          text: c.text,
          headingPath: c.headingPath,
          startOffset: c.start,
          endOffset: c.end,
          tokenCount: c.tokens,
          ...indexingOf(kb.textSearch, c.text),
        }));
      } catch (err) {
        if (err instanceof ParseFailure) return fail(workspaceId, documentId, err.code, err.message);
        // Only the error's type reaches the log: a message could quote the file.
        deps.logger.error(
          { workspaceId, documentId, error: (err as Error | null)?.name ?? 'unknown' },
          'knowledge: a document could not be processed',
        );
        return fail(workspaceId, documentId, 'processing_failed', 'The document could not be processed.');
      }
      let dims: number | null = null;
      if (kb.embeddingModel && rows.length > 0) {
        const caller = billedTo(workspaceId, { userId: doc.createdBy, keyId: null, requestId: documentId });
        const mode = await deps.vectorMode();
        try {
          const vectors = await embedTexts(deps.embed, caller, kb.embeddingModel, chunks.map(embeddingText), {
            dims: kb.embeddingDims,
            onBatch: (done, total) =>
              db.tenant(workspaceId, (tx) =>
                repo.updateDocument(tx, workspaceId, documentId, {
                  progress: 10 + Math.floor((80 * done) / total),
                  updatedAt: clock.now(),
                }),
              ),
          });
          dims = vectors[0]?.length ?? null;
          rows = rows.map((r, i) => ({
            ...r,
            embeddingDims: dims,
            embedding: encodeEmbedding(mode, vectors[i] as Float32Array),
          }));
        } catch (err) {
          if (!(err instanceof AppError)) throw err;
          const reason = `The embeddings model ${kb.embeddingModel} could not embed the document (${err.code}).`;
          return fail(
            workspaceId,
            documentId,
            err.code.startsWith('embedding_') ? err.code : 'embedding_failed',
            reason,
          );
        }
      }
      const stored = await db.tenant(workspaceId, async (tx) => {
        // Deleted while it was parsed: nothing to store.
        if (!(await repo.lockDocument(tx, workspaceId, documentId))) return true;
        if (dims !== null) {
          // The first document of the knowledge base sets its dimension count; later ones must match it.
          const recorded = await repo.embeddingsChanged(tx, workspaceId, kb.id, dims);
          if (recorded !== dims) return false;
        }
        await repo.replaceChunks(tx, workspaceId, documentId, rows);
        await repo.countLexemes(tx, workspaceId, kb.id, documentId, 1);
        await repo.updateDocument(tx, workspaceId, documentId, {
          status: 'ready',
          progress: 100,
          chunkCount: rows.length,
          kind: parsed.kind,
          ...(parsed.title ? { title: parsed.title.slice(0, 500) } : {}),
          updatedAt: clock.now(),
        });
        return true;
      });
      if (!stored) {
        return fail(
          workspaceId,
          documentId,
          'embedding_dimensions_changed',
          `The embeddings model ${kb.embeddingModel} answered another dimension count than the knowledge base has.`,
        );
      }
    },

    /**
     * Embedded PGlite has no autovacuum, so nothing refreshes the planner's statistics: without
     * them it sorts a knowledge base's every vector instead of walking its HNSW index (about
     * 700 ms instead of a few at 100k chunks). The sweep job calls this there: an ANALYZE of the
     * knowledge tables whenever their size moved by more than a tenth. Answers whether it ran.
     */
    async refreshPlannerStatistics(): Promise<boolean> {
      return db.system(async (tx) => {
        if (!(await repo.plannerStatisticsStale(tx))) return false;
        await repo.analyze(tx);
        return true;
      });
    },

    /**
     * The `knowledge.sweep` job: a document left queued or processing without progress for
     * `STALL_AFTER_MS` (its job lost with a crashed worker, or retried out) has its job sent
     * again; one stalled for twice as long fails with `processing_stalled`, so no document
     * stays "processing" for ever.
     */
    async sweep(): Promise<{ resent: number; failed: number }> {
      const now = clock.now();
      const stale = await db.system((tx) => repo.staleDocuments(tx, new Date(now.getTime() - STALL_AFTER_MS), 500));
      let resent = 0;
      let failed = 0;
      for (const d of stale) {
        if (d.updatedAt.getTime() < now.getTime() - 2 * STALL_AFTER_MS) {
          await fail(
            d.workspaceId,
            d.id,
            'processing_stalled',
            'Processing stopped and did not finish; upload the file again.',
          );
          failed++;
        } else {
          await deps.jobs.send(INGEST_JOB, { workspaceId: d.workspaceId, documentId: d.id }, { singletonKey: d.id });
          resent++;
        }
      }
      return { resent, failed };
    },
  };
  return service;
}

export type KnowledgeService = ReturnType<typeof knowledgeService>;
