import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { getDefaultEnvironment, StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { FetchLike, Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import type { ValidateFunction } from 'ajv';
import { fetch as undiciFetch } from 'undici';
import {
  compileParameters,
  defineTool,
  fail,
  type JsonSchema,
  ok,
  type Tool,
  ToolFailure,
} from './agents.tools.core.ts';
import { type HttpTransport, isEgressRefusal, redactSecrets, type ToolSecret } from './agents.tools.http.ts';
import type { ToolDef } from './agents.tools.schemas.ts';

type McpToolDef = Extract<ToolDef, { type: 'mcp' }>;

/**
 * Model Context Protocol servers as tool sources, through the official SDK's client: the
 * streamable HTTP transport (every request through the SSRF guard, no redirects off the
 * origin, each response read up to the size limit) or, only where the operator enabled it,
 * stdio. A session lasts one operation (list or call) and every operation has a time limit.
 */

/** How to reach one server, with its headers' secrets filled in (memory only). */
export type McpTarget =
  | { transport: 'http'; url: string; headers: Record<string, string>; secrets: ToolSecret[] }
  | { transport: 'stdio'; command: string; args: string[] };

export type McpLimits = { timeoutMs: number; maxBytes: number };

export type McpDeps = { http: HttpTransport; stdioAllowed: boolean };

export type McpToolInfo = { name: string; description: string; inputSchema: JsonSchema };

const CLIENT_INFO = { name: 'berth', version: '1' };
const MAX_TOOLS = 1000;
const MAX_PAGES = 20;

type SessionState = { tooLarge: boolean; stop: AbortController };

/** fetch for the SDK: the egress guard's dispatcher, and every body cut off at `maxBytes`. */
function guardedFetch(http: HttpTransport, maxBytes: number, state: SessionState): FetchLike {
  return async (url, init) => {
    const target = new URL(String(url));
    http.egress.assertUrl(target);
    const res = await undiciFetch(target, {
      ...(init as object),
      dispatcher: http.dispatcher,
    } as Parameters<typeof undiciFetch>[1]);
    if (!res.body) return res as unknown as Response;
    let seen = 0;
    const limited = (res.body as unknown as ReadableStream<Uint8Array>).pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          seen += chunk.byteLength;
          if (seen > maxBytes) {
            state.tooLarge = true;
            controller.error(new ToolFailure('response_too_large', `The MCP server sent more than ${maxBytes} bytes.`));
            state.stop.abort();
            return;
          }
          controller.enqueue(chunk);
        },
      }),
    );
    return new Response(limited, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers as unknown as HeadersInit,
    });
  };
}

function transportFor(target: McpTarget, deps: McpDeps, limits: McpLimits, state: SessionState): Transport {
  if (target.transport === 'stdio') {
    if (!deps.stdioAllowed) {
      throw new ToolFailure('mcp_stdio_disabled', 'MCP servers over stdio are not enabled on this Berth.');
    }
    return new StdioClientTransport({
      command: target.command,
      args: target.args,
      env: getDefaultEnvironment(),
      stderr: 'ignore',
      maxBufferSize: limits.maxBytes,
    });
  }
  const url = new URL(target.url);
  return new StreamableHTTPClientTransport(url, {
    fetch: guardedFetch(deps.http, limits.maxBytes, state),
    requestInit: { headers: target.headers },
    reconnectionOptions: {
      maxRetries: 0,
      initialReconnectionDelay: 1000,
      maxReconnectionDelay: 1000,
      reconnectionDelayGrowFactor: 1,
    },
  });
}

function classify(err: unknown, state: SessionState, timedOut: boolean, outer: AbortSignal, target: McpTarget) {
  if (err instanceof ToolFailure) return err;
  if (state.tooLarge) return new ToolFailure('response_too_large', 'The MCP server sent more than the size limit.');
  if (timedOut || (err instanceof McpError && err.code === ErrorCode.RequestTimeout)) {
    return new ToolFailure('timeout', 'The MCP server did not answer in time.');
  }
  if (outer.aborted) return new ToolFailure('aborted', 'The call was cancelled.');
  if (isEgressRefusal(err))
    return new ToolFailure('egress_denied', 'Outbound connections to the MCP server are not allowed.');
  if (err instanceof McpError && err.code !== ErrorCode.ConnectionClosed) {
    const secrets = target.transport === 'http' ? target.secrets : [];
    return new ToolFailure(
      'mcp_error',
      redactSecrets(`The MCP server answered: ${err.message}`.slice(0, 500), secrets),
    );
  }
  return new ToolFailure('mcp_error', 'The MCP server could not be reached.');
}

/** Opens a session, runs `fn` within the time limit, closes it. Failures throw ToolFailure. */
async function withSession<T>(
  target: McpTarget,
  deps: McpDeps,
  limits: McpLimits,
  outer: AbortSignal,
  fn: (client: Client, opts: { signal: AbortSignal; timeout: number; maxTotalTimeout: number }) => Promise<T>,
): Promise<T> {
  const state: SessionState = { tooLarge: false, stop: new AbortController() };
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    state.stop.abort();
  }, limits.timeoutMs);
  const signal = AbortSignal.any([outer, state.stop.signal]);
  const client = new Client(CLIENT_INFO);
  try {
    if (outer.aborted) throw new ToolFailure('aborted', 'The call was cancelled.');
    const transport = transportFor(target, deps, limits, state);
    const opts = { signal, timeout: limits.timeoutMs, maxTotalTimeout: limits.timeoutMs };
    await client.connect(transport, opts);
    return await fn(client, opts);
  } catch (err) {
    throw classify(err, state, timedOut, outer, target);
  } finally {
    clearTimeout(timer);
    await client.close().catch(() => undefined);
  }
}

/** The server's tools (every page, up to 1000). */
export async function listMcpTools(
  target: McpTarget,
  deps: McpDeps,
  limits: McpLimits,
  signal: AbortSignal = new AbortController().signal,
): Promise<McpToolInfo[]> {
  return withSession(target, deps, limits, signal, async (client, opts) => {
    const tools: McpToolInfo[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES && tools.length < MAX_TOOLS; page++) {
      const res = await client.listTools(cursor ? { cursor } : {}, opts);
      for (const t of res.tools) {
        tools.push({
          name: t.name,
          description: (t.description ?? t.title ?? '').slice(0, 1024),
          inputSchema: t.inputSchema as JsonSchema,
        });
      }
      cursor = res.nextCursor;
      if (!cursor) break;
    }
    return tools.slice(0, MAX_TOOLS);
  });
}

type ContentItem = { type: string; text?: unknown; mimeType?: unknown; resource?: { uri?: unknown; text?: unknown } };

/** A tool result as text for the model: text parts as they are, other parts described. */
function resultText(result: { content?: unknown; structuredContent?: unknown }): string {
  const parts: string[] = [];
  for (const item of (Array.isArray(result.content) ? result.content : []) as ContentItem[]) {
    if (item.type === 'text' && typeof item.text === 'string') parts.push(item.text);
    else if (item.type === 'resource' && typeof item.resource?.text === 'string') parts.push(item.resource.text);
    else parts.push(JSON.stringify({ type: item.type, mimeType: item.mimeType ?? null }));
  }
  if (parts.length === 0 && result.structuredContent !== undefined)
    parts.push(JSON.stringify(result.structuredContent));
  return parts.join('\n');
}

/** Calls one tool; a result the server marks `isError` answers `tool_error`. */
export async function callMcpTool(
  target: McpTarget,
  deps: McpDeps,
  limits: McpLimits,
  name: string,
  args: Record<string, unknown>,
  signal: AbortSignal,
): Promise<{ isError: boolean; text: string }> {
  const result = await withSession(target, deps, limits, signal, (client, opts) =>
    client.callTool({ name, arguments: args }, undefined, opts),
  );
  const text = resultText(result as { content?: unknown; structuredContent?: unknown });
  if (Buffer.byteLength(text, 'utf8') > limits.maxBytes) {
    throw new ToolFailure('response_too_large', `The MCP tool's result is larger than ${limits.maxBytes} bytes.`);
  }
  const secrets = target.transport === 'http' ? target.secrets : [];
  return { isError: result.isError === true, text: redactSecrets(text, secrets) };
}

/** The name the model sees for a server's tool: `<server>__<tool>`, within OpenAI's function name rule. */
export function mcpToolName(server: string, tool: string): string {
  return `${server}__${tool.replace(/[^A-Za-z0-9_-]/g, '_')}`.slice(0, 64);
}

/** An MCP tool as an agent tool: the target is looked up at each call (the server may have changed). */
export function mcpTool(
  def: McpToolDef,
  info: McpToolInfo,
  targetOf: () => Promise<McpTarget>,
  deps: McpDeps,
  limits: McpLimits,
): Tool {
  const parameters = info.inputSchema && typeof info.inputSchema === 'object' ? info.inputSchema : { type: 'object' };
  // A schema the server sends that is not valid JSON Schema: the server checks its arguments itself.
  let validate: ValidateFunction | null = null;
  try {
    validate = compileParameters(parameters);
  } catch {
    validate = null;
  }
  return defineTool(
    {
      name: mcpToolName(def.server, info.name),
      description: info.description,
      parameters,
      requiresApproval: def.requires_approval,
    },
    async (args, ctx) => {
      const target = await targetOf();
      const res = await callMcpTool(target, deps, limits, info.name, args, ctx.signal);
      return res.isError ? fail('tool_error', res.text.slice(0, 4000)) : ok(res.text);
    },
    validate,
  );
}
