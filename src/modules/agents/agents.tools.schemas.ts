import { z } from 'zod';

/**
 * How an agent definition names its tools: the shape shared by agent definitions (stored
 * in each version, exported and imported) and the tools that run them. Secrets never
 * appear here: a custom HTTP tool refers to a workspace secret by name
 * (`{{secret.NAME}}` in its templates), an MCP tool to a workspace MCP server by name.
 */

/** A tool's name as the model sees it (OpenAI's function name rule). */
export const ToolName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'letters, digits, _ and -, up to 64');

/** A JSON Schema object describing a tool's arguments (checked to be valid JSON Schema when saved). */
export const JsonSchemaObject = z.record(z.string(), z.unknown());

const approval = { requires_approval: z.boolean().default(false) };

/** A host name or `*.domain`, as an agent's `http_request` may reach it. */
const AllowedHost = z
  .string()
  .min(1)
  .max(253)
  .regex(/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/, 'a lower-case host or *.domain');

export const BuiltinToolDef = z.strictObject({
  type: z.literal('builtin'),
  name: z.enum(['http_request', 'current_time', 'calculator', 'knowledge_search']),
  /** `http_request` only: the hosts it may call (none: it can call nothing). */
  allowed_hosts: z.array(AllowedHost).max(100).optional(),
  ...approval,
});

export const HttpToolDef = z.strictObject({
  type: z.literal('http'),
  name: ToolName,
  description: z.string().max(1024),
  parameters: JsonSchemaObject,
  request: z.strictObject({
    method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
    /** `{{arg}}` fills an argument (URL-encoded in the URL); `{{secret.NAME}}` a workspace secret. */
    url: z.string().min(1).max(2048),
    headers: z.record(z.string().regex(/^[A-Za-z0-9-]{1,100}$/), z.string().max(4096)).optional(),
    /** A JSON body template; absent: the arguments themselves (POST/PUT/PATCH). */
    body: z.unknown().optional(),
  }),
  limits: z
    .strictObject({
      timeout_ms: z.number().int().min(100).max(120_000).default(10_000),
      max_response_bytes: z.number().int().min(1).max(10_000_000).default(1_000_000),
      /** What one result hands the model, cut with a marker past it (absent: 100 KB). */
      max_result_bytes: z.number().int().min(1_000).max(1_000_000).optional(),
    })
    .optional(),
  ...approval,
});

export const McpToolDef = z.strictObject({
  type: z.literal('mcp'),
  /** The workspace MCP server's name. */
  server: z.string().min(1).max(64),
  /** The server's tools this agent may call (absent: all of them). */
  allow: z.array(z.string().min(1).max(128)).max(256).optional(),
  ...approval,
});

export const ToolDef = z.discriminatedUnion('type', [BuiltinToolDef, HttpToolDef, McpToolDef]);
export type ToolDef = z.infer<typeof ToolDef>;
export type ToolDefInput = z.input<typeof ToolDef>;
