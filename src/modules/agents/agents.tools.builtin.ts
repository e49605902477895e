import type { Clock } from '../../platform/clock.ts';
import { AppError } from '../../platform/errors.ts';
import {
  defineTool,
  fail,
  hostAllowed,
  ok,
  type Tool,
  ToolFailure,
  type ToolLimits,
  type ToolResult,
} from './agents.tools.core.ts';
import { type HttpTransport, sendLimited } from './agents.tools.http.ts';
import type { ToolDef } from './agents.tools.schemas.ts';

type BuiltinToolDef = Extract<ToolDef, { type: 'builtin' }>;

/**
 * The built-in tools: `http_request` (only to the definition's allowed hosts, through the
 * SSRF guard), `current_time` (from the injected clock), `calculator` (a small arithmetic
 * parser, never eval) and `knowledge_search` (the agent's knowledge bases, through the
 * knowledge module's search, in the run's workspace only).
 */

// --- calculator --------------------------------------------------------------------------

const MAX_EXPRESSION = 1000;
const MAX_DEPTH = 64;

type Token = { kind: 'num'; value: number } | { kind: 'id'; value: string } | { kind: 'op'; value: string };

function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i] as string;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const num = /^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/.exec(src.slice(i));
    if (num) {
      tokens.push({ kind: 'num', value: Number(num[0]) });
      i += num[0].length;
      continue;
    }
    const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i));
    if (id) {
      tokens.push({ kind: 'id', value: id[0].toLowerCase() });
      i += id[0].length;
      continue;
    }
    if ('+-*/%^(),'.includes(c)) {
      tokens.push({ kind: 'op', value: c });
      i++;
      continue;
    }
    throw new ToolFailure('invalid_expression', `Unexpected character "${c}" at position ${i + 1}.`);
  }
  return tokens;
}

const CONSTANTS: Record<string, number> = { pi: Math.PI, e: Math.E };

const FUNCTIONS: Record<string, { min: number; max: number; fn: (...a: number[]) => number }> = {
  sqrt: { min: 1, max: 1, fn: Math.sqrt },
  abs: { min: 1, max: 1, fn: Math.abs },
  floor: { min: 1, max: 1, fn: Math.floor },
  ceil: { min: 1, max: 1, fn: Math.ceil },
  ln: { min: 1, max: 1, fn: Math.log },
  log10: { min: 1, max: 1, fn: Math.log10 },
  exp: { min: 1, max: 1, fn: Math.exp },
  /** round(x) to an integer, round(x, n) to n decimals (0 to 15). */
  round: {
    min: 1,
    max: 2,
    fn: (x, n = 0) => {
      if (!Number.isInteger(n) || n < 0 || n > 15) {
        throw new ToolFailure('invalid_expression', 'round(x, n) takes n from 0 to 15.');
      }
      const f = 10 ** n;
      return Math.round(x * f) / f;
    },
  },
  min: { min: 1, max: 100, fn: Math.min },
  max: { min: 1, max: 100, fn: Math.max },
};

/**
 * Evaluates an arithmetic expression: numbers, + - * / % ^ (right-associative, binding
 * tighter than unary minus: -2^2 is -4), parentheses, the constants pi and e, and the
 * functions sqrt, abs, floor, ceil, ln, log10, exp, round, min and max. Throws ToolFailure
 * `invalid_expression`, `division_by_zero` or `math_error` (a result that is not a finite number).
 */
export function evaluate(expression: string): number {
  if (expression.length > MAX_EXPRESSION) {
    throw new ToolFailure('invalid_expression', `The expression is longer than ${MAX_EXPRESSION} characters.`);
  }
  const tokens = tokenize(expression);
  let pos = 0;
  const peek = () => tokens[pos];
  const isOp = (v: string) => {
    const t = peek();
    return t?.kind === 'op' && t.value === v;
  };
  const expect = (v: string) => {
    if (!isOp(v)) throw new ToolFailure('invalid_expression', `Expected "${v}".`);
    pos++;
  };
  const finite = (v: number) => {
    if (!Number.isFinite(v)) throw new ToolFailure('math_error', 'The result is not a finite number.');
    return v;
  };

  const expr = (depth: number): number => {
    if (depth > MAX_DEPTH) throw new ToolFailure('invalid_expression', 'The expression is nested too deeply.');
    let left = term(depth);
    while (isOp('+') || isOp('-')) {
      const op = (tokens[pos++] as Token).value;
      const right = term(depth);
      left = finite(op === '+' ? left + right : left - right);
    }
    return left;
  };
  const term = (depth: number): number => {
    let left = unary(depth);
    while (isOp('*') || isOp('/') || isOp('%')) {
      const op = (tokens[pos++] as Token).value;
      const right = unary(depth);
      if (op !== '*' && right === 0) throw new ToolFailure('division_by_zero', 'Division by zero.');
      left = finite(op === '*' ? left * right : op === '/' ? left / right : left % right);
    }
    return left;
  };
  const unary = (depth: number): number => {
    if (depth > MAX_DEPTH) throw new ToolFailure('invalid_expression', 'The expression is nested too deeply.');
    if (isOp('-')) {
      pos++;
      return -unary(depth + 1);
    }
    if (isOp('+')) {
      pos++;
      return unary(depth + 1);
    }
    return power(depth);
  };
  const power = (depth: number): number => {
    const base = primary(depth);
    if (isOp('^')) {
      pos++;
      return finite(base ** unary(depth + 1));
    }
    return base;
  };
  const primary = (depth: number): number => {
    const t = peek();
    if (!t) throw new ToolFailure('invalid_expression', 'The expression ends too early.');
    if (t.kind === 'num') {
      pos++;
      return finite(t.value);
    }
    if (t.kind === 'op' && t.value === '(') {
      pos++;
      const v = expr(depth + 1);
      expect(')');
      return v;
    }
    if (t.kind === 'id') {
      pos++;
      const fn = FUNCTIONS[t.value];
      if (fn) {
        expect('(');
        const args: number[] = [];
        if (!isOp(')')) {
          args.push(expr(depth + 1));
          while (isOp(',')) {
            pos++;
            args.push(expr(depth + 1));
          }
        }
        expect(')');
        if (args.length < fn.min || args.length > fn.max) {
          throw new ToolFailure(
            'invalid_expression',
            `${t.value} takes ${fn.min === fn.max ? fn.min : `${fn.min} to ${fn.max}`} argument(s).`,
          );
        }
        return finite(fn.fn(...args));
      }
      const constant = CONSTANTS[t.value];
      if (constant !== undefined) return constant;
      throw new ToolFailure('invalid_expression', `Unknown name "${t.value}".`);
    }
    throw new ToolFailure('invalid_expression', `Unexpected "${t.value}".`);
  };

  if (tokens.length === 0) throw new ToolFailure('invalid_expression', 'The expression is empty.');
  const value = expr(0);
  if (pos < tokens.length) throw new ToolFailure('invalid_expression', `Unexpected "${(tokens[pos] as Token).value}".`);
  return value;
}

/** A number as text without binary noise: 0.1 + 0.2 gives 0.3. */
export function formatNumber(v: number): string {
  if (Object.is(v, -0)) return '0';
  return String(Number(v.toPrecision(15)));
}

function calculatorTool(def: BuiltinToolDef): Tool {
  return defineTool(
    {
      name: 'calculator',
      description:
        'Evaluates an arithmetic expression exactly as written: + - * / % ^, parentheses, unary minus, pi, e, and sqrt, abs, floor, ceil, ln, log10, exp, round(x[, decimals]), min, max.',
      parameters: {
        type: 'object',
        properties: { expression: { type: 'string', minLength: 1, maxLength: MAX_EXPRESSION } },
        required: ['expression'],
        additionalProperties: false,
      },
      requiresApproval: def.requires_approval,
    },
    async (args) => ok(formatNumber(evaluate(String(args.expression)))),
  );
}

// --- current_time ------------------------------------------------------------------------

/** The clock's time in a time zone: ISO UTC, local date and time, the zone's offset and weekday. */
export function timeIn(now: Date, timeZone: string): Record<string, string | number> {
  let parts: Intl.DateTimeFormatPart[];
  try {
    parts = new Intl.DateTimeFormat('en-US', {
      timeZone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      hourCycle: 'h23',
      weekday: 'long',
      timeZoneName: 'longOffset',
    }).formatToParts(now);
  } catch {
    throw new ToolFailure(
      'invalid_arguments',
      `Unknown time zone "${timeZone}" (use an IANA name such as Europe/Paris).`,
    );
  }
  const get = (type: Intl.DateTimeFormatPartTypes) => parts.find((p) => p.type === type)?.value ?? '';
  const offset = get('timeZoneName').replace(/^GMT/, '') || '+00:00';
  return {
    utc: now.toISOString(),
    timezone: timeZone,
    local: `${get('year')}-${get('month')}-${get('day')}T${get('hour')}:${get('minute')}:${get('second')}`,
    utc_offset: offset,
    weekday: get('weekday'),
    unix: Math.floor(now.getTime() / 1000),
  };
}

function currentTimeTool(def: BuiltinToolDef, clock: Clock): Tool {
  return defineTool(
    {
      name: 'current_time',
      description: 'The current date and time, in UTC or in an IANA time zone (e.g. Europe/Paris).',
      parameters: {
        type: 'object',
        properties: { timezone: { type: 'string', minLength: 1, maxLength: 64 } },
        additionalProperties: false,
      },
      requiresApproval: def.requires_approval,
    },
    async (args) => ok(JSON.stringify(timeIn(clock.now(), typeof args.timezone === 'string' ? args.timezone : 'UTC'))),
  );
}

// --- http_request ------------------------------------------------------------------------

/** Headers the model may not set: they belong to the connection, not the request. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te']);

function httpRequestTool(def: BuiltinToolDef, transport: HttpTransport, limits: ToolLimits): Tool {
  const allowed = def.allowed_hosts ?? [];
  return defineTool(
    {
      name: 'http_request',
      description: `Makes an HTTP request and returns the status and the response body. Allowed hosts: ${
        allowed.length > 0 ? allowed.join(', ') : 'none'
      }.`,
      parameters: {
        type: 'object',
        properties: {
          method: { type: 'string', enum: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'] },
          url: { type: 'string', minLength: 1, maxLength: 2048 },
          headers: { type: 'object', additionalProperties: { type: 'string', maxLength: 4096 } },
          body: { type: 'string', maxLength: 1_000_000 },
        },
        required: ['method', 'url'],
        additionalProperties: false,
      },
      requiresApproval: def.requires_approval,
    },
    async (args, ctx): Promise<ToolResult> => {
      let url: URL;
      try {
        url = new URL(String(args.url));
      } catch {
        return fail('invalid_arguments', 'The url is not a valid absolute URL.');
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        return fail('invalid_arguments', 'Only http and https URLs can be requested.');
      }
      if (url.username || url.password) return fail('invalid_arguments', 'The url may not carry credentials.');
      const host = url.hostname.replace(/^\[|\]$/g, '');
      if (!hostAllowed(host, allowed)) {
        return fail('host_not_allowed', `This agent may not call ${host}.`);
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries((args.headers ?? {}) as Record<string, string>)) {
        const name = k.toLowerCase();
        if (!/^[a-z0-9-]{1,100}$/.test(name) || RESERVED_HEADERS.has(name) || /[\r\n\0]/.test(v)) {
          return fail('invalid_arguments', `The header "${k.slice(0, 100)}" cannot be sent.`);
        }
        headers[name] = v;
      }
      const method = String(args.method);
      const body = typeof args.body === 'string' && method !== 'GET' && method !== 'HEAD' ? args.body : null;
      const res = await sendLimited(transport, {
        method,
        url,
        headers,
        body,
        timeoutMs: limits.timeoutMs,
        maxBytes: limits.maxResponseBytes,
        signal: ctx.signal,
      });
      if (res.status >= 400) return fail('upstream_error', `${host} answered HTTP ${res.status}.`);
      return ok(JSON.stringify({ status: res.status, content_type: res.contentType, body: res.body }));
    },
  );
}

// --- knowledge_search --------------------------------------------------------------------

/** One chunk the knowledge module's search found. */
export type KnowledgeHit = {
  documentId: string;
  title: string;
  chunkId: string;
  startOffset: number;
  endOffset: number;
  score: number;
  text: string;
};

/**
 * The knowledge module's search by knowledge base name (unique in a workspace without regard
 * to case), always in the given workspace. It throws AppError `not_found` (no such knowledge
 * base), `knowledge_base_processing` (none of its documents ready yet), `search_query_empty`
 * or `search_query_too_long`.
 */
export type KnowledgeSearch = {
  /** `run`: whose the search is; its query embedding and rerank are metered to the run's user and id. */
  search(
    workspaceId: string,
    kbName: string,
    query: string,
    topK: number,
    run: { userId: string; runId: string },
  ): Promise<{ data: KnowledgeHit[]; pendingDocuments: number }>;
};

/** A built-in tool def as a run resolves it: `knowledge_search` carries the agent's `knowledge_bases`. */
export type ResolvedBuiltinDef = BuiltinToolDef & { knowledge_bases?: readonly string[] };

const KNOWLEDGE_TOP_K = { min: 1, max: 20, default: 5 };

const stillProcessing = (kbName: string) =>
  fail('knowledge_base_processing', `The knowledge base ${kbName} has no processed document yet; search again later.`);

/** A knowledge module error as the tool's stable code; anything else is rethrown (`tool_failed`). */
function knowledgeFailure(err: unknown, kbName: string): ToolResult {
  const code = err instanceof AppError ? err.code : null;
  if (code === 'not_found') return fail('knowledge_base_not_found', `There is no knowledge base named ${kbName}.`);
  if (code === 'knowledge_base_processing') return stillProcessing(kbName);
  if (code === 'search_query_empty' || code === 'search_query_too_long') {
    return fail('invalid_arguments', err instanceof AppError ? err.message : 'The query is not valid.');
  }
  throw err;
}

/**
 * Searches the agent's knowledge bases (or the one named in `knowledge_base`, which must be one
 * of them) in the run's workspace, and answers the best chunks across them with their citations.
 * A knowledge base still processing is skipped while another one answers; when all of them are,
 * the call answers `knowledge_base_processing`.
 */
function knowledgeSearchTool(def: ResolvedBuiltinDef, knowledge: KnowledgeSearch | undefined): Tool {
  const attached = def.knowledge_bases ?? [];
  return defineTool(
    {
      name: 'knowledge_search',
      description: `Searches the agent's knowledge bases (${
        attached.length > 0 ? attached.join(', ') : 'none attached'
      }) and returns the best matching passages with their citations. Ask in plain words (passages with more of them rank higher), or use web-search syntax: "quoted phrase", or, -excluded.`,
      parameters: {
        type: 'object',
        properties: {
          query: { type: 'string', minLength: 1, maxLength: 2000 },
          top_k: { type: 'integer', minimum: KNOWLEDGE_TOP_K.min, maximum: KNOWLEDGE_TOP_K.max },
          knowledge_base: {
            type: 'string',
            minLength: 1,
            maxLength: 100,
            description: 'Search only this one of the knowledge bases (default: all of them).',
          },
        },
        required: ['query'],
        additionalProperties: false,
      },
      requiresApproval: def.requires_approval,
    },
    async (args, ctx): Promise<ToolResult> => {
      if (!knowledge) return fail('knowledge_unavailable', 'Knowledge bases are not available on this Berth.');
      const query = String(args.query);
      const topK = typeof args.top_k === 'number' ? args.top_k : KNOWLEDGE_TOP_K.default;
      let names: readonly string[] = attached;
      if (typeof args.knowledge_base === 'string') {
        const wanted = args.knowledge_base.toLowerCase();
        const name = attached.find((n) => n.toLowerCase() === wanted);
        if (!name) {
          return fail(
            'knowledge_base_not_found',
            `The knowledge base ${args.knowledge_base.slice(0, 100)} is not attached to this agent.`,
          );
        }
        names = [name];
      }
      if (names.length === 0) {
        return fail('knowledge_base_not_found', 'No knowledge base is attached to this agent.');
      }
      const results: Array<KnowledgeHit & { knowledgeBase: string }> = [];
      let pending = 0;
      let processing: string | null = null;
      let searched = 0;
      // Always the run's workspace: a name never reaches another workspace's knowledge bases.
      for (const name of names) {
        try {
          const r = await knowledge.search(ctx.workspaceId, name, query, topK, {
            userId: ctx.userId,
            runId: ctx.runId,
          });
          searched++;
          pending += r.pendingDocuments;
          for (const hit of r.data) results.push({ ...hit, knowledgeBase: name });
        } catch (err) {
          if (err instanceof AppError && err.code === 'knowledge_base_processing') {
            processing ??= name;
            continue;
          }
          return knowledgeFailure(err, name);
        }
      }
      if (searched === 0 && processing) return stillProcessing(processing);
      results.sort((a, b) => b.score - a.score);
      return ok(
        JSON.stringify({
          results: results.slice(0, topK).map((h) => ({
            knowledge_base: h.knowledgeBase,
            document_id: h.documentId,
            title: h.title,
            chunk_id: h.chunkId,
            start_offset: h.startOffset,
            end_offset: h.endOffset,
            score: h.score,
            text: h.text,
          })),
          pending_documents: pending,
        }),
      );
    },
  );
}

/**
 * A definition's tools as a run resolves them: `knowledge_search` carries the agent's
 * knowledge bases, and an agent with knowledge bases gets `knowledge_search` even when its
 * tools do not list it (not approved per call), unless one of its own tools has that name.
 *
 * @example
 * const defs = withKnowledgeSearch(def.tools, def.knowledge_bases); // + { type: 'builtin', name: 'knowledge_search', ... }
 */
export function withKnowledgeSearch(tools: readonly ToolDef[], knowledgeBases: readonly string[]): ToolDef[] {
  const out: ToolDef[] = tools.map((t): ToolDef | ResolvedBuiltinDef =>
    t.type === 'builtin' && t.name === 'knowledge_search' ? { ...t, knowledge_bases: [...knowledgeBases] } : t,
  );
  if (knowledgeBases.length === 0) return out;
  const named = tools.some((t) => (t.type === 'builtin' || t.type === 'http') && t.name === 'knowledge_search');
  if (!named) {
    const auto: ResolvedBuiltinDef = {
      type: 'builtin',
      name: 'knowledge_search',
      requires_approval: false,
      knowledge_bases: [...knowledgeBases],
    };
    out.push(auto);
  }
  return out;
}

export type BuiltinDeps = {
  clock: Clock;
  transport: HttpTransport;
  limits: ToolLimits;
  /** `knowledge_search`'s search (absent: it answers `knowledge_unavailable`). */
  knowledge?: KnowledgeSearch | undefined;
};

export function builtinTool(def: ResolvedBuiltinDef, deps: BuiltinDeps): Tool {
  switch (def.name) {
    case 'calculator':
      return calculatorTool(def);
    case 'current_time':
      return currentTimeTool(def, deps.clock);
    case 'http_request':
      return httpRequestTool(def, deps.transport, deps.limits);
    case 'knowledge_search':
      return knowledgeSearchTool(def, deps.knowledge);
  }
}
