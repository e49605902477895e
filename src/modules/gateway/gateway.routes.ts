import { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../../platform/errors.ts';
import type { HttpServer } from '../../platform/http/server.ts';
import { apiKeyOf, openAiError } from '../keys/index.ts';
import type {
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletionStream,
  EmbeddingsRequest,
  Usage,
} from './gateway.adapter.ts';
import { ChatCompletionBody, EmbeddingsBody, ModelIdParams } from './gateway.schemas.ts';
import {
  type Caller,
  clientError,
  estimateFromChars,
  estimateTokens,
  type GatewayCall,
  type GatewayService,
} from './gateway.service.ts';

type Deps = { service: GatewayService; bodyLimit: number };

const tags = ['gateway'];
const security = [{ apiKey: [] }];
const audit = { exempt: 'data-plane call, metered as a usage event rather than audited as an admin action' };

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

function contentLength(messages: ChatCompletionRequest['messages']): number {
  let n = 0;
  for (const m of messages) {
    if (typeof m.content === 'string') n += m.content.length;
    else if (Array.isArray(m.content)) for (const p of m.content) n += p.type === 'text' ? p.text.length : 1000;
    if (m.tool_calls) for (const t of m.tool_calls) n += t.function.arguments.length + t.function.name.length;
  }
  return n;
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

function sse(data: unknown): string {
  return `data: ${JSON.stringify(data)}\n\n`;
}

/**
 * The OpenAI-compatible inbound API. Bodies pass through memory only: nothing of a prompt
 * or completion is logged, stored or put in an error.
 */
export function registerGatewayRoutes(app: HttpServer, { service, bodyLimit }: Deps) {
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
      config: { audit },
      bodyLimit,
    },
    async (req, reply) => {
      const caller = callerOf(req);
      const body = req.body as unknown as ChatCompletionRequest;
      const stream = body.stream === true;
      const inputEstimate = estimateFromChars(contentLength(body.messages)) + 4 * body.messages.length;
      const maxOut = body.max_completion_tokens ?? body.max_tokens ?? null;
      const call = await service.begin(caller, {
        endpoint: 'chat.completions',
        model: body.model,
        stream,
        inputEstimate,
        maxOutputTokens: maxOut === null ? null : maxOut * (body.n ?? 1),
      });
      const gone = clientGone(req, reply);
      if (!stream) {
        try {
          const res = await call.attempt(
            (c, opts) => c.provider.adapter.chatCompletion({ ...body, model: c.model }, opts),
            gone.signal,
          );
          const output = res.choices.reduce(
            (n, ch) => n + (typeof ch.message.content === 'string' ? ch.message.content.length : 0),
            0,
          );
          call.finish({
            status: 200,
            usage: res.usage,
            estimate: { input: inputEstimate, output: estimateFromChars(output) },
          });
          servedHeaders(reply, call);
          return res;
        } catch (err) {
          const e = clientError(err);
          call.finish({
            status: gone.signal.aborted ? 499 : e.status,
            errorCode: gone.signal.aborted ? 'client_closed' : e.code,
          });
          servedHeaders(reply, call);
          throw e;
        }
      }
      return streamChat(reply, call, body, gone, inputEstimate);
    },
  );

  app.post(
    '/v1/embeddings',
    {
      schema: { tags, security, summary: 'Create embeddings (OpenAI format)', body: EmbeddingsBody },
      config: { audit },
      bodyLimit,
    },
    async (req, reply) => {
      const caller = callerOf(req);
      const body = req.body as unknown as EmbeddingsRequest;
      const inputs = typeof body.input === 'string' ? [body.input] : (body.input as unknown[]);
      const inputEstimate = inputs.reduce<number>(
        (n, i) => n + (typeof i === 'string' ? estimateTokens(i) : Array.isArray(i) ? i.length : 1),
        0,
      );
      const call = await service.begin(caller, {
        endpoint: 'embeddings',
        model: body.model,
        stream: false,
        inputEstimate,
        maxOutputTokens: 0,
      });
      const gone = clientGone(req, reply);
      try {
        const res = await call.attempt((c, opts) => {
          if (!c.provider.adapter.embeddings) throw new AppError('bad_request', 'This provider has no embeddings API.');
          return c.provider.adapter.embeddings({ ...body, model: c.model }, opts);
        }, gone.signal);
        const usage: Usage | undefined = res.usage
          ? { prompt_tokens: res.usage.prompt_tokens, completion_tokens: 0, total_tokens: res.usage.total_tokens }
          : undefined;
        call.finish({ status: 200, usage, estimate: { input: inputEstimate, output: 0 } });
        servedHeaders(reply, call);
        return res;
      } catch (err) {
        const e = clientError(err);
        call.finish({ status: e.status, errorCode: e.code });
        servedHeaders(reply, call);
        throw e;
      }
    },
  );
}

/**
 * Streams a chat completion as server-sent events. The usage event is journaled before
 * `[DONE]` goes out, so a client that saw the end of the stream is always metered. Aborted
 * streams are billed for what was delivered (estimated when the provider sent no usage).
 */
async function streamChat(
  reply: FastifyReply,
  call: GatewayCall,
  body: ChatCompletionRequest,
  gone: AbortController,
  inputEstimate: number,
) {
  const wantsUsage = body.stream_options?.include_usage === true;
  let stream: ChatCompletionStream;
  try {
    stream = await call.attempt(
      (c, opts) => c.provider.adapter.chatCompletionStream({ ...body, model: c.model }, opts),
      gone.signal,
    );
  } catch (err) {
    const e = clientError(err);
    call.finish({
      status: gone.signal.aborted ? 499 : e.status,
      errorCode: gone.signal.aborted ? 'client_closed' : e.code,
    });
    servedHeaders(reply, call);
    throw e;
  }
  const started = performance.now();
  let ttft: number | null = null;
  let delivered = 0;
  let usage: Usage | undefined;

  async function* frames(): AsyncGenerator<string> {
    try {
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
        const isUsageOnly = chunk.choices.length === 0;
        if (isUsageOnly && !wantsUsage) continue;
        const len = deltaLength(chunk);
        if (len > 0 && ttft === null) ttft = Math.round(performance.now() - started);
        delivered += len;
        yield sse(wantsUsage ? chunk : { ...chunk, usage: undefined });
      }
      call.finish({
        status: 200,
        usage,
        ttftMs: ttft,
        estimate: { input: inputEstimate, output: estimateFromChars(delivered) },
      });
      yield 'data: [DONE]\n\n';
    } catch (err) {
      const aborted = gone.signal.aborted;
      const e = clientError(err);
      call.finish({
        status: aborted ? 499 : e.status,
        errorCode: aborted ? 'client_closed' : e.code,
        usage,
        ttftMs: ttft,
        estimate: { input: inputEstimate, output: estimateFromChars(delivered) },
      });
      if (!aborted) yield sse(openAiError(e));
    } finally {
      // The client left mid-stream: what was delivered is billed.
      call.finish({
        status: 499,
        errorCode: 'client_closed',
        usage,
        ttftMs: ttft,
        estimate: { input: inputEstimate, output: estimateFromChars(delivered) },
      });
    }
  }

  servedHeaders(reply, call);
  reply.header('content-type', 'text/event-stream; charset=utf-8');
  reply.header('cache-control', 'no-cache');
  reply.header('x-accel-buffering', 'no');
  return reply.send(Readable.from(frames(), { objectMode: false }));
}
