import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AppError } from '../errors.ts';
import { createLogger } from '../logger.ts';
import { registerApiReference } from './docs.ts';
import { createHttpServer, type HttpServer } from './server.ts';

const lines: string[] = [];
let app: HttpServer;

beforeAll(async () => {
  app = await createHttpServer({
    logger: createLogger({ level: 'info', destination: { write: (l: string) => lines.push(l) } }),
    bodyLimit: 1024,
    trustProxy: false,
    publicUrl: 'https://berth.test',
    version: '0.0.0',
    sessionCookieName: '__Host-berth_session',
  });
  app.post(
    '/api/things',
    {
      schema: {
        tags: ['things'],
        body: z.strictObject({ name: z.string().min(1).max(10) }),
        response: { 201: z.object({ name: z.string() }) },
      },
    },
    async (req, reply) => reply.status(201).send({ name: req.body.name }),
  );
  app.get('/api/conflict', async () => {
    throw new AppError('email_taken', 'That email is taken.');
  });
  app.get('/api/db-refused', async () => {
    // What drizzle throws when Postgres refuses a value: the driver error as its cause.
    throw Object.assign(new Error('Failed query: insert ...'), { cause: { code: '22P05', message: 'unsupported' } });
  });
  app.get('/api/boom', async () => {
    throw new Error('secret-internal-detail from db: duplicate key (email)=(alice@example.com)');
  });
  registerApiReference(app);
  await app.ready();
});
afterAll(async () => {
  await app.close();
});

describe('happy', () => {
  it('serves the OpenAPI 3.1 document built from route schemas, and a reference page', async () => {
    const doc = await app.inject({ url: '/openapi.json' });
    expect(doc.statusCode).toBe(200);
    const body = doc.json();
    expect(body.openapi).toBe('3.1.0');
    expect(body.paths['/api/things'].post.requestBody).toBeTruthy();
    const page = await app.inject({ url: '/docs' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toContain('text/html');
    expect(page.body).toContain('/api/things');
    expect(page.headers['content-security-policy']).toContain("default-src 'none'");
  });

  it('sets a request id and security headers', async () => {
    const res = await app.inject({ method: 'POST', url: '/api/things', payload: { name: 'a' } });
    expect(res.statusCode).toBe(201);
    expect(res.headers['x-request-id']).toMatch(/^req_/);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['x-frame-options']).toBe('DENY');
    expect(res.headers['strict-transport-security']).toContain('max-age=');
    expect(res.headers['cache-control']).toBe('no-store');
    const dash = await app.inject({ url: '/' });
    expect(dash.headers['content-security-policy']).toContain("script-src 'self'");
  });
});

function problem(res: { headers: Record<string, unknown>; json(): Record<string, unknown> }) {
  expect(res.headers['content-type']).toContain('application/problem+json');
  return res.json();
}

describe('shutdown', () => {
  it('closes promptly while a client holds a connection that never sent a request', async () => {
    const server = await createHttpServer({
      logger: createLogger({ level: 'silent' }),
      bodyLimit: 1024,
      trustProxy: false,
      publicUrl: 'http://berth.test',
      version: '0.0.0',
      sessionCookieName: 'berth_session',
    });
    server.get('/api/ping', async () => ({ ok: true }));
    await server.listen({ host: '127.0.0.1', port: 0 });
    const { port } = server.server.address() as AddressInfo;
    const silent = connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => silent.once('connect', () => resolve()));
    const closed = new Promise<void>((resolve) => silent.once('close', () => resolve()));
    // Without the pre-close hook this waits for Node's headers timeout (60 s): the test times out.
    await server.close();
    await closed;
    expect(silent.destroyed).toBe(true);
  });
});

describe('errors', () => {
  it('answers RFC 9457 problem+json with a stable code', async () => {
    const cases: Array<[InjectOptions, number, string]> = [
      [
        { method: 'POST', url: '/api/things', payload: '{"name":', headers: { 'content-type': 'application/json' } },
        400,
        'invalid_json',
      ],
      [{ method: 'POST', url: '/api/things', payload: { name: 5 } }, 400, 'validation_failed'],
      [{ method: 'POST', url: '/api/things', payload: { name: 'a', extra: true } }, 400, 'validation_failed'],
      [{ method: 'POST', url: '/api/things', payload: { name: 'x'.repeat(11) } }, 400, 'validation_failed'],
      [{ method: 'POST', url: '/api/things', payload: { name: 'x'.repeat(2000) } }, 413, 'payload_too_large'],
      [
        { method: 'POST', url: '/api/things', payload: 'name=a', headers: { 'content-type': 'text/plain' } },
        415,
        'unsupported_media_type',
      ],
      [{ method: 'GET', url: '/api/nothing-here' }, 404, 'route_not_found'],
      [{ method: 'GET', url: '/api/conflict' }, 409, 'email_taken'],
      [{ method: 'GET', url: '/api/db-refused' }, 400, 'validation_failed'],
    ];
    for (const [req, status, code] of cases) {
      const res = await app.inject(req);
      expect(res.statusCode, code).toBe(status);
      const body = problem(res);
      expect(body.code).toBe(code);
      expect(body.status).toBe(status);
      expect(body.type).toBe(`https://berth.dev/problems/${code}`);
      expect(body.requestId).toMatch(/^req_/);
    }
  });
});

describe('security', () => {
  it('an internal error reveals neither its message nor a stack, and the log keeps no message either', async () => {
    const res = await app.inject({ url: '/api/boom' });
    expect(res.statusCode).toBe(500);
    const body = problem(res);
    expect(body.code).toBe('internal_error');
    expect(res.body).not.toContain('secret-internal-detail');
    expect(res.body).not.toMatch(/\.ts:\d+/);
    expect(lines.join('\n')).not.toContain('alice@example.com');
    expect(lines.join('\n')).toContain('unhandled error');
  });

  it('logs one line per request, naming its id, route, status and time, but no body', async () => {
    const res = await app.inject({ method: 'POST', url: '/api/things', payload: { name: 'canary-42' } });
    expect(lines.join('\n')).not.toContain('canary-42');
    const id = res.headers['x-request-id'];
    const mine = lines.map((l) => JSON.parse(l)).filter((l) => l.reqId === id);
    expect(mine).toEqual([
      expect.objectContaining({
        msg: 'request',
        method: 'POST',
        route: '/api/things',
        status: 201,
        ms: expect.any(Number),
      }),
    ]);
  });
});
