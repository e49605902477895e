import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import swagger from '@fastify/swagger';
import type {
  FastifyBaseLogger,
  FastifyError,
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  RawServerDefault,
} from 'fastify';
import Fastify, { LogController } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import { AppError, type ErrorDetail, isAppError } from '../errors.ts';
import { newId } from '../ids.ts';
import { fixedFieldsLogger, type Logger } from '../logger.ts';
import { anonymous } from './context.ts';

export type HttpServer = FastifyInstance<
  RawServerDefault,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger,
  ZodTypeProvider
>;

export type HttpOptions = {
  logger: Logger;
  bodyLimit: number;
  trustProxy: boolean | number | string;
  publicUrl: string;
  version: string;
  /** The session cookie's name, for the OpenAPI security scheme. */
  sessionCookieName: string;
};

/** The dashboard (everything outside /api and /v1) may load only its own scripts and styles. */
export const DASHBOARD_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

const PROBLEM_TYPE_BASE = 'https://berth.dev/problems/';

/** Renders an error as RFC 9457 problem+json (used for everything outside /v1). */
export function problem(err: AppError, instance: string, requestId: string) {
  return {
    type: `${PROBLEM_TYPE_BASE}${err.code}`,
    title: err.code.replace(/_/g, ' '),
    status: err.status,
    detail: err.message,
    code: err.code,
    instance,
    requestId,
    ...(err.extra.details ? { errors: err.extra.details } : {}),
  };
}

/** Maps anything thrown into an AppError: framework errors by their code, the rest is internal. */
export function toAppError(err: unknown): AppError {
  if (isAppError(err)) return err;
  if (hasZodFastifySchemaValidationErrors(err)) {
    const details: ErrorDetail[] = err.validation.map((v) => ({
      path: v.instancePath || '/',
      message: v.message ?? 'invalid',
    }));
    return new AppError('validation_failed', 'The request is not valid.', { details });
  }
  const fe = err as Partial<FastifyError>;
  switch (fe.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('invalid_json', 'The request body is not valid JSON.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('payload_too_large', 'The request body is too large.');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError('unsupported_media_type', 'Send the request body as application/json.');
    case 'FST_ERR_VALIDATION':
      return new AppError('validation_failed', 'The request is not valid.');
    case 'FST_ERR_NOT_FOUND':
      return new AppError('route_not_found', 'No such route.');
  }
  // The database refused a value as data (class 22: NUL byte, out-of-range number...):
  // that is bad input that slipped past a schema, not a fault of Berth's.
  if (sqlState(err)?.startsWith('22')) {
    return new AppError('validation_failed', 'A value in the request cannot be stored.');
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    if (fe.statusCode === 413) return new AppError('payload_too_large', 'The request body is too large.');
    if (fe.statusCode === 415) return new AppError('unsupported_media_type', 'Unsupported content type.');
    return new AppError('bad_request', 'The request is not valid.');
  }
  return new AppError('internal_error', 'Something went wrong on our side. The request id identifies it.');
}

/**
 * What an internal error may put in the log: its type, driver code and stack frames, but not
 * its message, which can quote data (a database error repeats the value that violated a key).
 */
export function describeInternal(err: unknown) {
  const e = err as { name?: string; code?: unknown; stack?: string };
  return {
    type: e?.name ?? typeof err,
    code: typeof e?.code === 'string' ? e.code : undefined,
    frames: e?.stack
      ?.split('\n')
      .slice(1, 8)
      .map((l) => l.trim()),
  };
}

/** The SQLSTATE of a database error, also when a query builder wrapped it. */
function sqlState(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 3; depth++) {
    if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)) return e.code;
    e = e.cause as typeof e;
  }
  return undefined;
}

export type ErrorRenderer = (err: AppError, req: FastifyRequest, reply: FastifyReply) => unknown;

declare module 'fastify' {
  interface FastifyInstance {
    /** `/api` and everything else answer problem+json; the gateway adds its own renderer for `/v1`. */
    addErrorRenderer(prefix: string, render: ErrorRenderer): void;
  }
}

type Renderers = Array<{ prefix: string; render: ErrorRenderer }>;

function sendError(renderers: Renderers, err: AppError, req: FastifyRequest, reply: FastifyReply) {
  if (err.extra.retryAfterSeconds !== undefined) reply.header('retry-after', String(err.extra.retryAfterSeconds));
  reply.status(err.status);
  // The most specific prefix wins (`/v1/messages` answers Anthropic's shape, the rest of `/v1` OpenAI's).
  let custom: Renderers[number] | undefined;
  for (const r of renderers) {
    if (req.url.startsWith(r.prefix) && (!custom || r.prefix.length > custom.prefix.length)) custom = r;
  }
  if (custom) return reply.send(custom.render(err, req, reply));
  return reply.type('application/problem+json').send(problem(err, req.url.split('?')[0] ?? '/', req.id));
}

/**
 * The HTTP server every module mounts on: request ids, zod schemas, problem+json errors,
 * security headers, no bodies in logs, and the OpenAPI document built from route schemas.
 */
export async function createHttpServer(opts: HttpOptions): Promise<HttpServer> {
  const app = Fastify({
    loggerInstance: opts.logger as FastifyBaseLogger,
    bodyLimit: opts.bodyLimit,
    // A hop count becomes "trust the nearest N proxies"; addresses/CIDRs are passed through.
    trustProxy:
      typeof opts.trustProxy === 'number'
        ? (_address: string, hop: number) => hop < (opts.trustProxy as number)
        : opts.trustProxy,
    genReqId: () => newId('req'),
    requestIdHeader: false,
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request (a copy of the logger and its bindings on every call):
    // the few lines logged about a request name its id themselves.
    childLoggerFactory: (logger) => logger,
    return503OnClosing: true,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<ZodTypeProvider>();

  const renderers: Renderers = [];
  app.decorate('addErrorRenderer', (prefix: string, render: ErrorRenderer) => {
    renderers.push({ prefix, render });
  });
  // /api speaks JSON only: any other body type is refused with 415 before a handler runs.
  app.removeContentTypeParser('text/plain');
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorateRequest('auth', { getter: () => anonymous, setter: undefined } as never);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Berth API',
        version: opts.version,
        description: 'Control plane (/api) and OpenAI-compatible gateway (/v1) of Berth.',
      },
      servers: [{ url: opts.publicUrl }],
      components: {
        securitySchemes: {
          session: { type: 'apiKey', in: 'cookie', name: opts.sessionCookieName },
          csrf: { type: 'apiKey', in: 'header', name: 'x-csrf-token' },
          apiKey: { type: 'http', scheme: 'bearer', description: 'An API key: Authorization: Bearer brt_live_...' },
        },
      },
    },
    transform: jsonSchemaTransform,
  });

  // The per-request hooks take callbacks: every gateway call passes here, and an async hook costs a promise.
  const httpsOnly = opts.publicUrl.startsWith('https:');
  app.addHook('onRequest', (req, reply, done) => {
    reply.header('x-request-id', req.id);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-frame-options', 'DENY');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('cross-origin-opener-policy', 'same-origin');
    if (httpsOnly || req.protocol === 'https') {
      reply.header('strict-transport-security', 'max-age=63072000; includeSubDomains');
    }
    if (req.url.startsWith('/api') || req.url.startsWith('/v1')) reply.header('cache-control', 'no-store');
    else reply.header('content-security-policy', DASHBOARD_CSP);
    done();
  });

  // Set once closing starts (preClose below).
  let closing = false;
  // Its lines hold only the fixed fields below, so they skip the redaction pass.
  const requestLog = fixedFieldsLogger(opts.logger);
  app.addHook('onResponse', (req, reply, done) => {
    // While closing, a keep-alive connection whose request just ended is closed as soon as
    // Node counts it idle, instead of holding the close until its keep-alive timeout.
    if (closing) setImmediate(() => app.server.closeIdleConnections());
    // One line per request: method, route, status, timing. Never headers' secrets or bodies.
    requestLog.info(
      {
        reqId: req.id,
        method: req.method,
        route: req.routeOptions.url ?? 'unmatched',
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      'request',
    );
    done();
  });

  app.setErrorHandler((err, req, reply) => {
    const appErr = toAppError(err);
    if (appErr.status >= 500) req.log.error({ reqId: req.id, err: describeInternal(err) }, 'unhandled error');
    return sendError(renderers, appErr, req, reply);
  });

  app.setNotFoundHandler((req, reply) =>
    sendError(renderers, new AppError('route_not_found', 'No such route.'), req, reply),
  );

  // Graceful shutdown finishes in-flight requests; a connection that never sent a byte (a
  // client's pre-opened socket) has nothing in flight but is not "idle" to Node, and would
  // hold the close until the headers timeout. Those are closed as soon as closing starts;
  // connections whose request was in flight are closed when it ends (onResponse above).
  const silent = new Set<Socket>();
  app.server.on('connection', (socket) => {
    silent.add(socket);
    socket.once('data', () => silent.delete(socket));
    socket.once('close', () => silent.delete(socket));
  });
  app.addHook('preClose', async () => {
    closing = true;
    for (const socket of silent) socket.destroy();
    silent.clear();
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  return app;
}
