import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeAnthropic, startFakeAnthropic } from './fakes/anthropic-upstream.ts';
import { type FakeOpenAi, startFakeOpenAi } from './fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from './helpers/app.ts';
import { fullDatabaseText } from './helpers/dump.ts';
import { type GatewayWorkspace, gatewayWorkspace, listen } from './helpers/gateway.ts';

/**
 * Invariant 2, no content at rest: a unique marker goes through every gateway path (chat
 * plain, streamed and with tools; embeddings; Anthropic messages, plain and streamed;
 * upstream 4xx that echoes the prompt, upstream 5xx, timeout, client abort). Then every
 * column of every table, every log line, every file under the data directory (the usage
 * journal) and the database's own files are searched: zero hits. The upstreams must have
 * seen each marker, so a path that silently sent nothing cannot pass.
 */

let app: TestApp;
let openaiUp: FakeOpenAi;
let anthropicUp: FakeAnthropic;
let gw: GatewayWorkspace;
let anthropic: Anthropic;
const markers: string[] = [];

function marker(path: string): string {
  const m = `CANARY${path}${randomBytes(8).toString('hex')}`;
  markers.push(m);
  return m;
}

/** Every file under dir, concatenated as latin1 text (binary files included). */
function filesText(dir: string): string {
  const parts: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) parts.push(filesText(p));
    else parts.push(readFileSync(p).toString('latin1'));
  }
  return parts.join('\n');
}

const swallow = (p: Promise<unknown>) => p.catch((e: unknown) => e);

beforeAll(async () => {
  openaiUp = await startFakeOpenAi();
  anthropicUp = await startFakeAnthropic();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 } });
  gw = await gatewayWorkspace(app, {
    providers: [
      { name: 'oai', baseUrl: openaiUp.baseUrl, models: ['gpt-4o', 'text-embedding-3-small'], timeoutMs: 1000 },
    ],
  });
  const added = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/providers`, {
    name: 'claude',
    adapter: 'anthropic',
    baseUrl: anthropicUp.baseUrl,
    models: ['claude-haiku-4-5'],
  });
  expect(added.status).toBe(201);
  anthropic = new Anthropic({ baseURL: await listen(app), apiKey: gw.secret, maxRetries: 0 });
});

afterAll(async () => {
  console.log('closing app');
  await app?.close();
  console.log('closing oai');
  await openaiUp?.close();
  console.log('closing anth');
  await anthropicUp?.close();
  console.log('closed');
});

describe('security', () => {
  it('a marker sent through every gateway path is found nowhere at rest', async () => {
    const chat = (content: string) => ({ model: 'gpt-4o', messages: [{ role: 'user' as const, content }] });

    await gw.openai.chat.completions.create(chat(marker('plain')));
    for await (const _ of await gw.openai.chat.completions.create({ ...chat(marker('stream')), stream: true })) {
      // read it all
    }
    const toolMarker = marker('tool');
    await gw.openai.chat.completions.create({
      ...chat(toolMarker),
      tools: [
        {
          type: 'function',
          function: { name: 'lookup', description: marker('tooldesc'), parameters: { type: 'object' } },
        },
      ],
    });
    await gw.openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [
        { role: 'user', content: 'call it' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            {
              id: 'c1',
              type: 'function',
              function: { name: 'lookup', arguments: JSON.stringify({ q: marker('toolargs') }) },
            },
          ],
        },
        { role: 'tool', tool_call_id: 'c1', content: marker('toolresult') },
      ],
    });
    await gw.openai.embeddings.create({ model: 'text-embedding-3-small', input: marker('embed') });
    await anthropic.messages.create({
      model: 'gpt-4o',
      max_tokens: 50,
      system: marker('system'),
      messages: [{ role: 'user', content: marker('messages') }],
    });
    await anthropic.messages
      .stream({ model: 'claude-haiku-4-5', max_tokens: 50, messages: [{ role: 'user', content: marker('msgstream') }] })
      .finalMessage();

    openaiUp.next({ kind: 'status', status: 400 });
    await swallow(gw.openai.chat.completions.create(chat(marker('echo4xx'))));
    openaiUp.next({ kind: 'status', status: 500 });
    await swallow(gw.openai.chat.completions.create(chat(marker('fail5xx'))));
    anthropicUp.failNext(400);
    await swallow(
      anthropic.messages.create({
        model: 'claude-haiku-4-5',
        max_tokens: 5,
        messages: [{ role: 'user', content: marker('anth4xx') }],
      }),
    );
    openaiUp.next({ kind: 'hang' });
    await swallow(gw.openai.chat.completions.create(chat(marker('timeout'))));
    openaiUp.next({ kind: 'truncate' });
    await swallow(
      (async () => {
        for await (const _ of await gw.openai.chat.completions.create({ ...chat(marker('truncated')), stream: true })) {
          // until it breaks
        }
      })(),
    );
    openaiUp.next({ kind: 'slow_stream', delayMs: 30 });
    const controller = new AbortController();
    await swallow(
      (async () => {
        const s = await gw.openai.chat.completions.create(
          { ...chat(`${marker('abort')} ${'w '.repeat(30)}`), stream: true },
          { signal: controller.signal },
        );
        let n = 0;
        for await (const _ of s) if (++n === 3) controller.abort();
      })(),
    );
    // A malformed call whose body still carries the marker.
    await swallow(
      gw.openai.chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'wizard' as 'user', content: marker('invalid') }],
      }),
    );

    // The upstreams saw every marker that was meant to reach them (the invalid call stops at the door).
    const upstreamText = JSON.stringify([openaiUp.received, anthropicUp.received]);
    for (const m of markers.filter((x) => !x.startsWith('CANARYinvalid'))) expect(upstreamText, m).toContain(m);

    await app.modules.gateway.service.idle();
    await app.modules.gateway.service.usage.flush();
    const usage = await gw.owner.get<{ data: unknown[] }>(`/api/workspaces/${gw.workspaceId}/usage?limit=1000`);
    expect(usage.body.data.length).toBeGreaterThanOrEqual(13);

    const haystacks: Record<string, string> = {
      database: await fullDatabaseText(app),
      logs: app.logs.join('\n'),
      'data directory': filesText(app.config.dataDir),
    };
    if (app.db.pglite) {
      // The database's own files, WAL included, uncompressed.
      const dump = await app.db.pglite.dumpDataDir('none');
      haystacks['database files'] = Buffer.from(await dump.arrayBuffer()).toString('latin1');
    }
    // The searches see what is there: the workspace's id is in its rows, the request ids in the logs.
    expect(haystacks.database).toContain(gw.workspaceId);
    expect(haystacks.logs).toContain('"route":"/v1/chat/completions"');
    for (const [where, text] of Object.entries(haystacks)) {
      const hits = markers.filter((m) => text.includes(m));
      expect(hits, `markers found in the ${where}`).toEqual([]);
      // And no fragment either: the random part alone.
      expect(
        markers.filter((m) => text.includes(m.slice(-16))),
        `marker fragments in the ${where}`,
      ).toEqual([]);
    }
  });
});
