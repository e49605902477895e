import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Actor } from '../../platform/http/context.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorActor, operatorRequired, requestMeta, requireSession, sessionRequired } from '../identity/index.ts';
import { REQUEST_STATUSES, REQUEST_TYPES } from './privacy.requests.tables.ts';
import type { RequestsService } from './privacy.requests.ts';

const Id = z.string().min(1).max(64);
/** Free text of several lines: no control characters but line breaks and tabs (Postgres refuses NUL). */
const Text = (max: number) =>
  z
    .string()
    .trim()
    .min(1)
    .max(max)
    .regex(/^(?:[^\p{Cc}]|[\n\r\t])*$/u, 'no control characters but line breaks and tabs');

export const RequestView = z.object({
  id: z.string(),
  type: z.enum(REQUEST_TYPES),
  userId: z.string(),
  workspaceId: z.string().nullable(),
  status: z.enum(REQUEST_STATUSES),
  details: z.string().nullable().describe('What the subject asked for (rectification), in their words'),
  outcome: z.string().nullable().describe('How the request was answered'),
  receivedAt: z.string(),
  dueAt: z.string().describe('One calendar month after receipt (GDPR Art. 12(3))'),
  completedAt: z.string().nullable(),
  overdue: z.boolean().describe('Open and past its due date now'),
  overdueAlertedAt: z.string().nullable(),
});
export const RequestList = z.object({ data: z.array(RequestView), nextCursor: z.string().nullable() });

const PageQuery = z.strictObject({
  cursor: Id.optional().describe('The last id of the previous page'),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});
const OperatorQuery = PageQuery.extend({
  status: z.enum(REQUEST_STATUSES).optional(),
  type: z.enum(REQUEST_TYPES).optional(),
  userId: Id.optional(),
  overdue: z.enum(['true', 'false']).optional().describe('true: open requests past their due date only'),
});
const RectificationBody = z.strictObject({
  description: Text(4000).describe(
    'What is wrong and what it should be; say where it appears. Name and email you can change yourself (PATCH /api/me, the email change flow).',
  ),
});
const ResolveBody = z.strictObject({
  status: z.enum(['in_progress', 'completed', 'rejected']),
  outcome: Text(4000).optional().describe('What was done, or why not (required to reject); the subject sees it'),
});
const RequestParams = z.strictObject({ id: Id });

/** The signed-in user as the actor of their own privacy choice, with the request's facts. */
export function userActor(req: FastifyRequest): Extract<Actor, { type: 'user' }> {
  const auth = requireSession(req);
  return { type: 'user', userId: auth.userId, sessionId: auth.sessionId, meta: requestMeta(req) };
}

/** Privacy requests: a user's own, the rectification request, and the operators' view. */
export function registerRequestRoutes(app: HttpServer, { requests }: { requests: RequestsService }) {
  const session = [{ session: [], csrf: [] }];

  app.get(
    '/api/me/privacy/requests',
    {
      schema: {
        tags: ['privacy'],
        security: session,
        summary: 'Your privacy requests (export, erasure, rectification, restriction, objection), newest first',
        querystring: PageQuery,
        response: { 200: RequestList },
      },
      preHandler: sessionRequired,
    },
    async (req) => requests.listMine(requireSession(req).userId, req.query),
  );

  app.post(
    '/api/me/privacy/rectification',
    {
      schema: {
        tags: ['privacy'],
        security: session,
        summary: 'Ask for a correction of data you cannot correct yourself (answered within a month)',
        body: RectificationBody,
        response: { 201: RequestView },
      },
      preHandler: sessionRequired,
    },
    async (req, reply) =>
      reply.status(201).send(await requests.requestRectification(userActor(req), req.body.description)),
  );

  app.get(
    '/api/operator/privacy/requests',
    {
      schema: {
        tags: ['operator'],
        security: session,
        summary: 'Every privacy request, newest first (e.g. ?overdue=true, ?status=received)',
        querystring: OperatorQuery,
        response: { 200: RequestList },
      },
      preHandler: operatorRequired,
    },
    async (req) => {
      const { overdue, ...rest } = req.query;
      return requests.list({ ...rest, overdue: overdue === undefined ? undefined : overdue === 'true' });
    },
  );

  app.post(
    '/api/operator/privacy/requests/:id',
    {
      schema: {
        tags: ['operator'],
        security: session,
        summary: 'Answer a rectification request: in progress, completed or rejected (with a note the subject sees)',
        params: RequestParams,
        body: ResolveBody,
        response: { 200: RequestView },
      },
      preHandler: operatorRequired,
    },
    async (req) => requests.resolve(operatorActor(req), req.params.id, req.body),
  );
}
