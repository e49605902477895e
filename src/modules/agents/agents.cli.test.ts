import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { listen } from '../../../test/helpers/gateway.ts';
import { signUp } from '../../../test/helpers/identity.ts';
import type { KeyWithSecret } from '../keys/index.ts';
import type { AgentSummary, AgentView, VersionView } from './agents.schemas.ts';

/**
 * `berth agents create|import|list|get|export|publish|archive` in process, over HTTP against
 * a listening test app, with API keys as a script would use them.
 */

let app: TestApp;
let url: string;
let dir: string;
let writer: string;
let reader: string;
let workspaceId: string;

async function key(scopes: string[], owner: Awaited<ReturnType<typeof signUp>>) {
  const res = await owner.post<KeyWithSecret>(`/api/workspaces/${workspaceId}/keys`, { name: 'cli', scopes });
  if (res.status !== 201) throw new Error(`key: ${res.status} ${res.text}`);
  return res.body.secret;
}

beforeAll(async () => {
  app = await createTestApp();
  url = await listen(app);
  dir = mkdtempSync(path.join(tmpdir(), 'berth-agents-cli-'));
  const owner = await signUp(app);
  workspaceId = (await owner.post<{ id: string }>('/api/workspaces', { name: 'CLI agents' })).body.id;
  writer = await key(['agents:read', 'agents:write'], owner);
  reader = await key(['agents:read'], owner);
});
afterAll(async () => {
  await app?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const berth = (args: string[], apiKey = writer, stdin = '') =>
  berthInProcess(args, { BERTH_URL: url, BERTH_API_KEY: apiKey }, stdin);

function file(name: string, content: unknown): string {
  const p = path.join(dir, name);
  writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return p;
}

describe('happy', () => {
  it('creates, publishes, lists, shows and exports an agent; the export imports back identically', async () => {
    const def = file('support.json', {
      format: 'berth.agent/v1',
      name: 'support',
      model: 'gpt-4o-mini',
      instructions: 'Be brief.',
      tools: [{ type: 'builtin', name: 'calculator' }],
    });
    const made = await berth(['agents', 'create', '--file', def, '--json']);
    expect(made.code).toBe(0);
    const view = JSON.parse(made.stdout) as AgentView;
    expect(view).toMatchObject({ name: 'support', latestVersion: null });

    const pub = await berth(['agents', 'publish', 'support', '--json']);
    expect(pub.code).toBe(0);
    expect((JSON.parse(pub.stdout) as VersionView).version).toBe(1);
    const again = await berth(['agents', 'publish', 'support', '--json']);
    expect(again.code).toBe(4);
    expect(JSON.parse(again.stdout)).toMatchObject({ error: { code: 'agent_unchanged' } });

    const list = await berth(['agents', 'list'], reader);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^${view.id} +support +gpt-4o-mini +v1 +published$`, 'm'));
    const listJson = await berth(['agents', 'list', '--json'], reader);
    expect((JSON.parse(listJson.stdout) as { data: AgentSummary[] }).data.map((a) => a.name)).toEqual(['support']);

    const shown = await berth(['agents', 'get', view.id], reader);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('model:          gpt-4o-mini');
    expect(shown.stdout).toContain('tools:          calculator (approval: per_tool)');
    const shownJson = await berth(['agents', 'get', 'support', '--json'], reader);
    expect((JSON.parse(shownJson.stdout) as AgentView).latestVersion?.version).toBe(1);

    const exported = await berth(['agents', 'export', 'support', '--agent-version', '1'], reader);
    expect(exported.code).toBe(0);
    const exportedDef = JSON.parse(exported.stdout) as Record<string, unknown>;
    expect(exportedDef).toMatchObject({ format: 'berth.agent/v1', name: 'support', instructions: 'Be brief.' });

    // Imported into a fresh name, published: its export is the same text but for the name.
    const copy = file('copy.json', { ...exportedDef, name: 'support-copy' });
    const imported = await berth(['agents', 'import', '--file', copy, '--publish']);
    expect(imported.code).toBe(0);
    expect(imported.stdout).toMatch(/^Imported agt_\S+ \(support-copy\), published as v1\.$/);
    const back = await berth(['agents', 'export', 'support-copy', '--json'], reader);
    expect(JSON.parse(back.stdout)).toEqual({ ...exportedDef, name: 'support-copy' });

    // From standard input.
    const piped = await berth(
      ['agents', 'import', '--file', '-', '--json'],
      writer,
      JSON.stringify({ ...exportedDef, name: 'piped' }),
    );
    expect(piped.code).toBe(0);
    expect((JSON.parse(piped.stdout) as AgentView).name).toBe('piped');

    const archived = await berth(['agents', 'archive', 'piped']);
    expect(archived.code).toBe(0);
    expect(archived.stdout).toBe('Archived piped.');
    const withArchived = await berth(['agents', 'list', '--archived', '--json'], reader);
    expect((JSON.parse(withArchived.stdout) as { data: AgentSummary[] }).data).toHaveLength(3);
  });
});

describe('errors', () => {
  it('exits 4 with the server’s code when refused, 2 for unusable input, and changes nothing', async () => {
    const bad = file('bad.json', { name: 'bad', model: 'm', limits: { max_steps: 0 } });
    const refused = await berth(['agents', 'create', '--file', bad, '--json']);
    expect(refused.code).toBe(4);
    expect(JSON.parse(refused.stdout)).toMatchObject({ error: { code: 'validation_failed' } });

    const scoped = await berth(
      ['agents', 'create', '--file', file('ok.json', { name: 'ok', model: 'm' }), '--json'],
      reader,
    );
    expect(scoped.code).toBe(4);
    expect(JSON.parse(scoped.stdout)).toMatchObject({ error: { code: 'insufficient_scope' } });

    expect((await berth(['agents', 'create', '--file', file('not.json', 'not json')])).code).toBe(2);
    expect((await berth(['agents', 'create', '--file', path.join(dir, 'missing.json')])).code).toBe(2);
    expect((await berth(['agents', 'export', 'support', '--agent-version', 'latest'])).code).toBe(2);
    const missing = await berth(['agents', 'get', 'nobody', '--json']);
    expect(missing.code).toBe(4);
    expect(JSON.parse(missing.stdout)).toMatchObject({ error: { code: 'not_found' } });

    const names = await berth(['agents', 'list', '--json'], reader);
    expect((JSON.parse(names.stdout) as { data: AgentSummary[] }).data.map((a) => a.name)).not.toContain('bad');
  });
});
