import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

/**
 * A real Model Context Protocol server on loopback, built with the SDK's own server classes
 * over streamable HTTP (stateless: a server and transport per request). Its tools:
 * `echo { text }`, `add { a, b }`, `whoami` (answers with the Authorization header it
 * received), `big` (a 10 MB text), `hang` (answers only when the client gives up) and
 * `fail` (a result marked isError). It records every request's headers and every tool call.
 *
 * Run as a program with `--fake-mcp-stdio` (`node --import tsx test/fakes/mcp-server.ts
 * --fake-mcp-stdio`), it serves the same tools over stdio.
 */
export type FakeMcpServer = {
  /** The streamable HTTP endpoint (…/mcp). */
  url: string;
  /** Headers of every HTTP request received. */
  requests: IncomingMessage['headers'][];
  /** Names of the tools called, in order. */
  calls: string[];
  /** Requests whose response was closed before it was written completely. */
  cutOff: number;
  close(): Promise<void>;
};

const BIG = 'x'.repeat(10 * 1024 * 1024);

function buildServer(fake: FakeMcpServer, authorization: string) {
  const server = new McpServer({ name: 'fake-mcp', version: '1.0.0' });
  server.registerTool(
    'echo',
    { description: 'Echoes the text', inputSchema: { text: z.string() } },
    async ({ text }) => {
      fake.calls.push('echo');
      return { content: [{ type: 'text', text }] };
    },
  );
  server.registerTool(
    'add',
    { description: 'Adds two numbers', inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => {
      fake.calls.push('add');
      return { content: [{ type: 'text', text: String(a + b) }] };
    },
  );
  server.registerTool('whoami', { description: 'Tells which credentials it received' }, async () => {
    fake.calls.push('whoami');
    return { content: [{ type: 'text', text: `authorization: ${authorization}` }] };
  });
  server.registerTool('big', { description: 'Answers with 10 MB' }, async () => {
    fake.calls.push('big');
    return { content: [{ type: 'text', text: BIG }] };
  });
  server.registerTool('hang', { description: 'Never answers' }, async (extra) => {
    fake.calls.push('hang');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 120_000);
      extra.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    return { content: [{ type: 'text', text: 'too late' }] };
  });
  server.registerTool('fail', { description: 'Fails' }, async () => {
    fake.calls.push('fail');
    return { content: [{ type: 'text', text: 'boom' }], isError: true };
  });
  return server;
}

export async function startFakeMcpServer(): Promise<FakeMcpServer> {
  const sockets = new Set<import('node:net').Socket>();
  const fake: FakeMcpServer = {
    url: '',
    requests: [],
    calls: [],
    cutOff: 0,
    close: async () => undefined,
  };
  const http: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    fake.requests.push(req.headers);
    res.on('close', () => {
      if (!res.writableFinished) fake.cutOff++;
    });
    if (!req.url?.startsWith('/mcp')) {
      res.statusCode = 404;
      res.end();
      return;
    }
    const server = buildServer(fake, String(req.headers.authorization ?? ''));
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    try {
      await server.connect(transport);
      await transport.handleRequest(req, res);
    } catch {
      if (!res.headersSent) res.statusCode = 500;
      res.end();
    }
  });
  http.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  fake.url = `http://127.0.0.1:${port}/mcp`;
  fake.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => http.close(() => resolve()));
  };
  return fake;
}

/** The flag that makes this file a stdio MCP server when run as a program. */
export const STDIO_FLAG = '--fake-mcp-stdio';
/** This file's path, for tests that start it as a stdio server. */
export const FAKE_MCP_SERVER_FILE = new URL(import.meta.url).pathname;

if (process.argv.includes(STDIO_FLAG)) {
  const recorder: FakeMcpServer = { url: '', requests: [], calls: [], cutOff: 0, close: async () => undefined };
  await buildServer(recorder, '').connect(new StdioServerTransport());
}
