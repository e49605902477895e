import type { Clock } from '../../platform/clock.ts';
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
 * parser, never eval) and `knowledge_search` (the slot for knowledge bases: it answers
 * `knowledge_unavailable` until they exist).
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

/** The slot knowledge bases fill: until they exist, every search answers `knowledge_unavailable`. */
function knowledgeSearchTool(def: BuiltinToolDef): Tool {
  return defineTool(
    {
      name: 'knowledge_search',
      description: "Searches the agent's knowledge bases.",
      parameters: {
        type: 'object',
        properties: { query: { type: 'string', minLength: 1, maxLength: 2000 } },
        required: ['query'],
        additionalProperties: false,
      },
      requiresApproval: def.requires_approval,
    },
    async () => fail('knowledge_unavailable', 'Knowledge bases are not available on this Berth yet.'),
  );
}

export type BuiltinDeps = { clock: Clock; transport: HttpTransport; limits: ToolLimits };

export function builtinTool(def: BuiltinToolDef, deps: BuiltinDeps): Tool {
  switch (def.name) {
    case 'calculator':
      return calculatorTool(def);
    case 'current_time':
      return currentTimeTool(def, deps.clock);
    case 'http_request':
      return httpRequestTool(def, deps.transport, deps.limits);
    case 'knowledge_search':
      return knowledgeSearchTool(def);
  }
}
