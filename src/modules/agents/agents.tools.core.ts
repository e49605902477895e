import { createHash } from 'node:crypto';
import { Ajv, type ValidateFunction } from 'ajv';

/**
 * What every agent tool is, whatever its kind: a spec the model sees and an `execute` that
 * never throws. A failed call is a result (`ok: false`) with a stable code, so the run
 * engine hands it back to the model as the tool's answer instead of crashing the run.
 */

/** A JSON Schema object describing a tool's arguments. */
export type JsonSchema = Record<string, unknown>;

export type ToolSpec = {
  name: string;
  description: string;
  parameters: JsonSchema;
  requiresApproval: boolean;
};

/** The closed list of codes a failed tool call answers with. */
export type ToolErrorCode =
  | 'invalid_arguments'
  | 'timeout'
  | 'aborted'
  | 'response_too_large'
  | 'upstream_error'
  | 'egress_denied'
  | 'host_not_allowed'
  | 'secret_not_found'
  | 'secret_host_not_allowed'
  | 'knowledge_unavailable'
  // knowledge_search: a knowledge base not attached to the agent or not in the workspace; one
  // whose documents are all still being processed
  | 'knowledge_base_not_found'
  | 'knowledge_base_processing'
  | 'invalid_expression'
  | 'division_by_zero'
  | 'math_error'
  | 'mcp_error'
  | 'mcp_server_not_found'
  | 'mcp_server_disabled'
  | 'mcp_stdio_disabled'
  | 'mcp_unavailable'
  | 'secret_placement_not_allowed'
  // OAuth connections ({{connection.NAME}}): none usable for the run's user (none, revoked,
  // broken, renewal failing); a host its provider's API hosts do not list; a URL, body or
  // plain http connection where the token may not go
  | 'connection_unavailable'
  | 'connection_host_not_allowed'
  | 'connection_placement_not_allowed'
  | 'tool_error'
  | 'tool_failed'
  // Answered by the run engine, not by a tool: no tool of that name; a person denied the call.
  | 'unknown_tool'
  | 'denied';

export type ToolError = { code: ToolErrorCode; message: string };

export type ToolResult = { ok: true; content: string } | { ok: false; error: ToolError };

export type ToolContext = { workspaceId: string; userId: string; runId: string; signal: AbortSignal };

export type Tool = ToolSpec & {
  execute(args: unknown, ctx: ToolContext): Promise<ToolResult>;
  /** The most content (UTF-8 bytes) one result hands the model; absent: the service's `maxResultBytes`. */
  maxResultBytes?: number;
};

export const ok = (content: string): ToolResult => ({ ok: true, content });
export const fail = (code: ToolErrorCode, message: string): ToolResult => ({ ok: false, error: { code, message } });

/** Thrown inside a tool's implementation to end the call with a given result code. */
export class ToolFailure extends Error {
  constructor(
    readonly code: ToolErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ToolFailure';
  }
}

/** Limits that bound every outbound tool call and what a call hands back to the model. */
export type ToolLimits = {
  /** Built-in `http_request` and MCP calls (custom HTTP tools carry their own). */
  timeoutMs: number;
  maxResponseBytes: number;
  /** Listing an MCP server's tools when a run starts; a server slower than this is unavailable for the run. */
  mcpListTimeoutMs: number;
  /** The content of one result the model gets (longer content is cut, with a marker); tools may set their own. */
  maxResultBytes: number;
};

export const DEFAULT_TOOL_LIMITS: ToolLimits = {
  timeoutMs: 30_000,
  maxResponseBytes: 1_000_000,
  mcpListTimeoutMs: 10_000,
  maxResultBytes: 100_000,
};

/**
 * Cuts `content` to at most `maxBytes` UTF-8 bytes (never inside a character) and says so
 * at the end, so the model knows it did not see everything.
 */
export function capContent(content: string, maxBytes: number): string {
  const size = Buffer.byteLength(content, 'utf8');
  if (size <= maxBytes) return content;
  let cut = Buffer.from(content, 'utf8').subarray(0, maxBytes).toString('utf8');
  if (cut.endsWith('\uFFFD')) cut = cut.slice(0, -1);
  return `${cut}\n[truncated: the result was ${size} bytes; only the first ${maxBytes} are shown]`;
}

/** How deep and how large a parameters schema may be (deeper ones would exhaust the validator's stack). */
export const SCHEMA_LIMITS = { maxDepth: 32, maxBytes: 64 * 1024 } as const;

/** Why `schema` is past the depth or size limit, or null. Iterative: a deep schema cannot overflow the stack here. */
export function schemaSizeProblem(schema: unknown): string | null {
  const stack: Array<{ node: unknown; depth: number }> = [{ node: schema, depth: 1 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop() as { node: unknown; depth: number };
    if (!node || typeof node !== 'object') continue;
    if (depth > SCHEMA_LIMITS.maxDepth) return `nested deeper than ${SCHEMA_LIMITS.maxDepth} levels`;
    for (const child of Object.values(node)) stack.push({ node: child, depth: depth + 1 });
  }
  if (Buffer.byteLength(JSON.stringify(schema), 'utf8') > SCHEMA_LIMITS.maxBytes) {
    return `larger than ${SCHEMA_LIMITS.maxBytes} bytes`;
  }
  return null;
}

// Compiled parameters, keyed by a hash of the schema's JSON: resolving the same tools again
// compiles nothing, and the map never holds more than CACHE_MAX validators.
const CACHE_MAX = 256;
const compiled = new Map<string, ValidateFunction>();

// The compiler. Each schema is removed from it right after compiling (the validator keeps
// working), so a `$id` is never registered twice; ids of nested schemas still leave a small
// entry behind, so the compiler is replaced after RECYCLE_AFTER compiles.
const RECYCLE_AFTER = 1000;
const newAjv = () =>
  new Ajv({ strict: false, allErrors: false, validateSchema: true, validateFormats: false, logger: false });
let ajv = newAjv();
let compiles = 0;

/** The validator of `schema`, checked against JSON Schema first. Throws with the reason when unusable. */
function compileFresh(schema: JsonSchema): ValidateFunction {
  if (++compiles > RECYCLE_AFTER) {
    ajv = newAjv();
    compiles = 1;
  }
  const compiler = ajv;
  try {
    if (!compiler.validateSchema(schema)) {
      const first = compiler.errors?.[0];
      throw new Error(
        `not a valid JSON Schema: ${first ? `${first.instancePath || '/'} ${first.message ?? 'is invalid'}` : 'invalid'}`,
      );
    }
    try {
      return compiler.compile(schema);
    } catch (err) {
      throw new Error(
        `not a usable JSON Schema: ${err instanceof Error ? err.message.slice(0, 200) : 'it does not compile'}`,
      );
    }
  } finally {
    compiler.removeSchema(schema);
  }
}

/**
 * Compiles a tool's parameters schema; throws with the reason when it is too deep or large,
 * not valid JSON Schema, or does not compile. Never registers anything that outlives the call
 * beyond a bounded cache.
 */
export function compileParameters(schema: JsonSchema): ValidateFunction {
  const size = schemaSizeProblem(schema);
  if (size) throw new Error(`the schema is ${size}`);
  const key = createHash('sha256').update(JSON.stringify(schema)).digest('base64url');
  const hit = compiled.get(key);
  if (hit) {
    compiled.delete(key);
    compiled.set(key, hit);
    return hit;
  }
  let validate: ValidateFunction;
  try {
    validate = compileFresh(schema);
  } catch (err) {
    // A validator's own failure (a RangeError, say) is a reason like any other.
    throw new Error(err instanceof Error ? err.message.slice(0, 300) : 'it does not compile');
  }
  compiled.set(key, validate);
  if (compiled.size > CACHE_MAX) compiled.delete(compiled.keys().next().value as string);
  return validate;
}

/** What the compiler holds (for tests of its bounds): cached validators and schemas registered with ajv. */
export function compilerFootprint(): { cached: number; registered: number } {
  const inner = ajv as unknown as { _cache: Map<unknown, unknown>; schemas: object; refs: object };
  return {
    cached: compiled.size,
    registered: inner._cache.size + Object.keys(inner.schemas).length + Object.keys(inner.refs).length,
  };
}

/** The reason a JSON Schema is not valid, or null when it compiles. */
export function parametersProblem(schema: JsonSchema): string | null {
  try {
    compileParameters(schema);
    return null;
  } catch (err) {
    return (err as Error).message.slice(0, 300);
  }
}

/**
 * Builds a tool whose arguments are checked against `parameters` before `run` sees them and
 * whose failures, expected (ToolFailure) or not, come back as results. Unexpected errors
 * answer `tool_failed` without their message: it may quote a secret or an upstream body.
 */
export function defineTool(
  spec: ToolSpec,
  run: (args: Record<string, unknown>, ctx: ToolContext) => Promise<ToolResult>,
  validate: ValidateFunction | null = compileParameters(spec.parameters),
): Tool {
  return {
    ...spec,
    async execute(args, ctx) {
      const input = args ?? {};
      if (typeof input !== 'object' || Array.isArray(input)) {
        return fail('invalid_arguments', 'The arguments must be a JSON object.');
      }
      if (validate && !validate(input)) {
        const first = validate.errors?.[0];
        const where = first?.instancePath ? `${first.instancePath} ` : '';
        return fail('invalid_arguments', `Invalid arguments: ${where}${first?.message ?? 'do not match the schema'}.`);
      }
      if (ctx.signal.aborted) return fail('aborted', 'The call was cancelled.');
      try {
        return await run(input as Record<string, unknown>, ctx);
      } catch (err) {
        if (err instanceof ToolFailure) return fail(err.code, err.message);
        return fail('tool_failed', 'The tool failed.');
      }
    },
  };
}

/** True when `host` is one of `patterns` (`*.domain` matches its sub-domains, not the domain itself). */
export function hostAllowed(host: string, patterns: readonly string[]): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return patterns.some((p) => (p.startsWith('*.') ? h.endsWith(p.slice(1)) && h.length > p.length - 1 : h === p));
}
