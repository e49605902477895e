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
  | 'invalid_expression'
  | 'division_by_zero'
  | 'math_error'
  | 'mcp_error'
  | 'mcp_server_not_found'
  | 'mcp_server_disabled'
  | 'mcp_stdio_disabled'
  | 'tool_error'
  | 'tool_failed';

export type ToolError = { code: ToolErrorCode; message: string };

export type ToolResult = { ok: true; content: string } | { ok: false; error: ToolError };

export type ToolContext = { workspaceId: string; userId: string; runId: string; signal: AbortSignal };

export type Tool = ToolSpec & { execute(args: unknown, ctx: ToolContext): Promise<ToolResult> };

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

/** Limits that bound every outbound tool call. */
export type ToolLimits = {
  /** Built-in `http_request` and MCP calls (custom HTTP tools carry their own). */
  timeoutMs: number;
  maxResponseBytes: number;
};

export const DEFAULT_TOOL_LIMITS: ToolLimits = { timeoutMs: 30_000, maxResponseBytes: 1_000_000 };

const ajv = new Ajv({ strict: false, allErrors: false, validateSchema: true });

/** Compiles a tool's parameters schema; throws with ajv's reason when it is not valid JSON Schema. */
export function compileParameters(schema: JsonSchema): ValidateFunction {
  return ajv.compile(schema);
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
