import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, expect, it } from 'vitest';
import type { Role, Scope } from '../../src/platform/http/context.ts';
import type {
  MatrixContext as SpecContext,
  MatrixRoute as SpecRoute,
  MatrixUser as SpecUser,
} from '../../src/platform/http/matrix.ts';
import type { TestApp } from './app.ts';
import { TestClient } from './client.ts';
import { signUp } from './identity.ts';

/**
 * The reusable tenant-isolation test: a route x role matrix.
 *
 * For every route spec it asks six callers and checks who gets in:
 *
 * | caller                                   | expected                                   |
 * |------------------------------------------|--------------------------------------------|
 * | owner, admin, member, viewer of A        | in `allowed`: not 401/403/404 and not 5xx  |
 * |                                          | (2xx with `strict`); otherwise 403 forbidden|
 * | member of another workspace B            | 404 not_found (existence is never revealed) |
 * | anonymous (no session)                   | 401 unauthenticated                         |
 *
 * The fixture: workspace A with an owner, an admin, a member and a viewer (members join
 * through real invitations), and workspace B owned by the outsider. Refused callers go
 * first, allowed ones last, so a refused request that wrongly changed something shows up.
 *
 * Every module with workspace routes keeps their specs in `src/modules/<m>/<m>.matrix.ts`
 * (exporting `matrixRoutes`) and runs them from `<m>.matrix.routes.test.ts`. A coverage test
 * (src/modules/workspaces/workspaces.matrix-coverage.test.ts) reads the app's route table and
 * fails when a route with `:workspaceId` has no spec in any module's `matrixRoutes`.
 *
 * @example
 * // src/modules/keys/keys.matrix.ts
 * export const matrixRoutes: MatrixRoute[] = [
 *   { method: 'GET', url: (c) => `/api/workspaces/${c.workspaceId}/keys`, allowed: ['owner', 'admin', 'member'] },
 *   {
 *     method: 'DELETE',
 *     // A target per caller, so each allowed caller has something to delete.
 *     setup: async (c) => ({ keyId: (await createKey(c)).id }),
 *     url: (c) => `/api/workspaces/${c.workspaceId}/keys/${c.vars.keyId}`,
 *     allowed: ['owner', 'admin'],
 *   },
 * ];
 *
 * // src/modules/keys/keys.matrix.routes.test.ts
 * describe('security', () => {
 *   let app: TestApp;
 *   beforeAll(async () => { app = await createTestApp(); });
 *   afterAll(async () => { await app.close(); });
 *   roleMatrix({ app: () => app, strict: true, routes: matrixRoutes });
 * });
 *
 * Name URL variables after the route's parameters (`c.vars.keyId` for `:keyId`): the spec's
 * route is read from its URL with placeholder ids.
 *
 * Routes that change the fixture for good (delete the workspace, transfer ownership) set
 * `fresh: true`: each allowed caller then gets a new fixture of its own.
 */

export type MatrixCaller = Role | 'outsider' | 'anonymous';
export const MATRIX_CALLERS: readonly MatrixCaller[] = ['anonymous', 'outsider', 'viewer', 'member', 'admin', 'owner'];

// The spec types live in src (module specs import them from there); named here for the test app.
export type MatrixUser = SpecUser<TestClient>;
export type MatrixContext = SpecContext<TestApp, TestClient>;
export type MatrixRoute = SpecRoute<TestApp, TestClient>;

export type RoleMatrixOptions = {
  app: () => TestApp;
  routes: MatrixRoute[];
  /** Allowed callers must get a 2xx (default: anything but 401/403/404/5xx). */
  strict?: boolean;
};

const ALLOWED = 'allowed';

function scopeOf(workspaceId: string, user: MatrixUser, role: Role): Scope {
  return { workspaceId, actor: { type: 'user', userId: user.userId }, role };
}

async function newUser(app: TestApp, label: string): Promise<MatrixUser> {
  const email = `${label}-${randomBytes(4).toString('hex')}@matrix.test`;
  // Each fixture user comes from an address of its own, as real people do (sign-ups are throttled per IP).
  const ip = `10.${[...randomBytes(3)].join('.')}`;
  const client = await signUp(app, { email, ip });
  return { userId: client.userId, email, client };
}

/** Adds `user` to a workspace with `role` through a real invitation. */
async function join(app: TestApp, ownerScope: Scope, user: MatrixUser, role: Role) {
  const workspaces = app.modules.workspaces.service;
  const invitable = role === 'owner' ? 'admin' : role;
  const { token } = await workspaces.invite({ scope: ownerScope, email: user.email, role: invitable });
  await workspaces.acceptInvitation({ token, userId: user.userId });
  if (role === 'owner') await workspaces.changeRole({ scope: ownerScope, userId: user.userId, role });
}

/** Builds the matrix fixture: workspace A with one user per role, workspace B with the outsider. */
export async function createMatrixFixture(app: TestApp): Promise<MatrixContext> {
  const workspaces = app.modules.workspaces.service;
  const [owner, admin, member, viewer, outsider] = await Promise.all(
    (['owner', 'admin', 'member', 'viewer', 'outsider'] as const).map((l) => newUser(app, l)),
  );
  if (!owner || !admin || !member || !viewer || !outsider) throw new Error('fixture users');
  const a = await workspaces.createWorkspace({ ownerUserId: owner.userId, name: 'Matrix A' });
  const b = await workspaces.createWorkspace({ ownerUserId: outsider.userId, name: 'Matrix B' });
  const ownerScope = scopeOf(a.id, owner, 'owner');
  await join(app, ownerScope, admin, 'admin');
  await join(app, ownerScope, member, 'member');
  await join(app, ownerScope, viewer, 'viewer');
  const ctx: MatrixContext = {
    app,
    workspaceId: a.id,
    otherWorkspaceId: b.id,
    users: { owner, admin, member, viewer, outsider },
    anonymous: new TestClient(app),
    ownerScope,
    async addMember(role) {
      const user = await newUser(app, `extra-${role}`);
      await join(app, ownerScope, user, role);
      return user;
    },
    vars: {},
  };
  return ctx;
}

function outcome(status: number, body: unknown, strict: boolean): string {
  const code = (body as { code?: unknown } | null)?.code;
  const denied = status === 401 || status === 403 || status === 404 || status >= 500;
  if (strict ? status >= 200 && status < 300 : !denied) return ALLOWED;
  return `${status} ${typeof code === 'string' ? code : '?'}`;
}

function expected(route: MatrixRoute, caller: MatrixCaller): string {
  if (caller === 'anonymous') return '401 unauthenticated';
  if (caller === 'outsider') return '404 not_found';
  const override = route.expect?.[caller];
  if (override) return override;
  return route.allowed.includes(caller) ? ALLOWED : '403 forbidden';
}

async function ask(route: MatrixRoute, ctx: MatrixContext, caller: MatrixCaller, strict: boolean): Promise<string> {
  ctx.vars = route.setup ? await route.setup(ctx) : {};
  const client = caller === 'anonymous' ? ctx.anonymous : ctx.users[caller].client;
  const body = route.body?.(ctx);
  const res = await client.request(route.method, route.url(ctx), body ?? (route.method === 'GET' ? undefined : {}));
  return outcome(res.status, res.body, strict);
}

/**
 * Registers one test per route (inside the current `describe`) that runs the route x caller
 * matrix and compares the whole table at once, so a failure shows every caller's outcome.
 */
export function roleMatrix(opts: RoleMatrixOptions): void {
  let shared: MatrixContext;
  beforeAll(async () => {
    shared = await createMatrixFixture(opts.app());
  });

  for (const route of opts.routes) {
    const name = route.name ?? matrixRoutePattern(route);
    it(`${name}: allowed ${route.allowed.join(', ') || 'nobody'}`, async () => {
      const strict = opts.strict ?? false;
      let ctx = route.fresh ? await createMatrixFixture(opts.app()) : shared;
      const actual: Record<string, string> = {};
      const want: Record<string, string> = {};
      const order = [
        ...MATRIX_CALLERS.filter((c) => c === 'anonymous' || c === 'outsider' || !route.allowed.includes(c)),
        ...MATRIX_CALLERS.filter((c) => c !== 'anonymous' && c !== 'outsider' && route.allowed.includes(c)),
      ];
      let first = true;
      for (const caller of order) {
        const isAllowed = caller !== 'anonymous' && caller !== 'outsider' && route.allowed.includes(caller);
        if (route.fresh && isAllowed && !first) ctx = await createMatrixFixture(opts.app());
        if (isAllowed) first = false;
        want[caller] = expected(route, caller);
        actual[caller] = await ask(route, ctx, caller, strict);
      }
      expect(actual).toEqual(want);
    });
  }
}

/**
 * The route a spec exercises, as `METHOD /path/:param`: its URL built from a context whose
 * ids read `:workspaceId`, `:userId` and, for `ctx.vars.x`, `:x`.
 */
export function matrixRoutePattern(route: MatrixRoute): string {
  return `${route.method} ${route.url(placeholderContext()).replace(/\bundefined\b/g, ':id')}`;
}

/** A route pattern with its parameter names dropped: `GET /a/:id/b` and `GET /a/:x/b` are one route. */
export function routeShape(pattern: string): string {
  return pattern.replace(/:[A-Za-z0-9_]+/g, ':');
}

/**
 * Every route the app serves, as `METHOD /path/:param`, read from Fastify's route table
 * (`printRoutes`), hidden routes included. HEAD and OPTIONS twins are left out.
 */
export function appRoutes(app: TestApp): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of app.http.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = (m[1] ?? '').length / 4;
    stack.length = depth;
    const path = `${stack[depth - 1] ?? ''}${m[2] ?? ''}`;
    stack[depth] = path;
    for (const method of (m[3] ?? '').split(', ').filter(Boolean)) {
      if (method !== 'HEAD' && method !== 'OPTIONS') for (const p of paramVariants(path)) out.push(`${method} ${p}`);
    }
  }
  return [...new Set(out)].sort();
}

/**
 * Routes with differently named parameters at one position (`/c/:provider/authorize` and
 * `/c/:connectionId`) share one node, printed `:provider|:connectionId`: every name is
 * listed (the table does not say which route uses which; their shapes are the same).
 */
function paramVariants(path: string): string[] {
  const m = /:[A-Za-z0-9_]+(?:\|:[A-Za-z0-9_]+)+/.exec(path);
  if (!m) return [path];
  const head = path.slice(0, m.index);
  const tail = path.slice(m.index + m[0].length);
  return m[0].split('|').flatMap((name) => paramVariants(`${head}${name}${tail}`));
}

/** The routes of the app that act on one workspace (they have a `:workspaceId` parameter). */
export function workspaceRoutes(app: TestApp): string[] {
  return appRoutes(app).filter((r) => r.includes('/:workspaceId'));
}

/**
 * Where every module keeps the role-matrix specs of its workspace routes: a file
 * `src/modules/<module>/<module>.matrix.ts` exporting `matrixRoutes: MatrixRoute[]`, run by
 * `<module>.matrix.routes.test.ts` (`roleMatrix({ app, routes: matrixRoutes })`). Keeping the
 * specs out of the test file lets the coverage test import every module's list without
 * running it, and fail when a workspace route has no spec.
 */
export async function loadMatrixSpecs(modulesDir: string): Promise<Array<{ file: string; routes: MatrixRoute[] }>> {
  const found: Array<{ file: string; routes: MatrixRoute[] }> = [];
  for (const dir of readdirSync(modulesDir, { withFileTypes: true })) {
    if (!dir.isDirectory()) continue;
    for (const name of readdirSync(path.join(modulesDir, dir.name))) {
      if (!name.endsWith('.matrix.ts')) continue;
      const file = path.join(modulesDir, dir.name, name);
      const mod = (await import(pathToFileURL(file).href)) as { matrixRoutes?: unknown };
      if (!Array.isArray(mod.matrixRoutes)) throw new Error(`${file} must export matrixRoutes: MatrixRoute[]`);
      found.push({ file, routes: mod.matrixRoutes as MatrixRoute[] });
    }
  }
  return found;
}

/** A context whose ids read `:workspaceId` etc., only for naming tests. */
function placeholderContext(): MatrixContext {
  const user = { userId: ':userId', email: '', client: undefined as unknown as TestClient };
  return {
    app: undefined as unknown as TestApp,
    workspaceId: ':workspaceId',
    otherWorkspaceId: ':otherWorkspaceId',
    users: { owner: user, admin: user, member: user, viewer: user, outsider: user },
    anonymous: undefined as unknown as TestClient,
    ownerScope: { workspaceId: ':workspaceId', actor: { type: 'user', userId: ':userId' }, role: 'owner' },
    addMember: async () => user,
    vars: new Proxy({}, { get: (_t, p) => `:${String(p)}` }) as Record<string, string>,
  };
}
