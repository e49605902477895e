import multipart from '@fastify/multipart';
import type { FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { AppError } from '../../platform/errors.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import { cleanFilename } from './knowledge.fetch.ts';
import {
  CreateKnowledgeBaseBody,
  DocumentList,
  DocumentMetadata,
  DocumentParams,
  DocumentView,
  KnowledgeBaseList,
  KnowledgeBaseParams,
  KnowledgeBaseView,
  KnowledgeParams,
  SearchBody,
  SearchResult,
  UploadResult,
  UploadUrlBody,
} from './knowledge.schemas.ts';
import { type KnowledgeService, UPLOAD_LIMITS, type UploadFile } from './knowledge.service.ts';
import type { DocumentMetadata as DocumentMetadataShape } from './knowledge.tables.ts';

type Deps = {
  service: KnowledgeService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];
const tags = ['knowledge'];

/** The `metadata` field of a multipart upload: a JSON object (DocumentMetadata). */
function metadataField(value: unknown): DocumentMetadataShape {
  let parsed: unknown;
  try {
    parsed = JSON.parse(String(value));
  } catch {
    throw new AppError('invalid_json', 'The metadata field is not JSON.');
  }
  const result = DocumentMetadata.safeParse(parsed);
  if (!result.success) {
    throw new AppError(
      'validation_failed',
      `The metadata field is not valid: ${result.error.issues[0]?.message ?? ''}`,
    );
  }
  return result.data;
}

/**
 * Reads every file part of a multipart upload into memory, within the upload limits, and the
 * optional `metadata` field (JSON) that applies to every file of the request.
 */
async function readFiles(req: FastifyRequest): Promise<{ files: UploadFile[]; metadata: DocumentMetadataShape }> {
  if (!req.isMultipart()) {
    throw new AppError('unsupported_media_type', 'Send the files as multipart/form-data.');
  }
  const files: UploadFile[] = [];
  let metadata: DocumentMetadataShape = {};
  try {
    for await (const part of req.parts()) {
      if (part.type === 'field' && part.fieldname === 'metadata') metadata = metadataField(part.value);
      if (part.type !== 'file') continue;
      files.push({
        filename: cleanFilename(part.filename, 'upload'),
        contentType: part.mimetype && part.mimetype !== 'application/octet-stream' ? part.mimetype.slice(0, 255) : null,
        bytes: await part.toBuffer(),
      });
    }
  } catch (err) {
    if ((err as { code?: string }).code === 'FST_FILES_LIMIT') {
      throw new AppError('too_many_files', `Send at most ${UPLOAD_LIMITS.maxFiles} files at once.`);
    }
    if ((err as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') {
      throw new AppError('payload_too_large', `A file is larger than ${UPLOAD_LIMITS.maxFileBytes} bytes.`);
    }
    throw err;
  }
  return { files, metadata };
}

/** Knowledge bases, their documents (multipart upload) and lexical search. */
export function registerKnowledgeRoutes(app: HttpServer, { service, requirePermission }: Deps) {
  const base = '/api/workspaces/:workspaceId/knowledge';
  const read = requirePermission('knowledge:read');
  const manage = requirePermission('knowledge:manage');

  app.post(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'Create a knowledge base',
        params: KnowledgeParams,
        body: CreateKnowledgeBaseBody,
        response: { 201: KnowledgeBaseView },
      },
      preHandler: manage,
    },
    async (req, reply) =>
      reply.status(201).send(await service.createBase({ scope: requireScope(req), input: req.body })),
  );

  app.get(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'List knowledge bases',
        params: KnowledgeParams,
        response: { 200: KnowledgeBaseList },
      },
      preHandler: read,
    },
    async (req) => ({ data: await service.listBases({ scope: requireScope(req) }) }),
  );

  app.get(
    `${base}/:kbId`,
    {
      schema: {
        tags,
        security,
        summary: 'Get a knowledge base with its documents per status',
        params: KnowledgeBaseParams,
        response: { 200: KnowledgeBaseView },
      },
      preHandler: read,
    },
    async (req) => service.getBase({ scope: requireScope(req), kbId: req.params.kbId }),
  );

  app.delete(
    `${base}/:kbId`,
    {
      schema: {
        tags,
        security,
        summary: 'Delete a knowledge base with all its documents and chunks',
        params: KnowledgeBaseParams,
      },
      preHandler: manage,
    },
    async (req, reply) => {
      await service.deleteBase({ scope: requireScope(req), kbId: req.params.kbId });
      return reply.status(204).send();
    },
  );

  app.get(
    `${base}/:kbId/documents`,
    {
      schema: {
        tags,
        security,
        summary: 'List documents with their processing status',
        params: KnowledgeBaseParams,
        response: { 200: DocumentList },
      },
      preHandler: read,
    },
    async (req) => ({ data: await service.listDocuments({ scope: requireScope(req), kbId: req.params.kbId }) }),
  );

  app.get(
    `${base}/:kbId/documents/:documentId`,
    {
      schema: {
        tags,
        security,
        summary: 'Get a document and its status',
        params: DocumentParams,
        response: { 200: DocumentView },
      },
      preHandler: read,
    },
    async (req) => service.getDocument({ scope: requireScope(req), ...req.params }),
  );

  app.delete(
    `${base}/:kbId/documents/:documentId`,
    {
      schema: {
        tags,
        security,
        summary: 'Delete a document, its original file and its chunks',
        params: DocumentParams,
      },
      preHandler: manage,
    },
    async (req, reply) => {
      await service.deleteDocument({ scope: requireScope(req), ...req.params });
      return reply.status(204).send();
    },
  );

  app.post(
    `${base}/:kbId/documents/from-url`,
    {
      schema: {
        tags,
        security,
        summary: 'Upload a document by URL (fetched through the SSRF guard); it is processed by a job',
        params: KnowledgeBaseParams,
        body: UploadUrlBody,
        response: { 202: UploadResult },
      },
      preHandler: manage,
    },
    async (req, reply) =>
      reply
        .status(202)
        .send(await service.uploadFromUrl({ scope: requireScope(req), kbId: req.params.kbId, ...req.body })),
  );

  app.post(
    `${base}/:kbId/search`,
    {
      schema: {
        tags,
        security,
        summary:
          'Search a knowledge base (lexical, vector or hybrid, optionally reranked); results cite document, chunk and character offsets',
        params: KnowledgeBaseParams,
        body: SearchBody,
        response: { 200: SearchResult },
      },
      config: { audit: { exempt: 'read-only query: a search changes nothing' } },
      preHandler: read,
    },
    async (req) => service.search({ scope: requireScope(req), kbId: req.params.kbId, input: req.body }),
  );

  // Multipart is parsed only for the upload route: the plugin stays inside this context.
  app.register(async (scoped) => {
    await scoped.register(multipart, {
      limits: {
        fileSize: UPLOAD_LIMITS.maxFileBytes,
        files: UPLOAD_LIMITS.maxFiles,
        fields: 20,
        parts: UPLOAD_LIMITS.maxFiles + 20,
      },
    });
    scoped.withTypeProvider<ZodTypeProvider>().post(
      `${base}/:kbId/documents`,
      {
        schema: {
          tags,
          security,
          summary: `Upload documents (multipart/form-data, up to ${UPLOAD_LIMITS.maxFiles} files of ${UPLOAD_LIMITS.maxFileBytes / 1024 / 1024} MiB); each is processed by a job`,
          params: KnowledgeBaseParams,
          response: { 202: UploadResult },
        },
        preHandler: manage,
      },
      async (req, reply) => {
        const { files, metadata } = await readFiles(req);
        const result = await service.upload({ scope: requireScope(req), kbId: req.params.kbId, files, metadata });
        return reply.status(202).send(result);
      },
    );
  });
}
