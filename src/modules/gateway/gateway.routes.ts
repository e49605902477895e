import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest, onSendHookHandler } from 'fastify';
import { validatorCompiler } from 'fastify-type-provider-zod';
import { AppError } from '../../platform/errors.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { toAppError } from '../../platform/http/server.ts';
import { apiKeyOf, openAiError } from '../keys/index.ts';
import type {
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletionResponse,
  ChatCompletionStream,
  EmbeddingsRequest,
  Usage,
} from './gateway.adapter.ts';
import { inputEstimateOf, outputChars } from './gateway.measure.ts';
import {
  type AnthropicEvent,
  anthropicError,
  chunksToAnthropicEvents,
  fromAnthropicRequest,
  type InboundMessagesRequest,
  toAnthropicResponse,
} from './gateway.messages.ts';
import { ChatCompletionBody, EmbeddingsBody, isPlainChatBody, MessagesBody, ModelIdParams } from './gateway.schemas.ts';
import {
  type Caller,
  clientError,
  type Endpoint,
  estimateFromChars,
  type GatewayCall,
  type GatewayService,
} from './gateway.service.ts';
import type { UsageRecorder } from './gateway.usage.ts';

type Journal = Pick<UsageRecorder, 'whenWritten'>;
type Deps = { service: GatewayService; journal: Journal; bodyLimit: number };

const tags = ['gateway'];
const security = [{ apiKey: [] }];
const audit = { exempt: 'data-plane call, metered as a usage event rather than audited as an admin action' };

const ENDPOINTS: Record<string, Endpoint> = {
  '/v1/chat/completions': 'chat.completions',
  '/v1/embeddings': 'embeddings',
  '/v1/messages': 'messages',
};

/** Requests whose call reached `begin` (which meters them itself). */
const begun = new WeakSet<FastifyRequest>();

function callerOf(req: FastifyRequest): Caller {
  const key = apiKeyOf(req);
  if (!key) throw new AppError('invalid_api_key', 'Send your API key as "Authorization: Bearer brt_..."');
  return {
    workspaceId: key.workspaceId,
    keyId: key.keyId,
    userId: key.userId,
    allowedModels: key.allowedModels,
    rateLimitRpm: key.rateLimitRpm,
    rateLimitTpm: key.rateLimitTpm,
    requestId: req.id,
  };
}

function servedHeaders(reply: FastifyReply, call: GatewayCall) {
  reply.headers(call.limitHeaders);
  if (call.served) {
    reply.header('x-berth-provider', call.served.provider.name);
    reply.header('x-berth-model', call.served.model);
  }
}

/** Aborts when the client goes away before the answer is complete. */
function clientGone(req: FastifyRequest, reply: FastifyReply): AbortController {
  const controller = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  req.raw.on('aborted', () => controller.abort());
  return controller;
}

function deltaLength(chunk: ChatCompletionChunk): number {
  let n = 0;
  for (const c of chunk.choices) {
    n += c.delta.content?.length ?? 0;
    n += c.delta.reasoning_content?.length ?? 0;
    for (const t of c.delta.tool_calls ?? [])
      n += (t.function?.arguments?.length ?? 0) + (t.function?.name?.length ?? 0);
  }
  return n;
}

/** Resolves once the usage events recorded so far are in the journal: with the write's error, if it failed. */
function journaled(journal: Journal): Promise<Error | undefined> {
  return new Promise((resolve) => journal.whenWritten(resolve));
}

function sse(data: unknown): string {
  return `data: ${JSON.stringify(data)}\n\n`;
}

/**
 * The OpenAI-compatible inbound API. Bodies pass through memory only: nothing of a prompt
 * or completion is logged, stored or put in an error.
 */
export function registerGatewayRoutes(app: HttpServer, { service, journal, bodyLimit }: Deps) {
  app.addErrorRenderer('/v1/messages', (err) => anthropicError(err));

  // A metered route's answer, success or error, leaves once its usage event is in the journal
  // (group commit: one write for the events of one event-loop turn). Streams wait in runChat.
  const onSend: onSendHookHandler = (_req, _reply, payload, done) =>
    journal.whenWritten((err) => (err ? done(err) : done(null, payload)));

  // A call refused at the door (malformed JSON, invalid fields, oversized) is metered too, once.
  app.addHook('onError', async (req, _reply, err) => {
    const endpoint = ENDPOINTS[req.routeOptions.url ?? ''];
    if (!endpoint || begun.has(req) || !apiKeyOf(req)) return;
    const body = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as Record<string, unknown>;
    const model = typeof body.model === 'string' && body.model !== '' ? body.model : 'unknown';
    service.recordRefusal(callerOf(req), { endpoint, model, stream: body.stream === true }, toAppError(err));
  });

  app.get(
    '/v1/models',
    { schema: { tags, security, summary: 'List the models this key can call (OpenAI format)' } },
    async (req) => {
      const caller = callerOf(req);
      const models = await service.listModels(caller.workspaceId);
      const allowed = caller.allowedModels;
      return {
        object: 'list',
        data: models
          .filter((m) => !allowed || allowed.includes(m.id))
          .map((m) => ({ id: m.id, object: 'model', created: 0, owned_by: m.provider })),
      };
    },
  );

  app.get(
    '/v1/models/:model',
    { schema: { tags, security, summary: 'Get one model (OpenAI format)', params: ModelIdParams } },
    async (req) => {
      const caller = callerOf(req);
      const id = req.params.model;
      const models = await service.listModels(caller.workspaceId);
      const m = models.find((x) => x.id === id);
      if (!m || (caller.allowedModels && !caller.allowedModels.includes(m.id))) {
        throw new AppError('model_not_found', `The model ${id} does not exist or this key cannot call it.`);
      }
      return { id: m.id, object: 'model', created: 0, owned_by: m.provider };
    },
  );

  app.post(
    '/v1/chat/completions',
    {
      schema: { tags, security, summary: 'Create a chat completion (OpenAI format)', body: ChatCompletionBody },
      // The common body passes a quick check; the rest, and every error, go through the schema.
      validatorCompiler: (route) => {
        const full = validatorCompiler(route as unknown as Parameters<typeof validatorCompiler>[0]);
        return (data: unknown) => (route.httpPart === 'body' && isPlainChatBody(data) ? { value: data } : full(data));
      },
      config: { audit },
      bodyLimit,
      onSend,
    },
    async (req, reply) =>
      runChat(
        service,
        journal,
        req,
        reply,
        req.body as unknown as ChatCompletionRequest,
        'chat.completions',
        openAiFormat,
      ),
  );

  app.post(
    '/v1/messages',
    {
      schema: { tags, security, summary: 'Create a message (Anthropic Messages format)', body: MessagesBody },
      config: { audit },
      bodyLimit,
      onSend,
    },
    async (req, reply) => {
      const body = req.body as unknown as InboundMessagesRequest;
      return runChat(service, journal, req, reply, fromAnthropicRequest(body), 'messages', anthropicFormat(body.model));
    },
  );

  app.post(
    '/v1/embeddings',
    {
      schema: { tags, security, summary: 'Create embeddings (OpenAI format)', body: EmbeddingsBody },
      config: { audit },
      bodyLimit,
      onSend,
    },
    async (req, reply) => {
      const caller = callerOf(req);
      begun.add(req);
      const gone = clientGone(req, reply);
      const { response, provider, model } = await service.embed(
        caller,
        req.body as unknown as EmbeddingsRequest,
        gone.signal,
        (limitHeaders) => reply.headers(limitHeaders),
      );
      reply.header('x-berth-provider', provider);
      reply.header('x-berth-model', model);
      return response;
    },
  );
}

/** How one inbound API writes answers: whole, as stream frames, and errors inside a stream. */
type Format = {
  whole(res: ChatCompletionResponse): unknown;
  /** A fresh stream writer: frames for each chunk, the closing frames, and an error frame. */
  stream(wantsUsage: boolean): {
    chunk(c: ChatCompletionChunk): string;
    end(usage: Usage | undefined): string;
    error(e: AppError): string;
  };
};

const openAiFormat: Format = {
  whole: (res) => res,
  stream: (wantsUsage) => ({
    chunk: (c) => {
      // Usage is always asked of the provider; the client sees it only when it asked too.
      if (c.choices.length === 0) return wantsUsage ? sse(c) : '';
      return sse(wantsUsage || c.usage === undefined ? c : { ...c, usage: undefined });
    },
    end: () => 'data: [DONE]\n\n',
    error: (e) => sse(openAiError(e)),
  }),
};

function event(e: AnthropicEvent): string {
  return `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

function anthropicFormat(model: string): Format {
  return {
    whole: (res) => toAnthropicResponse(res),
    stream: () => {
      const events = chunksToAnthropicEvents(model);
      return {
        chunk: (c) => events.push(c).map(event).join(''),
        end: (usage) => events.finish(usage).map(event).join(''),
        error: (e) => event({ event: 'error', data: anthropicError(e) }),
      };
    },
  };
}

/**
 * One chat call in either inbound format: governance and reservation (`begin`), attempts
 * with fallback, and exactly one usage event, journaled before the client gets its last
 * byte (before the JSON body, or before the stream's closing frames). Aborted streams are
 * billed for what was delivered (estimated when the provider sent no usage).
 */
async function runChat(
  service: GatewayService,
  journal: Journal,
  req: FastifyRequest,
  reply: FastifyReply,
  body: ChatCompletionRequest,
  endpoint: Endpoint,
  format: Format,
) {
  const caller = callerOf(req);
  begun.add(req);
  const stream = body.stream === true;
  const inputEstimate = inputEstimateOf(body.messages);
  const maxOut = body.max_completion_tokens ?? body.max_tokens ?? null;
  const call = await service.begin(caller, {
    endpoint,
    model: body.model,
    stream,
    inputEstimate,
    maxOutputTokens: maxOut === null ? null : maxOut * (body.n ?? 1),
  });
  const gone = clientGone(req, reply);
  const failed = (err: unknown) => {
    const e = clientError(err);
    const aborted = gone.signal.aborted;
    call.finish({ status: aborted ? 499 : e.status, errorCode: aborted ? 'client_closed' : e.code });
    servedHeaders(reply, call);
    return e;
  };

  if (!stream) {
    let res: ChatCompletionResponse;
    try {
      res = await call.attempt(
        (c, opts) => c.provider.adapter.chatCompletion({ ...body, model: c.model }, opts),
        gone.signal,
      );
    } catch (err) {
      throw failed(err);
    }
    call.finish({
      status: 200,
      usage: res.usage,
      estimate: { input: inputEstimate, output: estimateFromChars(outputChars(res)) },
    });
    servedHeaders(reply, call);
    return format.whole(res);
  }

  let upstream: ChatCompletionStream;
  try {
    upstream = await call.attempt(
      (c, opts) => c.provider.adapter.chatCompletionStream({ ...body, model: c.model }, opts),
      gone.signal,
    );
  } catch (err) {
    throw failed(err);
  }
  const writer = format.stream(body.stream_options?.include_usage === true);
  const started = performance.now();
  let ttft: number | null = null;
  let delivered = 0;
  let usage: Usage | undefined;
  const estimate = () => ({ input: inputEstimate, output: estimateFromChars(delivered) });

  servedHeaders(reply, call);
  reply.header('content-type', 'text/event-stream; charset=utf-8');
  reply.header('cache-control', 'no-cache');
  reply.header('x-accel-buffering', 'no');
  // The frames go straight to the socket (the request log still runs when it ends): the
  // first token leaves with the headers, without a stream pipeline in between. One write
  // per upstream batch: the frames of one upstream read leave together.
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, reply.getHeaders() as OutgoingHttpHeaders);
  try {
    for await (const batch of upstream) {
      let out = '';
      for (const chunk of batch) {
        if (chunk.usage) usage = chunk.usage;
        const len = deltaLength(chunk);
        if (len > 0 && ttft === null) ttft = Math.round(performance.now() - started);
        delivered += len;
        out += writer.chunk(chunk);
      }
      // The client left: leaving the loop closes the upstream, and what was delivered is billed below.
      if (res.destroyed) break;
      if (out && !res.write(out)) await writable(res);
    }
    if (!res.destroyed) {
      call.finish({ status: 200, usage, ttftMs: ttft, estimate: estimate() });
      const failed = await journaled(journal);
      if (failed) throw failed;
      if (!res.destroyed) res.write(writer.end(usage));
    }
  } catch (err) {
    const aborted = gone.signal.aborted || res.destroyed;
    const e = clientError(err);
    call.finish({
      status: aborted ? 499 : e.status,
      errorCode: aborted ? 'client_closed' : e.code,
      usage,
      ttftMs: ttft,
      estimate: estimate(),
    });
    // The error frame is a complete answer too: it waits for its event like the closing frames.
    if (!aborted && !(await journaled(journal)) && !res.destroyed) res.write(writer.error(e));
  } finally {
    // Reached without a finish only when the client left mid-stream: what was delivered is billed.
    call.finish({ status: 499, errorCode: 'client_closed', usage, ttftMs: ttft, estimate: estimate() });
    if (!res.destroyed) res.end();
  }
}

/** Resolves once `res` drained its buffer, or closed (the client left). */
function writable(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
