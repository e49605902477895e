import type { Readable } from 'node:stream';
import { type Dispatcher, request } from 'undici';
import { EgressDenied, type EgressGuard } from '../../platform/http/egress.ts';
import { readLimited } from '../../platform/http/limited-body.ts';
import { defineTool, fail, hostAllowed, ok, type Tool, ToolFailure } from './agents.tools.core.ts';
import type { ToolDef } from './agents.tools.schemas.ts';

type HttpToolDef = Extract<ToolDef, { type: 'http' }>;

/**
 * Custom HTTP tools and the bounded HTTP client every HTTP-speaking tool uses: the SSRF
 * guard (resolved addresses checked at connect time), no redirects, a time limit and a
 * response size limit at which reading stops.
 */

export type HttpTransport = {
  egress: EgressGuard;
  /** An undici dispatcher whose sockets resolve names through `egress.lookup`. */
  dispatcher: Dispatcher;
};

export type LimitedRequest = {
  method: string;
  url: URL;
  headers: Record<string, string>;
  body: string | null;
  timeoutMs: number;
  maxBytes: number;
  signal: AbortSignal;
};

export type LimitedResponse = { status: number; contentType: string; body: string };

/**
 * True when the error, or one it was caused by, is the egress guard refusing an address
 * (undici and the MCP SDK wrap it a few levels deep).
 */
export function isEgressRefusal(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 6; depth++) {
    if (e instanceof EgressDenied || (e as { code?: unknown }).code === 'EGRESS_DENIED') return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * One HTTP exchange within the limits. Throws ToolFailure: `egress_denied` (scheme, literal
 * or resolved private address), `timeout`, `aborted`, `response_too_large` (reading stops
 * at the limit and the connection is dropped) or `upstream_error` (no answer). The error of
 * a failed connection is never quoted: it may carry bytes that were sent.
 */
export async function sendLimited(transport: HttpTransport, req: LimitedRequest): Promise<LimitedResponse> {
  try {
    transport.egress.assertUrl(req.url);
  } catch (err) {
    if (err instanceof EgressDenied) throw new ToolFailure('egress_denied', err.message);
    throw err;
  }
  const timer = new AbortController();
  const timeout = setTimeout(() => timer.abort(), req.timeoutMs);
  const signal = AbortSignal.any([req.signal, timer.signal]);
  let body: Readable | null = null;
  try {
    const res = await request(req.url, {
      dispatcher: transport.dispatcher,
      method: req.method as Dispatcher.HttpMethod,
      headers: req.headers,
      body: req.body,
      signal,
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    body = res.body;
    const raw = await readLimited(res.body, req.maxBytes);
    if (raw === null) {
      throw new ToolFailure('response_too_large', `The response is larger than ${req.maxBytes} bytes.`);
    }
    const type = res.headers['content-type'];
    return {
      status: res.statusCode,
      contentType: (Array.isArray(type) ? type[0] : type) ?? '',
      body: raw.toString('utf8'),
    };
  } catch (err) {
    if (err instanceof ToolFailure) throw err;
    if (timer.signal.aborted) throw new ToolFailure('timeout', `No complete answer within ${req.timeoutMs} ms.`);
    if (req.signal.aborted) throw new ToolFailure('aborted', 'The call was cancelled.');
    if (isEgressRefusal(err)) {
      throw new ToolFailure('egress_denied', `Outbound connections to ${req.url.hostname} are not allowed.`);
    }
    throw new ToolFailure('upstream_error', `${req.url.hostname} could not be reached.`);
  } finally {
    clearTimeout(timeout);
    if (body && !body.destroyed) body.destroy();
  }
}

// --- templates ---------------------------------------------------------------------------

const TEMPLATE = /\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}/g;
const WHOLE_TEMPLATE = /^\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}$/;
const SECRET_PREFIX = 'secret.';
const CONNECTION_PREFIX = 'connection.';

/** Where a workspace secret may go: the only hosts, and the only request headers (lower case). */
export type SecretPlacement = { allowedHosts: string[]; allowedHeaders: string[] };
/** A workspace secret as tools use it: the value, and where it may go. */
export type ToolSecret = SecretPlacement & { value: string };
export type SecretSource = (workspaceId: string, names: string[]) => Promise<Map<string, ToolSecret>>;

/** An OAuth connection's access token as tools use it: the value, and the only hosts (its provider's API) it may go to. */
export type ConnectionToken = { value: string; apiHosts: string[] };
/**
 * The token of the connection `name` for a run acting as `userId` (their own, or one shared
 * with the workspace), renewed when needed. Throws ToolFailure `connection_unavailable`.
 */
export type ConnectionSource = (workspaceId: string, userId: string, name: string) => Promise<ConnectionToken>;

/** The names `{{<prefix>NAME}}` references in any string of `value`. */
function templateRefs(value: unknown, prefix: string, into: Set<string>): Set<string> {
  if (typeof value === 'string') {
    for (const m of value.matchAll(TEMPLATE)) {
      const ref = m[1] ?? '';
      if (ref.startsWith(prefix)) into.add(ref.slice(prefix.length));
    }
  } else if (Array.isArray(value)) {
    for (const v of value) templateRefs(v, prefix, into);
  } else if (value && typeof value === 'object') {
    for (const v of Object.values(value)) templateRefs(v, prefix, into);
  }
  return into;
}

/** The names of the secrets `{{secret.NAME}}` references in any string of `value`. */
export function secretRefs(value: unknown, into = new Set<string>()): Set<string> {
  return templateRefs(value, SECRET_PREFIX, into);
}

/** The names of the OAuth connections `{{connection.NAME}}` references in any string of `value`. */
export function connectionRefs(value: unknown, into = new Set<string>()): Set<string> {
  return templateRefs(value, CONNECTION_PREFIX, into);
}

/** Fills templates from the arguments, secrets and connection tokens; records which secrets were used. */
function filler(
  args: Record<string, unknown>,
  secrets: Map<string, ToolSecret>,
  used: Set<string>,
  tokens: Map<string, ConnectionToken> = new Map(),
) {
  const lookup = (ref: string): unknown => {
    if (ref.startsWith(SECRET_PREFIX)) {
      const name = ref.slice(SECRET_PREFIX.length);
      const secret = secrets.get(name);
      if (!secret) throw new ToolFailure('secret_not_found', `The workspace has no secret named ${name}.`);
      used.add(name);
      return secret.value;
    }
    if (ref.startsWith(CONNECTION_PREFIX)) {
      // Only headers are filled with tokens (they are fetched for headers alone): anywhere else
      // the reference was refused before this.
      const name = ref.slice(CONNECTION_PREFIX.length);
      const token = tokens.get(name);
      if (!token)
        throw new ToolFailure('connection_placement_not_allowed', `The connection ${name} may not be used here.`);
      return token.value;
    }
    let v: unknown = args;
    for (const part of ref.split('.')) {
      v = v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)[part] : undefined;
    }
    return v;
  };
  const text = (v: unknown) => (v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v));
  return {
    /** A URL: every value URL-encoded, so an argument cannot add a path, a query or a host part. */
    url: (template: string) => template.replace(TEMPLATE, (_m, ref: string) => encodeURIComponent(text(lookup(ref)))),
    /** A header value: as text, on one line. */
    header: (template: string) => {
      const v = template.replace(TEMPLATE, (_m, ref: string) => text(lookup(ref)));
      if (/[\r\n\0]/.test(v)) throw new ToolFailure('invalid_arguments', 'A header value may not contain line breaks.');
      return v;
    },
    /** A JSON body template: `"{{x}}"` alone becomes x's JSON value, templates inside text become text. */
    body: (template: unknown): unknown => {
      const walk = (node: unknown): unknown => {
        if (typeof node === 'string') {
          const whole = WHOLE_TEMPLATE.exec(node);
          if (whole) return lookup(whole[1] ?? '') ?? null;
          return node.replace(TEMPLATE, (_m, ref: string) => text(lookup(ref)));
        }
        if (Array.isArray(node)) return node.map(walk);
        if (node && typeof node === 'object') {
          return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, walk(v)]));
        }
        return node;
      };
      return walk(template);
    },
  };
}

/** Removes every secret value or token (and its URL-encoded form) from text returned to the model. */
export function redactSecrets(text: string, secrets: Iterable<{ value: string }>): string {
  let out = text;
  for (const { value } of secrets) {
    if (value.length === 0) continue;
    for (const form of new Set([value, encodeURIComponent(value)])) out = out.split(form).join('[secret]');
  }
  return out;
}

/** Every secret used must allow the host the request goes to. */
export function assertSecretsAllowed(host: string, used: Iterable<string>, secrets: Map<string, ToolSecret>) {
  for (const name of used) {
    const secret = secrets.get(name);
    if (secret && !hostAllowed(host, secret.allowedHosts)) {
      throw new ToolFailure('secret_host_not_allowed', `The secret ${name} may not be sent to ${host}.`);
    }
  }
}

/**
 * Every secret a header uses must be declared for that header; a secret goes only over
 * https, or plain http to a host the operator allow-listed (`plainHttpAllowed`).
 */
export function assertSecretHeaders(
  url: URL,
  headerRefs: Iterable<[header: string, names: Iterable<string>]>,
  secrets: Map<string, SecretPlacement>,
  plainHttpAllowed: (host: string) => boolean,
) {
  for (const [header, names] of headerRefs) {
    for (const name of names) {
      const secret = secrets.get(name);
      if (!secret) continue;
      if (!secret.allowedHeaders.includes(header.toLowerCase())) {
        throw new ToolFailure(
          'secret_placement_not_allowed',
          `The secret ${name} may not be sent in the header ${header} (it is declared for ${secret.allowedHeaders.join(', ')}).`,
        );
      }
      if (url.protocol !== 'https:' && !plainHttpAllowed(url.hostname)) {
        throw new ToolFailure('secret_placement_not_allowed', `The secret ${name} is only sent over https.`);
      }
    }
  }
}

/** A connection's token goes over https only (plain http only to hosts the operator allow-listed, like secrets). */
export function assertConnectionScheme(url: URL, name: string, plainHttpAllowed: (host: string) => boolean) {
  if (url.protocol !== 'https:' && !plainHttpAllowed(url.hostname)) {
    throw new ToolFailure(
      'connection_placement_not_allowed',
      `The connection ${name}'s token is only sent over https.`,
    );
  }
}

/** A connection's token goes only to a host its provider's API hosts list (none listed: nowhere). */
export function assertConnectionHost(url: URL, name: string, token: Pick<ConnectionToken, 'apiHosts'>) {
  if (hostAllowed(url.hostname, token.apiHosts)) return;
  throw new ToolFailure(
    'connection_host_not_allowed',
    token.apiHosts.length === 0
      ? `The connection ${name}'s token may not be sent to ${url.hostname}: its OAuth provider declares no API hosts.`
      : `The connection ${name}'s token may not be sent to ${url.hostname}, only to its provider's API hosts (${token.apiHosts.join(', ').slice(0, 300)}).`,
  );
}

export type HttpToolDeps = {
  transport: HttpTransport;
  secrets: SecretSource;
  /** OAuth connections' tokens for `{{connection.NAME}}` (absent: none can be used). */
  connections?: ConnectionSource | undefined;
  /** Hosts a secret or token may reach over plain http (those in BERTH_EGRESS_ALLOW). */
  plainHttpAllowed: (host: string) => boolean;
};

/**
 * A custom HTTP tool: the definition's request with `{{arg}}`, `{{secret.NAME}}` and
 * `{{connection.NAME}}` filled in. A successful answer (2xx) is the tool's content, other
 * statuses answer `upstream_error`; secrets and tokens never appear in what the model gets
 * back. A connection's token is fetched for the run's user at each call, after the URL is
 * known to be one it may go to.
 */
export function httpTool(def: HttpToolDef, deps: HttpToolDeps): Tool {
  const tool = httpToolBase(def, deps);
  const cap = def.limits?.max_result_bytes;
  return cap === undefined ? tool : { ...tool, maxResultBytes: cap };
}

function httpToolBase(def: HttpToolDef, deps: HttpToolDeps): Tool {
  const names = [...secretRefs([def.request.url, def.request.headers ?? {}, def.request.body ?? null])];
  const connections = [...connectionRefs(def.request.headers ?? {})];
  // Secrets and tokens go in headers only: in a URL or a body a service could show them back.
  const misplaced = secretRefs([def.request.url, def.request.body ?? null]).size > 0;
  const misplacedConnection = connectionRefs([def.request.url, def.request.body ?? null]).size > 0;
  const headerRefs = Object.entries(def.request.headers ?? {}).map(
    ([k, v]) => [k.toLowerCase(), secretRefs(v)] as [string, Set<string>],
  );
  const timeoutMs = def.limits?.timeout_ms ?? 10_000;
  const maxBytes = def.limits?.max_response_bytes ?? 1_000_000;
  const method = def.request.method;
  return defineTool(
    {
      name: def.name,
      description: def.description,
      parameters: def.parameters,
      requiresApproval: def.requires_approval,
    },
    async (args, ctx) => {
      if (misplaced) {
        return fail(
          'secret_placement_not_allowed',
          'Secrets may only be sent in request headers, not the URL or body.',
        );
      }
      if (misplacedConnection) {
        return fail(
          'connection_placement_not_allowed',
          'Connection tokens may only be sent in request headers, not the URL or body.',
        );
      }
      const secrets = names.length > 0 ? await deps.secrets(ctx.workspaceId, names) : new Map<string, ToolSecret>();
      const used = new Set<string>();
      const tokens = new Map<string, ConnectionToken>();
      const fill = filler(args, secrets, used, tokens);
      let url: URL;
      try {
        url = new URL(fill.url(def.request.url));
      } catch (err) {
        if (err instanceof ToolFailure) throw err;
        return fail('invalid_arguments', 'The arguments do not make a valid URL.');
      }
      if (connections.length > 0) {
        // The scheme is checked before any token is fetched, the host as soon as the provider's hosts are known.
        for (const name of connections) assertConnectionScheme(url, name, deps.plainHttpAllowed);
        const source = deps.connections;
        if (!source) throw new ToolFailure('connection_unavailable', 'OAuth connections are not available here.');
        for (const name of connections) {
          const token = await source(ctx.workspaceId, ctx.userId, name);
          assertConnectionHost(url, name, token);
          tokens.set(name, token);
        }
      }
      const redact = (text: string) => redactSecrets(text, [...secrets.values(), ...tokens.values()]);
      try {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(def.request.headers ?? {})) headers[k.toLowerCase()] = fill.header(v);
        let body: string | null = null;
        if (def.request.body !== undefined) body = JSON.stringify(fill.body(def.request.body));
        else if (method === 'POST' || method === 'PUT' || method === 'PATCH') body = JSON.stringify(args);
        if (body !== null && !headers['content-type']) headers['content-type'] = 'application/json';
        assertSecretsAllowed(url.hostname, used, secrets);
        assertSecretHeaders(url, headerRefs, secrets, deps.plainHttpAllowed);
        const res = await sendLimited(deps.transport, {
          method,
          url,
          headers,
          body,
          timeoutMs,
          maxBytes,
          signal: ctx.signal,
        });
        if (res.status < 200 || res.status >= 300) {
          return fail('upstream_error', `${url.hostname} answered HTTP ${res.status}.`);
        }
        return ok(redact(res.body));
      } catch (err) {
        if (err instanceof ToolFailure) return fail(err.code, redact(err.message));
        throw err;
      }
    },
  );
}
