import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { AppError } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { type Permission, requireScope } from '../workspaces/index.ts';
import {
  AgentUsageView,
  CreateRunBody,
  DecisionBody,
  EventsQuery,
  ListRunsQuery,
  RunList,
  RunParams,
  RunView,
  StepList,
} from './agents.runs.schemas.ts';
import type { RunsService } from './agents.runs.service.ts';
import { AgentParams, WorkspaceParams } from './agents.schemas.ts';

type Deps = {
  service: RunsService;
  requirePermission(permission: Permission): (req: FastifyRequest) => Promise<void>;
};

const tags = ['agent runs'];
const security: Array<Record<string, string[]>> = [{ session: [], csrf: [] }, { apiKey: [] }];

const UsageQuery = z.strictObject({
  since: z.iso.datetime({ offset: true }).optional().describe('From this time (default: 30 days ago)'),
});

/** The sequence number a client resumes after: `Last-Event-ID` (what EventSource sends), else `?after=`. */
function resumeAfter(req: FastifyRequest, query: { after?: number | undefined }): number {
  const header = req.headers['last-event-id'];
  if (typeof header === 'string' && header !== '') {
    if (!/^\d{1,15}$/.test(header)) throw new AppError('bad_request', 'Last-Event-ID must be an event number.');
    return Number(header);
  }
  return query.after ?? 0;
}

/**
 * Streams a run's events as server-sent events (`id:` the event number, `event:` its type,
 * `data:` its JSON) until the run ends or waits for a person, then closes.
 */
async function streamEvents(
  service: RunsService,
  req: FastifyRequest,
  reply: FastifyReply,
  scope: Scope,
  runId: string,
  after: number,
  status = 200,
) {
  // Checked before the headers go out: an unknown run is a plain 404.
  await service.getRun({ scope, runId });
  const gone = new AbortController();
  reply.raw.on('close', () => gone.abort());
  reply.hijack();
  const res = reply.raw;
  res.writeHead(status, {
    ...(reply.getHeaders() as OutgoingHttpHeaders),
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  });
  // A comment line now and then: proxies keep a quiet stream (a long model call) open.
  const keepAlive = setInterval(() => {
    if (!res.destroyed) res.write(': keep-alive\n\n');
  }, 15_000);
  keepAlive.unref();
  try {
    await service.follow(
      { scope, runId, after },
      (e) => {
        if (!res.destroyed) res.write(`id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`);
      },
      gone.signal,
    );
  } catch (err) {
    const e = err instanceof AppError ? err : new AppError('internal_error', 'The event stream failed.');
    if (!res.destroyed) res.write(`event: error\ndata: ${JSON.stringify({ code: e.code, message: e.message })}\n\n`);
    req.log.warn({ code: e.code }, 'agents: a run event stream ended with an error');
  } finally {
    clearInterval(keepAlive);
    if (!res.destroyed) res.end();
  }
}

/**
 * The agent runs HTTP API. Starting a run needs `agents:run` (owners, admins, members;
 * keys with agents:run); reading needs `agents:read`; cancelling and deciding on tool calls
 * need `agents:run`.
 */
export function registerRunRoutes(app: HttpServer, { service, requirePermission }: Deps) {
  const base = '/api/workspaces/:workspaceId/runs';
  const one = `${base}/:runId`;

  app.post(
    base,
    {
      schema: {
        tags,
        security,
        summary:
          'Run an agent on an input: answers when the run ended (or waits for approval), streams its events with stream=true, or queues it with background=true (202)',
        params: WorkspaceParams,
        body: CreateRunBody,
        response: { 200: RunView, 202: RunView },
      },
      config: {
        audit: {
          exempt: 'data-plane call: the run is its own record (steps, events) and its model calls are metered',
        },
      },
      preHandler: requirePermission('agents:run'),
    },
    async (req, reply) => {
      const scope = requireScope(req);
      const { run } = await service.createRun({ scope, input: req.body });
      // A streamed run names itself in a header too: a client can resume its events by id.
      reply.header('x-berth-run-id', run.id);
      if (req.body.stream) return streamEvents(service, req, reply, scope, run.id, 0);
      return reply.status(req.body.background ? 202 : 200).send(run);
    },
  );

  app.get(
    base,
    {
      schema: {
        tags,
        security,
        summary: 'List runs, newest first (cursor pagination; filter by agent and status)',
        params: WorkspaceParams,
        querystring: ListRunsQuery,
        response: { 200: RunList },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) =>
      service.listRuns({
        scope: requireScope(req),
        limit: req.query.limit,
        ...(req.query.agent ? { agent: req.query.agent } : {}),
        ...(req.query.status ? { status: req.query.status } : {}),
        ...(req.query.cursor ? { cursor: req.query.cursor } : {}),
      }),
  );

  app.get(
    one,
    {
      schema: {
        tags,
        security,
        summary: 'Get a run: status, stop reason, output, waiting tool calls, usage and cost',
        params: RunParams,
        response: { 200: RunView },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) => service.getRun({ scope: requireScope(req), runId: req.params.runId }),
  );

  app.get(
    `${one}/steps`,
    {
      schema: {
        tags,
        security,
        summary: "A run's steps: each model call and tool call, with its content, usage, latency and status",
        params: RunParams,
        response: { 200: StepList },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) => ({ data: await service.listSteps({ scope: requireScope(req), runId: req.params.runId }) }),
  );

  app.get(
    `${one}/events`,
    {
      schema: {
        tags,
        security,
        summary:
          "A run's events as server-sent events, live until it ends; resume after the last one seen with Last-Event-ID (or ?after=)",
        params: RunParams,
        querystring: EventsQuery,
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req, reply) => {
      const scope = requireScope(req);
      return streamEvents(service, req, reply, scope, req.params.runId, resumeAfter(req, req.query));
    },
  );

  app.post(
    `${one}/cancel`,
    {
      schema: {
        tags,
        security,
        summary: 'Cancel a run that has not ended (409 run_finished once it has)',
        params: RunParams,
        response: { 200: RunView },
      },
      preHandler: requirePermission('agents:run'),
    },
    async (req) => service.cancelRun({ scope: requireScope(req), runId: req.params.runId }),
  );

  for (const [action, approve] of [
    ['approve', true],
    ['deny', false],
  ] as const) {
    app.post(
      `${one}/${action}`,
      {
        schema: {
          tags,
          security,
          summary: approve
            ? 'Approve a tool call the run waits for (optionally with edited arguments), or all of them'
            : 'Deny a tool call the run waits for (the model is told, with the reason), or all of them',
          params: RunParams,
          body: DecisionBody,
          response: { 200: RunView },
        },
        preHandler: requirePermission('agents:run'),
      },
      async (req) =>
        service.decide({ scope: requireScope(req), runId: req.params.runId, approve, input: req.body ?? {} }),
    );
  }

  app.get(
    '/api/workspaces/:workspaceId/agents/:agentId/usage',
    {
      schema: {
        tags,
        security,
        summary: "An agent's runs since a time (runs are kept 90 days): count, tokens and cost",
        params: AgentParams,
        querystring: UsageQuery,
        response: { 200: AgentUsageView },
      },
      preHandler: requirePermission('agents:read'),
    },
    async (req) =>
      service.agentUsage({
        scope: requireScope(req),
        agent: req.params.agentId,
        ...(req.query.since ? { since: new Date(req.query.since) } : {}),
      }),
  );
}
