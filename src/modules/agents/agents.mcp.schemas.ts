import { z } from 'zod';

/** Request and response shapes of the workspace MCP servers API. */

const Id = z.string().min(1).max(64);
const HeaderName = z.string().regex(/^[A-Za-z0-9-]{1,100}$/, 'an HTTP header name');
const HeaderValue = z
  .string()
  .max(4096)
  .regex(/^[^\r\n\0]*$/, 'no line breaks')
  .describe('May reference workspace secrets as {{secret.NAME}}');
const Headers = z
  .record(HeaderName, HeaderValue)
  .refine((h) => Object.keys(h).length <= 50, 'at most 50 headers')
  .describe('Extra headers sent to the server; stored encrypted, only their names are returned');

export const McpServerName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'lower-case letters, digits, - and _, up to 63 characters')
  .describe('Unique in the workspace; agent definitions reference the server by it');

export const McpServersParams = z.strictObject({ workspaceId: Id });
export const McpServerParams = z.strictObject({ workspaceId: Id, serverId: Id });

export const AddMcpServerBody = z.strictObject({
  name: McpServerName,
  url: z
    .string()
    .min(8)
    .max(2048)
    .optional()
    .describe('The streamable HTTP endpoint, e.g. https://mcp.example.com/mcp'),
  headers: Headers.optional(),
  command: z
    .string()
    .min(1)
    .max(1024)
    .regex(/^[^\p{Cc}]*$/u, 'no control characters')
    .optional()
    .describe('stdio servers only (when the operator enabled them): the program to start'),
  args: z
    .array(
      z
        .string()
        .max(1024)
        .regex(/^[^\p{Cc}]*$/u, 'no control characters'),
    )
    .max(50)
    .optional(),
  enabled: z.boolean().optional(),
});
export type AddMcpServerInput = z.infer<typeof AddMcpServerBody>;

export const UpdateMcpServerBody = z.strictObject({
  url: z.string().min(8).max(2048).optional(),
  headers: Headers.nullable().optional().describe('Replaces every header; null removes them'),
  enabled: z.boolean().optional(),
});
export type UpdateMcpServerInput = z.infer<typeof UpdateMcpServerBody>;

export const McpServerView = z.object({
  id: z.string(),
  name: z.string(),
  transport: z.enum(['http', 'stdio']),
  url: z.string().nullable(),
  command: z.string().nullable(),
  args: z.array(z.string()),
  headerNames: z.array(z.string()),
  enabled: z.boolean(),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type McpServerView = z.infer<typeof McpServerView>;
export const McpServerList = z.object({ data: z.array(McpServerView) });

export const McpToolList = z.object({
  data: z.array(
    z.object({
      name: z.string().describe("The server's name for the tool (what an agent's `allow` lists)"),
      agentToolName: z.string().describe('The name the model sees: <server>__<tool>'),
      description: z.string(),
      inputSchema: z.record(z.string(), z.unknown()),
    }),
  ),
});
