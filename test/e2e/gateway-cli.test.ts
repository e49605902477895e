import type { ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../fakes/openai-upstream.ts';
import { berth, migratedDataDir, startServer } from '../helpers/cli.ts';

const UPSTREAM_KEY = 'sk-upstream-secret-7f3a9c';
const FILE_KEY = 'sk-upstream-from-file-41d2';

let dataDir: string;
let fake: FakeOpenAi;
let server: { child: ChildProcess; url: string };
let apiKey: string;
let auth: string[];

beforeAll(async () => {
  dataDir = await migratedDataDir('berth-e2e-gw-');
  fake = await startFakeOpenAi();
  const env = { BERTH_DATA_DIR: dataDir, BERTH_EGRESS_ALLOW: '127.0.0.1' };
  const created = await berth(
    ['admin', 'create', '--email', 'gw@example.com', '--workspace', 'Gateway team', '--json'],
    env,
    'correct horse battery staple\n',
  );
  expect(created.code, created.stderr).toBe(0);
  apiKey = JSON.parse(created.stdout).apiKey;
  server = await startServer(env);
  auth = ['--url', server.url, '--api-key', apiKey];
}, 120_000);

afterAll(async () => {
  if (server) {
    const exited = new Promise((resolve) => server.child.on('exit', resolve));
    server.child.kill('SIGTERM');
    await exited;
  }
  await fake?.close();
  rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

describe('happy', () => {
  it('has help on every gateway subcommand', async () => {
    const subs = [
      ['providers', 'add'],
      ['providers', 'list'],
      ['providers', 'remove'],
      ['models', 'list'],
      ['models', 'price'],
      ['usage'],
    ];
    const runs = await Promise.all(subs.map((sub) => berth([...sub, '--help'])));
    subs.forEach((sub, i) => {
      expect(runs[i]?.code, sub.join(' ')).toBe(0);
      expect(runs[i]?.stdout).toContain(`Usage: berth ${sub.join(' ')}`);
    });
  }, 120_000);

  it('adds providers, prices a model, shows usage of a real call, and removes providers', async () => {
    // With --models, the upstream key from the environment (not the command line).
    const added = await berth(
      [
        'providers',
        'add',
        '--name',
        'fake',
        '--adapter',
        'openai-compatible',
        '--base-url',
        fake.baseUrl,
        '--models',
        'custom-model, gpt-4o-mini',
        '--timeout-ms',
        '20000',
        ...auth,
        '--json',
      ],
      { BERTH_PROVIDER_API_KEY: UPSTREAM_KEY },
    );
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).not.toContain(UPSTREAM_KEY);
    const fakeProvider = JSON.parse(added.stdout);
    expect(fakeProvider).toMatchObject({
      id: expect.stringMatching(/^prv_/),
      name: 'fake',
      models: ['custom-model', 'gpt-4o-mini'],
      timeoutMs: 20000,
      hasCredentials: true,
    });

    // Without --models Berth asks the upstream's GET /models; the key comes from a file.
    const keyFile = path.join(dataDir, 'upstream-key');
    writeFileSync(keyFile, `${FILE_KEY}\n`, { mode: 0o600 });
    const discovered = await berth([
      'providers',
      'add',
      '--name',
      'discover',
      '--adapter',
      'openai-compatible',
      '--base-url',
      fake.baseUrl,
      '--provider-api-key-file',
      keyFile,
      ...auth,
    ]);
    expect(discovered.code, discovered.stderr).toBe(0);
    expect(discovered.stdout).toContain('Added provider discover');
    expect(discovered.stdout).toContain('credentials stored encrypted');
    expect(discovered.stdout).not.toContain(FILE_KEY);
    const modelsCall = fake.received.find((r) => r.method === 'GET' && r.path === '/v1/models');
    expect(modelsCall?.headers.authorization).toBe(`Bearer ${FILE_KEY}`);

    const listedJson = await berth(['providers', 'list', ...auth, '--json']);
    expect(listedJson.code, listedJson.stderr).toBe(0);
    const listed = JSON.parse(listedJson.stdout).data as { name: string; models: string[] }[];
    expect(listed.map((p) => p.name).sort()).toEqual(['discover', 'fake']);
    expect(listed.find((p) => p.name === 'discover')?.models).toEqual(fake.models);
    const listedHuman = await berth(['providers', 'list', ...auth]);
    expect(listedHuman.code, listedHuman.stderr).toBe(0);
    expect(listedHuman.stdout).toMatch(/^ID\s+NAME\s+ADAPTER/);
    expect(listedHuman.stdout).toContain(fakeProvider.id);
    expect(listedHuman.stdout).toContain('discover');
    for (const secret of [UPSTREAM_KEY, FILE_KEY]) expect(listedHuman.stdout + listedJson.stdout).not.toContain(secret);

    // A catalog model is priced; the custom one is not, until the workspace prices it.
    const before = await berth(['models', 'list', ...auth, '--json']);
    expect(before.code, before.stderr).toBe(0);
    const beforeModels = JSON.parse(before.stdout).data as { id: string; provider: string; price: unknown }[];
    // Both providers serve gpt-4o-mini; the list names the first in name order.
    expect(beforeModels).toContainEqual({
      id: 'gpt-4o-mini',
      provider: 'discover',
      price: expect.objectContaining({ inputMicrosPerMtok: 150_000, outputMicrosPerMtok: 600_000 }),
    });
    expect(beforeModels).toContainEqual({ id: 'custom-model', provider: 'fake', price: null });

    const priced = await berth([
      'models',
      'price',
      'custom-model',
      '--input-usd-per-mtok',
      '10',
      '--output-usd-per-mtok',
      '20',
      '--cached-input-usd-per-mtok',
      '0.15',
      '--context-window',
      '32000',
      ...auth,
      '--json',
    ]);
    expect(priced.code, priced.stderr).toBe(0);
    expect(JSON.parse(priced.stdout)).toMatchObject({
      model: 'custom-model',
      inputMicrosPerMtok: 10_000_000,
      outputMicrosPerMtok: 20_000_000,
      cachedInputMicrosPerMtok: 150_000,
      contextWindow: 32000,
    });

    const humanModels = await berth(['models', 'list', ...auth]);
    expect(humanModels.code, humanModels.stderr).toBe(0);
    const customLine = humanModels.stdout.split('\n').find((l) => l.startsWith('custom-model'));
    expect(customLine).toMatch(/^custom-model\s+fake\s+10\.00\s+20\.00\s+0\.15\s+32000$/);
    expect(humanModels.stdout.split('\n').find((l) => l.startsWith('gpt-4o-mini'))).toMatch(/0\.15\s+0\.60/);

    // A real call through the gateway, so there is usage: 3 prompt and 3 completion tokens.
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'custom-model', messages: [{ role: 'user', content: 'hello there' }] }),
    });
    expect(res.status).toBe(200);
    const completion = (await res.json()) as { choices: { message: { content: string } }[] };
    expect(completion.choices[0]?.message.content).toBe('echo: hello there');
    const chatCall = fake.received.find((r) => r.method === 'POST' && r.path === '/v1/chat/completions');
    expect(chatCall?.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    // (3 x 10 USD + 3 x 20 USD) per million tokens = 90 micro-dollars.
    const expectedCost = 90;

    const grouped = await berth(['usage', '--group-by', 'model', '--since', '24h', ...auth, '--json']);
    expect(grouped.code, grouped.stderr).toBe(0);
    expect(JSON.parse(grouped.stdout)).toEqual({
      data: [
        expect.objectContaining({
          group: 'custom-model',
          requests: 1,
          errors: 0,
          inputTokens: 3,
          outputTokens: 3,
          costMicros: expectedCost,
        }),
      ],
      nextCursor: null,
    });
    const groupedHuman = await berth(['usage', '--group-by', 'model', ...auth]);
    expect(groupedHuman.code, groupedHuman.stderr).toBe(0);
    expect(groupedHuman.stdout).toMatch(/^MODEL\s+REQUESTS/);
    expect(groupedHuman.stdout).toMatch(/custom-model\s+1\s+0\s+3\s+3\s+0\s+0\.00009/);

    const events = await berth(['usage', '--since', '7d', '--limit', '10', ...auth, '--json']);
    expect(events.code, events.stderr).toBe(0);
    const page = JSON.parse(events.stdout);
    expect(page.data).toEqual([
      expect.objectContaining({ model: 'custom-model', provider: 'fake', status: 200, costMicros: expectedCost }),
    ]);
    const eventsHuman = await berth(['usage', ...auth]);
    expect(eventsHuman.code, eventsHuman.stderr).toBe(0);
    expect(eventsHuman.stdout).toMatch(/^TIME\s+MODEL\s+PROVIDER/);
    expect(eventsHuman.stdout).toMatch(/custom-model\s+fake\s+200\s+3\s+3\s+\d+\s+0\.00009/);

    // Remove one by name, the other by id.
    const byName = await berth(['providers', 'remove', 'discover', ...auth]);
    expect(byName.code, byName.stderr).toBe(0);
    expect(byName.stdout).toContain('Removed provider discover');
    const byId = await berth(['providers', 'remove', fakeProvider.id, ...auth, '--json']);
    expect(byId.code, byId.stderr).toBe(0);
    expect(JSON.parse(byId.stdout)).toEqual({ removed: true, id: fakeProvider.id, name: 'fake' });
    const empty = await berth(['providers', 'list', ...auth]);
    expect(empty.code).toBe(0);
    expect(empty.stdout.trim()).toBe('No providers.');
  }, 300_000);
});

describe('errors', () => {
  it('names an unknown provider and exits 4', async () => {
    const r = await berth(['providers', 'remove', 'no-such-provider', ...auth]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('No provider named no-such-provider');
    const json = await berth(['providers', 'remove', 'no-such-provider', ...auth, '--json']);
    expect(json.code).toBe(4);
    expect(JSON.parse(json.stdout).error.code).toBe('not_found');
  }, 120_000);

  it('refuses prices with more than 6 decimals or a sign as bad usage (exit 2) before calling the server', async () => {
    const tooPrecise = await berth([
      'models',
      'price',
      'custom-model',
      '--input-usd-per-mtok',
      '1.1234567',
      '--output-usd-per-mtok',
      '1',
      ...auth,
      '--json',
    ]);
    expect(tooPrecise.code).toBe(2);
    expect(JSON.parse(tooPrecise.stdout).error).toEqual({
      code: 'invalid_price',
      message: expect.stringContaining('at most 6 decimal places'),
    });
    const negative = await berth([
      'models',
      'price',
      'custom-model',
      '--input-usd-per-mtok',
      '1',
      '--output-usd-per-mtok',
      '-0.5',
      ...auth,
    ]);
    expect(negative.code).toBe(2);
    expect(negative.stderr).toContain('cannot be negative');
  }, 120_000);

  it('asks for an API key when neither --api-key nor BERTH_API_KEY is given', async () => {
    const commands = [['providers', 'list'], ['models', 'list'], ['usage']];
    const runs = await Promise.all(commands.map((args) => berth([...args, '--url', server.url])));
    commands.forEach((args, i) => {
      expect(runs[i]?.code, args.join(' ')).toBe(2);
      expect(runs[i]?.stderr).toContain('--api-key or BERTH_API_KEY');
    });
    const viaEnv = await berth(['providers', 'list', '--url', server.url, '--json'], { BERTH_API_KEY: apiKey });
    expect(viaEnv.code, viaEnv.stderr).toBe(0);
  }, 120_000);

  it('refuses bad usage flags with exit 2', async () => {
    const adapter = await berth([
      'providers',
      'add',
      '--name',
      'x',
      '--adapter',
      'nope',
      '--base-url',
      fake.baseUrl,
      ...auth,
    ]);
    expect(adapter.code).toBe(2);
    const since = await berth(['usage', '--since', 'yesterday', ...auth]);
    expect(since.code).toBe(2);
    expect(since.stderr).toContain('--since');
    const limitWithGroups = await berth(['usage', '--group-by', 'day', '--limit', '5', ...auth]);
    expect(limitWithGroups.code).toBe(2);
    expect(limitWithGroups.stderr).toContain('not with --group-by');
  }, 120_000);

  it('passes the server refusal through with exit 4 (a name already taken)', async () => {
    const args = ['providers', 'add', '--name', 'twice', '--adapter', 'openai-compatible', '--base-url', fake.baseUrl];
    const first = await berth([...args, '--models', 'm1', ...auth]);
    expect(first.code, first.stderr).toBe(0);
    const second = await berth([...args, '--models', 'm1', ...auth, '--json']);
    expect(second.code).toBe(4);
    expect(JSON.parse(second.stdout).error.code).toBe('conflict');
  }, 120_000);
});
