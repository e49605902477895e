import type { Role, Scope } from './context.ts';

/**
 * The shape of a route x role matrix spec (test/helpers/tenancy.ts runs them; see there for
 * the callers and what each must get). It lives in src so the specs kept beside each module
 * (`src/modules/<m>/<m>.matrix.ts`) do not import from test/: `App` is what a spec needs of
 * the app (e.g. `{ modules: { keys: { service: Pick<KeysService, 'createKey'> } } }`), and
 * the test helper fills it in with the test app.
 *
 * @example
 * type KeysApp = { modules: { keys: { service: Pick<KeysService, 'createKey'> } } };
 * export const matrixRoutes: MatrixRoute<KeysApp>[] = [
 *   { method: 'GET', url: (c) => `/api/workspaces/${c.workspaceId}/keys`, allowed: ['owner', 'admin', 'member'] },
 * ];
 */

export type MatrixUser<Client = unknown> = { userId: string; email: string; client: Client };

export type MatrixContext<App = unknown, Client = unknown> = {
  app: App;
  /** Workspace A: the one the routes are about. */
  workspaceId: string;
  /** Workspace B: the outsider's own workspace. */
  otherWorkspaceId: string;
  users: Record<Role | 'outsider', MatrixUser<Client>>;
  anonymous: Client;
  /** The owner's scope in A, for preparing data through services. */
  ownerScope: Scope;
  /** Signs up a new user and adds them to A with `role` (a target for member routes). */
  addMember(role: Role): Promise<MatrixUser<Client>>;
  /** What `setup` returned for the current request. */
  vars: Record<string, string>;
};

export type MatrixRoute<App = unknown, Client = unknown> = {
  /** Shown in the test name; defaults to the method and the URL pattern. */
  name?: string;
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: (ctx: MatrixContext<App, Client>) => string;
  body?: (ctx: MatrixContext<App, Client>) => unknown;
  /** Roles of A that may use the route. */
  allowed: readonly Role[];
  /** Runs before each caller's request; its result is `ctx.vars` (ids of fresh targets). */
  setup?: (ctx: MatrixContext<App, Client>) => Promise<Record<string, string>>;
  /** Give every allowed caller a new fixture (for routes that change it for good). */
  fresh?: boolean;
  /** Expected outcome for specific roles that differ, e.g. `{ owner: '403 last_owner' }`. */
  expect?: Partial<Record<Role, string>>;
};
