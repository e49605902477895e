import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from './helpers/app.ts';
import { TestClient } from './helpers/client.ts';
import { makeOperator, type SignedInClient, signUp } from './helpers/identity.ts';

type Op = { method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'; path: string; bodyKeys: string[] };

/** Every /api operation in the OpenAPI document, with the property names its body declares. */
function apiOperations(app: TestApp): Op[] {
  const doc = app.http.swagger() as unknown as {
    paths: Record<
      string,
      Record<string, { requestBody?: { content?: Record<string, { schema?: { properties?: object } }> } }>
    >;
  };
  const ops: Op[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    if (!path.startsWith('/api')) continue;
    for (const [method, op] of Object.entries(methods)) {
      const props = op.requestBody?.content?.['application/json']?.schema?.properties ?? {};
      ops.push({ method: method.toUpperCase() as Op['method'], path, bodyKeys: Object.keys(props) });
    }
  }
  return ops;
}

/** What a leaked stack trace looks like: V8 frames, module paths, source positions, a "stack" field. */
const STACK_TRACE = /\n\s+at .+:\d+:\d+|node_modules\/|\.ts:\d+:\d+|"stack"\s*:/;

/** Generated bodies: valid-looking shapes with wrong values, junk, and raw malformed text. */
function bodies(keys: string[]) {
  const value = fc.oneof(
    fc.string({ maxLength: 300 }),
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(fc.string(), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 8 }), fc.string(), { maxKeys: 3 }),
    fc.string({ minLength: 2000, maxLength: 5000 }),
    fc.constantFrom('a@b.co', 'not-an-email', '', 'ws_00000000000000000000000000', '../../etc/passwd', '\u0000'),
  );
  const shaped = keys.length
    ? fc.record(Object.fromEntries(keys.map((k) => [k, value])), { requiredKeys: [] })
    : fc.dictionary(fc.string({ maxLength: 10 }), value, { maxKeys: 4 });
  return fc.oneof(
    shaped.map((b) => ({ kind: 'json' as const, body: b })),
    shaped.map((b) => ({ kind: 'json' as const, body: { ...b, unexpectedField: 1 } })),
    fc.jsonValue().map((b) => ({ kind: 'json' as const, body: b })),
    fc.string({ maxLength: 200 }).map((t) => ({ kind: 'raw' as const, body: `{${t}` })),
  );
}

const pathParam = fc.oneof(
  fc.constantFrom('ws_01JD6F3Q4N8ZK5R2W7XH9YB0C1', 'usr_01JD6F3Q4N8ZK5R2W7XH9YB0C1', 'x', '%00', '..', 'A'.repeat(300)),
  fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/),
);

describe('security', () => {
  let app: TestApp;
  let member: SignedInClient;
  let anonymous: TestClient;
  let ownWorkspace: string;

  beforeAll(async () => {
    app = await createTestApp({
      config: {
        BERTH_LOGIN_IP_MAX_FAILURES: 10_000,
        BERTH_LOGIN_ACCOUNT_MAX_FAILURES: 10_000,
        BERTH_SIGNUP_IP_MAX: 10_000,
        BERTH_EMAIL_ADDRESS_MAX: 10_000,
        BERTH_EMAIL_IP_MAX: 10_000,
      },
    });
    member = await signUp(app);
    const ws = await member.post<{ id: string }>('/api/workspaces', { name: 'Fuzz' });
    ownWorkspace = ws.body.id;
    anonymous = new TestClient(app);
  }, 60_000);
  afterAll(async () => {
    await app.close();
  });

  it('no generated input makes any /api route answer 5xx or leak a stack trace', async () => {
    const ops = apiOperations(app);
    expect(ops.length).toBeGreaterThan(20);
    for (const op of ops) {
      // Routes that can end or change the caller's own session get a session of their own,
      // signed in as an operator so operator routes are reached past their access check.
      const ownSession = /logout|revoke-all|sessions|password|mfa|disable|operator|leave|transfer/.test(op.path);
      const caller = ownSession ? await signUp(app) : member;
      if (ownSession) await makeOperator(app, caller.userId);
      const callerWorkspace = ownSession
        ? (await caller.post<{ id: string }>('/api/workspaces', { name: 'Fuzz' })).body.id
        : ownWorkspace;
      await fc.assert(
        fc.asyncProperty(
          bodies(op.bodyKeys),
          pathParam,
          fc.boolean(),
          fc.boolean(),
          async (b, param, signedIn, ownWs) => {
            const url = op.path.replace(/:(\w+)/g, (_m, name: string) =>
              name === 'workspaceId' && ownWs ? callerWorkspace : encodeURIComponent(param),
            );
            const client = signedIn ? caller : anonymous;
            const res =
              op.method === 'GET'
                ? await client.get(url)
                : b.kind === 'raw'
                  ? await client.request(op.method, url, b.body, { 'content-type': 'application/json' })
                  : await client.request(op.method, url, b.body);
            expect(res.status, `${op.method} ${url} -> ${res.text.slice(0, 300)}`).toBeLessThan(500);
            expect(res.text).not.toMatch(STACK_TRACE);
          },
        ),
        { numRuns: 25 },
      );
    }
  }, 600_000);
});
