import type { FastifyRequest } from 'fastify';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorActor, operatorRequired } from '../identity/index.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import {
  ObjectionBody,
  ObjectionList,
  ObjectionsQuery,
  ObjectionView,
  OperatorSubprocessorList,
  RegisterSubprocessorBody,
  SubprocessorList,
  SubprocessorParams,
  SubprocessorView,
  WorkspaceSubprocessorParams,
} from './privacy.subprocessors.schemas.ts';
import type { SubprocessorsService } from './privacy.subprocessors.ts';

type Deps = {
  subprocessors: SubprocessorsService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['privacy'];
const operatorTags = ['operator', 'privacy'];
const operatorSecurity = [{ session: [], csrf: [] }];

/** The public registry, the operators' registration and retirement, and owners' objections. */
export function registerSubprocessorRoutes(app: HttpServer, { subprocessors, requirePermission }: Deps) {
  app.get(
    '/api/subprocessors',
    {
      schema: {
        tags,
        summary: 'Every sub-processor, with its status (public: part of the privacy policy)',
        response: { 200: SubprocessorList },
      },
    },
    async () => ({ data: await subprocessors.list() }),
  );

  app.get(
    '/api/operator/subprocessors',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: 'Sub-processors with the notices sent and the objections received',
        response: { 200: OperatorSubprocessorList },
      },
      preHandler: operatorRequired,
    },
    async () => ({ data: await subprocessors.listForOperators() }),
  );

  app.post(
    '/api/operator/subprocessors',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary:
          'Register a sub-processor (or a replacement) at least 30 days before it starts; every workspace owner is mailed the notice',
        body: RegisterSubprocessorBody,
        response: { 201: SubprocessorView },
      },
      preHandler: operatorRequired,
    },
    async (req, reply) =>
      reply.status(201).send(await subprocessors.register({ actor: operatorActor(req), input: req.body })),
  );

  app.delete(
    '/api/operator/subprocessors/:subprocessorId',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: 'Retire a sub-processor: it stops processing data now (the entry stays in the registry)',
        params: SubprocessorParams,
        response: { 200: SubprocessorView },
      },
      preHandler: operatorRequired,
    },
    async (req) => subprocessors.retire({ actor: operatorActor(req), subprocessorId: req.params.subprocessorId }),
  );

  app.get(
    '/api/operator/subprocessors/objections',
    {
      schema: {
        tags: operatorTags,
        security: operatorSecurity,
        summary: "Workspace owners' objections to sub-processors, newest first",
        querystring: ObjectionsQuery,
        response: { 200: ObjectionList },
      },
      preHandler: operatorRequired,
    },
    async (req) => ({ data: await subprocessors.listObjections(req.query.subprocessorId) }),
  );

  app.post(
    '/api/workspaces/:workspaceId/subprocessors/:subprocessorId/objection',
    {
      schema: {
        tags,
        security: [{ session: [], csrf: [] }, { apiKey: [] }],
        summary: 'Object, for the workspace, to a sub-processor (owners; once per workspace)',
        params: WorkspaceSubprocessorParams,
        body: ObjectionBody,
        response: { 201: ObjectionView },
      },
      preHandler: requirePermission('privacy:manage'),
    },
    async (req, reply) =>
      reply.status(201).send(
        await subprocessors.object({
          scope: requireScope(req),
          subprocessorId: req.params.subprocessorId,
          reason: req.body.reason,
        }),
      ),
  );
}
