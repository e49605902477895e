/**
 * Feature names: what product analytics counts a request as. A name is derived from the
 * route the request matched (its pattern, never its URL), so it carries no id and no
 * content, and it stays the same for as long as the route does.
 *
 * - `/v1/...` is the gateway: `POST /v1/chat/completions` -> `gateway.chat`,
 *   `POST /v1/messages` -> `gateway.messages`, `GET /v1/models` -> `gateway.models.list`;
 * - `/api/workspaces/:workspaceId/...` drops the workspace part: `POST
 *   /api/workspaces/:workspaceId/keys` -> `keys.create`;
 * - path parameters are dropped, the static segments joined with dots (`-` becomes `_`);
 * - the method gives the verb: GET on an item (`.../:id`) `get`, on a collection that has
 *   items `list`, otherwise `get`; POST on a collection `create`, on an item `update`,
 *   elsewhere the path itself names the action (`auth.login`, `keys.revoke`); PUT `set`;
 *   PATCH `update`; DELETE `delete`.
 *
 * @example featureNames([{ method: 'POST', url: '/api/workspaces/:workspaceId/keys' }, ...]).get('POST /api/workspaces/:workspaceId/keys') // 'keys.create'
 */

export type RouteRef = { method: string; url: string };

/** The only routes counted: the control plane and the gateway. */
export function countedRoute(url: string): boolean {
  return url.startsWith('/api/') || url.startsWith('/v1/');
}

/** Names the gateway's endpoints the way people say them. */
const GATEWAY_ALIASES: Record<string, string> = { 'chat/completions': 'chat' };

const isParam = (segment: string) => segment.startsWith(':') || segment === '*';
const word = (segment: string) => segment.toLowerCase().replaceAll('-', '_');

export const FEATURE_PATTERN = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/;

/** `METHOD url`: the key of a route in the map `featureNames` returns. */
export const routeKey = (method: string, url: string) => `${method.toUpperCase()} ${url}`;

/**
 * The feature name of every counted route, keyed by `routeKey`. Needs the whole route
 * table: whether a POST creates or acts depends on whether its path is a collection.
 */
export function featureNames(routes: readonly RouteRef[]): Map<string, string> {
  const methodsOf = new Map<string, Set<string>>();
  /** Paths that have items (`<path>/:param` routes). */
  const collections = new Set<string>();
  for (const r of routes) {
    const method = r.method.toUpperCase();
    if (!methodsOf.has(r.url)) methodsOf.set(r.url, new Set());
    methodsOf.get(r.url)?.add(method);
    const slash = r.url.lastIndexOf('/');
    if (slash > 0 && isParam(r.url.slice(slash + 1))) collections.add(r.url.slice(0, slash));
  }
  const out = new Map<string, string>();
  for (const r of routes) {
    const method = r.method.toUpperCase();
    if (method === 'HEAD' || method === 'OPTIONS' || !countedRoute(r.url)) continue;
    const name = nameOf(method, r.url, collections.has(r.url), methodsOf.get(r.url)?.has('GET') ?? false);
    if (name) out.set(routeKey(method, r.url), name);
  }
  return out;
}

function nameOf(method: string, url: string, hasItems: boolean, hasGet: boolean): string | null {
  const gateway = url.startsWith('/v1/');
  let rest = url.slice(gateway ? '/v1/'.length : '/api/'.length);
  if (gateway) {
    for (const [path, alias] of Object.entries(GATEWAY_ALIASES)) {
      if (rest === path || rest.startsWith(`${path}/`)) rest = alias + rest.slice(path.length);
    }
  }
  let raw = rest.split('/').filter(Boolean);
  // A workspace's own resources are named by what they are, not by the workspace they sit in.
  let inWorkspace = false;
  if (!gateway && raw[0] === 'workspaces' && raw[1] !== undefined && isParam(raw[1]) && raw.length > 2) {
    raw = raw.slice(2);
    inWorkspace = true;
  }
  const statics = raw.filter((s) => !isParam(s)).map(word);
  const prefix = gateway ? ['gateway'] : [];
  const lastIsParam = raw.length > 0 && isParam(raw[raw.length - 1] as string);
  let verb: string | null;
  switch (method) {
    case 'GET':
      verb = lastIsParam ? 'get' : hasItems ? 'list' : 'get';
      break;
    case 'POST':
      verb = lastIsParam ? 'update' : hasGet || hasItems ? 'create' : null;
      break;
    case 'PUT':
      verb = 'set';
      break;
    case 'PATCH':
      verb = 'update';
      break;
    case 'DELETE':
      verb = 'delete';
      break;
    default:
      return null;
  }
  const parts = [...prefix, ...statics];
  // An action with nothing before it acts on the workspace itself (`workspaces.leave`).
  if (verb === null && inWorkspace && statics.length === 1) parts.unshift('workspaces');
  if (verb !== null) parts.push(verb);
  const name = parts.join('.');
  return FEATURE_PATTERN.test(name) ? name : null;
}
