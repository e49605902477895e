import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import type { TestClient } from '../../../test/helpers/client.ts';
import { exportOf as exportArchive } from '../../../test/helpers/exports.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { dataMap } from '../../app.ts';
import type { RunView } from '../agents/agents.runs.schemas.ts';
import { memoryCredits } from '../gateway/index.ts';
import { WITHHELD_KEY_DESTROYED } from './privacy.export.archive.ts';

/**
 * Exports carry agent run content decrypted: a member's export holds what they asked their
 * agents and what the agents answered (input, output, steps, events), never another member's
 * runs, not even through a run of theirs that continues another member's; the owner's export
 * of the workspace holds every run. Content whose data key was destroyed is withheld with the
 * reason, and the export is built all the same.
 */

type Row = Record<string, unknown>;
type Archive = {
  manifest: {
    tables: Array<{
      table: string;
      purpose: string;
      retention: string;
      rows: number;
      columns: Array<{ name: string; storedEncrypted?: boolean }>;
      notExported: Array<{ column: string; reason?: string }>;
    }>;
  };
  data: Record<string, Row[]>;
};

const credits = memoryCredits();
let app: TestApp;
let fake: FakeOpenAi;
let gw: GatewayWorkspace;
let member: SignedInClient;

const MEMBER_IN = 'canary-member-input-7c41';
const MEMBER_OUT = 'canary-member-output-7c41';
const MEMBER_LATER = 'canary-member-continues-7c41';
const OWNER_IN = 'canary-owner-input-9e03';
const OWNER_OUT = 'canary-owner-output-9e03';
const INSTRUCTIONS = 'You are a careful calculator (instructions-3b8f).';

let memberRun: RunView;
let continuedRun: RunView;
let ownerRun: RunView;

const runsUrl = () => `/api/workspaces/${gw.workspaceId}/runs`;

async function run(client: TestClient, body: Record<string, unknown>): Promise<RunView> {
  const res = await client.post<RunView>(runsUrl(), { agent: 'calc', ...body });
  expect(res.status, res.text).toBe(200);
  expect(res.body.status).toBe('completed');
  return res.body;
}

const exportOf = (client: SignedInClient, path: string) => exportArchive<Archive>(app, client, path);

const rows = (a: Archive, table: string) => a.data[table] ?? [];
const runIds = (a: Archive) => rows(a, 'agent_runs').map((r) => r.id);

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 }, credits });
  gw = await gatewayWorkspace(app, { providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }] });
  credits.grant(gw.workspaceId, 1_000_000_000);
  const agent = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/agents/import?publish=true`, {
    name: 'calc',
    model: 'gpt-4o-mini',
    instructions: INSTRUCTIONS,
    tools: [{ type: 'builtin', name: 'calculator', requires_approval: false }],
  });
  expect(agent.status, agent.text).toBe(201);

  member = await signUp(app);
  const { token } = await app.modules.workspaces.service.invite({
    scope: { workspaceId: gw.workspaceId, actor: { type: 'user', userId: gw.owner.userId }, role: 'owner' },
    email: member.email,
    role: 'member',
  });
  await app.modules.workspaces.service.acceptInvitation({ token, userId: member.userId });

  // The member's run: model call, calculator, model call.
  fake.next(
    { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"6*7"}' }] },
    { kind: 'reply', content: `It is 42. ${MEMBER_OUT}` },
  );
  memberRun = await run(member, { input: `What is 6*7? ${MEMBER_IN}` });
  fake.next({ kind: 'reply', content: `Hello. ${OWNER_OUT}` });
  ownerRun = await run(gw.owner, { input: `Say hello. ${OWNER_IN}` });
  // The member continues the owner's run: its context carries the owner's conversation.
  fake.next({ kind: 'reply', content: 'Continued.' });
  continuedRun = await run(member, { input: `Go on. ${MEMBER_LATER}`, previous_run_id: ownerRun.id });
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

describe('happy', () => {
  it("gives a member their runs' input, output, steps and events in plain text", async () => {
    const { text, archive } = await exportOf(member, '/api/me/privacy/exports');
    expect(runIds(archive).sort()).toEqual([memberRun.id, continuedRun.id].sort());
    const mine = rows(archive, 'agent_runs').find((r) => r.id === memberRun.id);
    expect(mine).toMatchObject({
      user_id: member.userId,
      input: `What is 6*7? ${MEMBER_IN}`,
      output: `It is 42. ${MEMBER_OUT}`,
      status: 'completed',
    });
    // The run's context may hold another member's conversation: a user's export leaves it out, and says so.
    expect(mine).not.toHaveProperty('context');
    const runs = archive.manifest.tables.find((t) => t.table === 'agent_runs');
    expect(runs?.notExported.find((c) => c.column === 'context')?.reason).toMatch(/workspace's export/);
    expect(runs?.columns.find((c) => c.name === 'input')?.storedEncrypted).toBe(true);

    // Steps and events, found through the runs: decrypted, and only of the member's runs.
    const steps = rows(archive, 'agent_run_steps').filter((s) => s.run_id === memberRun.id);
    expect(steps.map((s) => [s.seq, s.kind])).toEqual([
      [1, 'model'],
      [2, 'tool'],
      [3, 'model'],
    ]);
    expect(steps[1]?.content).toEqual({ arguments: '{"expression":"6*7"}', result: '42' });
    expect(steps[2]?.content).toMatchObject({ role: 'assistant', content: `It is 42. ${MEMBER_OUT}` });
    expect(rows(archive, 'agent_run_steps').every((s) => s.run_id !== ownerRun.id)).toBe(true);
    const events = rows(archive, 'agent_run_events');
    expect(events.length).toBeGreaterThan(3);
    expect(events.every((e) => e.run_id === memberRun.id || e.run_id === continuedRun.id)).toBe(true);
    expect(events.find((e) => e.run_id === memberRun.id && e.type === 'run.created')?.data).toMatchObject({
      runId: memberRun.id,
    });

    expect(text).toContain(MEMBER_LATER);
    // Nothing of the owner's run, not even through the run that continued it; no ciphertext.
    for (const other of [OWNER_IN, OWNER_OUT, INSTRUCTIONS, gw.owner.userId, gw.owner.email]) {
      expect(text.includes(other), other).toBe(false);
    }
    expect(text).not.toMatch(/"\\\\x[0-9a-f]{8,}/);
  });

  it("gives the owner every run of the workspace, the member's included, with its context", async () => {
    const { text, archive } = await exportOf(gw.owner, `/api/workspaces/${gw.workspaceId}/privacy/exports`);
    expect(runIds(archive).sort()).toEqual([memberRun.id, ownerRun.id, continuedRun.id].sort());
    for (const canary of [MEMBER_IN, MEMBER_OUT, MEMBER_LATER, OWNER_IN, OWNER_OUT, INSTRUCTIONS]) {
      expect(text, canary).toContain(canary);
    }
    const theirs = rows(archive, 'agent_runs').find((r) => r.id === memberRun.id);
    // The member is a pseudonym; their content is the workspace's.
    expect(String(theirs?.user_id)).toMatch(/^person_[0-9a-f]{16}$/);
    expect(theirs?.output).toBe(`It is 42. ${MEMBER_OUT}`);
    expect(theirs?.context).toEqual(expect.arrayContaining([{ role: 'system', content: INSTRUCTIONS }]));
    expect(text.includes(member.userId)).toBe(false);
    expect(rows(archive, 'agent_run_steps').filter((s) => s.run_id === memberRun.id)).toHaveLength(3);
    // The manifest says what the map says.
    const entry = dataMap(app.modules).find((t) => t.table === 'agent_run_steps');
    const manifest = archive.manifest.tables.find((t) => t.table === 'agent_run_steps');
    expect(manifest).toMatchObject({ purpose: entry?.purpose, retention: 'logs_90_days', rows: 5 });
    expect(manifest?.notExported).toEqual([]);
  });
});

// Last: it destroys the workspace's data key.
describe('errors', () => {
  it('withholds run content whose workspace key was destroyed, and still builds the export', async () => {
    await app.modules.vault.service.destroyOwnerKey({ type: 'workspace', id: gw.workspaceId });
    const { text, archive } = await exportOf(member, '/api/me/privacy/exports');
    expect(runIds(archive).sort()).toEqual([memberRun.id, continuedRun.id].sort());
    const mine = rows(archive, 'agent_runs').find((r) => r.id === memberRun.id);
    expect(mine).toMatchObject({
      status: 'completed',
      input: WITHHELD_KEY_DESTROYED,
      output: WITHHELD_KEY_DESTROYED,
    });
    const steps = rows(archive, 'agent_run_steps').filter((s) => s.run_id === memberRun.id);
    expect(steps).toHaveLength(3);
    expect(steps.every((s) => s.content === WITHHELD_KEY_DESTROYED)).toBe(true);
    expect(rows(archive, 'agent_run_events').every((e) => e.data === WITHHELD_KEY_DESTROYED)).toBe(true);
    for (const canary of [MEMBER_IN, MEMBER_OUT, MEMBER_LATER]) expect(text.includes(canary), canary).toBe(false);
  });
});
