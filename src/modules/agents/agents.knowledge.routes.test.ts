import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type GatewayWorkspace, gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { memoryCredits } from '../gateway/index.ts';
import type { KnowledgeBaseView, SearchResult, UploadResult } from '../knowledge/index.ts';
import type { RunView, StepView } from './agents.runs.schemas.ts';

/**
 * The agents' `knowledge_search` tool over the knowledge module, in real runs against an
 * OpenAI-compatible upstream (test/fakes): the chunk and its citation come back as the tool's
 * result, an agent with knowledge bases gets the tool without listing it, errors are tool
 * errors with stable codes, and a run never searches another workspace's knowledge bases.
 */

let app: TestApp;
let fake: FakeOpenAi;
let gw: GatewayWorkspace;
let otherWs: string;
let handbook: KnowledgeBaseView;
const credits = memoryCredits();
const OTHER_CANARY = 'walrusotherworkspace';

const runsUrl = () => `/api/workspaces/${gw.workspaceId}/runs`;
const kbUrl = (workspace: string, kb = '') => `/api/workspaces/${workspace}/knowledge${kb ? `/${kb}` : ''}`;

async function createKb(workspace: string, name: string): Promise<KnowledgeBaseView> {
  const res = await gw.owner.post<KnowledgeBaseView>(kbUrl(workspace), { name });
  expect(res.status, res.text).toBe(201);
  return res.body;
}

async function upload(workspace: string, kb: string, name: string, text: string) {
  const boundary = `----berth${randomBytes(8).toString('hex')}`;
  const payload = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n` +
      `Content-Type: text/markdown\r\n\r\n${text}\r\n--${boundary}--\r\n`,
  );
  const res = await gw.owner.request<UploadResult>('POST', `${kbUrl(workspace, kb)}/documents`, payload, {
    'content-type': `multipart/form-data; boundary=${boundary}`,
  });
  expect(res.status, res.text).toBe(202);
  return res.body.data[0]?.document.id as string;
}

async function agent(name: string, extra: Record<string, unknown>) {
  const res = await gw.owner.post(`/api/workspaces/${gw.workspaceId}/agents/import?publish=true`, {
    name,
    model: 'gpt-4o-mini',
    instructions: 'Answer from the knowledge bases.',
    ...extra,
  });
  expect(res.status, res.text).toBe(201);
}

/** Runs `agent` whose model calls knowledge_search once with `args`; answers the tool step. */
async function searchRun(agentName: string, args: Record<string, unknown>) {
  fake.received.length = 0;
  fake.next(
    { kind: 'reply', toolCalls: [{ name: 'knowledge_search', arguments: JSON.stringify(args) }] },
    { kind: 'reply', content: 'Done.' },
  );
  const res = await gw.owner.post<RunView>(runsUrl(), { agent: agentName, input: 'Look it up.' });
  expect(res.status, res.text).toBe(200);
  expect(res.body).toMatchObject({ status: 'completed', output: 'Done.' });
  const steps = await gw.owner.get<{ data: StepView[] }>(`${runsUrl()}/${res.body.id}/steps`);
  expect(steps.status).toBe(200);
  const tool = steps.body.data.find((s) => s.kind === 'tool');
  expect(tool?.toolName).toBe('knowledge_search');
  // What the model was handed as the tool's answer.
  const second = fake.received[1]?.body as { messages: Array<{ role: string; content: string }> };
  const last = second.messages.at(-1);
  expect(last?.role).toBe('tool');
  return { step: tool as StepView, content: JSON.parse(last?.content ?? 'null') };
}

type Citation = {
  knowledge_base: string;
  document_id: string;
  title: string;
  chunk_id: string;
  start_offset: number;
  end_offset: number;
  score: number;
  text: string;
};

let refundsDoc: string;

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 }, credits });
  gw = await gatewayWorkspace(app, {
    providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini', 'text-embedding-3-small'] }],
  });
  credits.grant(gw.workspaceId, 1_000_000_000);
  const other = await gw.owner.post<{ id: string }>('/api/workspaces', { name: 'Other' });
  expect(other.status).toBe(201);
  otherWs = other.body.id;

  handbook = await createKb(gw.workspaceId, 'handbook');
  refundsDoc = await upload(
    gw.workspaceId,
    handbook.id,
    'refunds.md',
    '# Refunds\n\nA refund is paid within fourteen days of the request.\n',
  );
  await upload(gw.workspaceId, handbook.id, 'animals.md', '# Animals\n\nPenguins live in the south.\n');
  const faq = await createKb(gw.workspaceId, 'faq');
  await upload(gw.workspaceId, faq.id, 'shipping.md', '# Shipping\n\nParcels ship on Mondays.\n');
  // The other workspace: a knowledge base of the same name, and one only it has.
  const otherHandbook = await createKb(otherWs, 'Handbook');
  await upload(otherWs, otherHandbook.id, 'refunds.md', `# Refunds\n\nA refund ${OTHER_CANARY} is paid in a year.\n`);
  const secret = await createKb(otherWs, 'secret');
  await upload(otherWs, secret.id, 'refunds.md', `# Refunds\n\nEvery refund ${OTHER_CANARY} is secret.\n`);
  await app.jobs.drain('knowledge.ingest');

  await agent('librarian', { knowledge_bases: ['handbook', 'faq'] });
  await agent('explicit', {
    knowledge_bases: ['handbook'],
    tools: [{ type: 'builtin', name: 'knowledge_search', requires_approval: false }],
  });
  await agent('stray', { knowledge_bases: ['secret'] });
  await agent('bare', { tools: [{ type: 'builtin', name: 'knowledge_search', requires_approval: false }] });
  await agent('plain', { tools: [{ type: 'builtin', name: 'calculator', requires_approval: false }] });
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

beforeEach(() => {
  fake.received.length = 0;
});

describe('happy', () => {
  it('answers the matching chunk with its citation, as the knowledge search finds it', async () => {
    const { step, content } = await searchRun('librarian', { query: 'refund' });
    expect(step.status).toBe('completed');
    const results = content.results as Citation[];
    expect(results).toHaveLength(1);
    const [hit] = results;
    expect(hit).toMatchObject({ knowledge_base: 'handbook', document_id: refundsDoc, title: 'Refunds' });
    expect(hit?.text).toContain('fourteen days');
    expect(content.pending_documents).toBe(0);
    // The same chunk, offsets and score as the knowledge base's own search.
    const direct = await gw.owner.post<SearchResult>(`${kbUrl(gw.workspaceId, handbook.id)}/search`, {
      query: 'refund',
    });
    expect(direct.status).toBe(200);
    const d = direct.body.data[0];
    expect(hit).toEqual({
      knowledge_base: 'handbook',
      document_id: d?.documentId,
      title: d?.title,
      chunk_id: d?.chunkId,
      start_offset: d?.startOffset,
      end_offset: d?.endOffset,
      score: d?.score,
      text: d?.text,
    });
  });

  it('searches every attached knowledge base, or the one named, and keeps to top_k', async () => {
    const all = await searchRun('librarian', { query: 'refund or parcels or penguins', top_k: 2 });
    const names = (all.content.results as Citation[]).map((r) => r.knowledge_base);
    expect(names).toHaveLength(2);
    const one = await searchRun('librarian', { query: 'parcels or refund', knowledge_base: 'FAQ' });
    const results = one.content.results as Citation[];
    expect(results.map((r) => [r.knowledge_base, r.text.includes('Mondays')])).toEqual([['faq', true]]);
  });

  it('is offered to an agent with knowledge bases that does not list it, and described', async () => {
    fake.next({ kind: 'reply', content: 'Hello.' });
    const res = await gw.owner.post<RunView>(runsUrl(), { agent: 'librarian', input: 'Hi' });
    expect(res.status, res.text).toBe(200);
    const body = fake.received[0]?.body as {
      tools?: Array<{ type: string; function: { name: string; description: string } }>;
    };
    expect(body.tools?.map((t) => t.function.name)).toEqual(['knowledge_search']);
    expect(body.tools?.[0]?.function.description).toContain('handbook, faq');
  });

  it('is listed once for an agent that names it too, and not offered to one without knowledge bases', async () => {
    fake.next({ kind: 'reply', content: 'Hello.' }, { kind: 'reply', content: 'Hello.' });
    await gw.owner.post<RunView>(runsUrl(), { agent: 'explicit', input: 'Hi' });
    await gw.owner.post<RunView>(runsUrl(), { agent: 'plain', input: 'Hi' });
    const names = (i: number) => {
      const body = fake.received[i]?.body as { tools?: Array<{ function: { name: string } }> } | undefined;
      return body?.tools?.map((t) => t.function.name) ?? [];
    };
    expect(names(0)).toEqual(['knowledge_search']);
    expect(names(1)).toEqual(['calculator']);
  });
});

describe('hybrid knowledge base', () => {
  it("searches hybrid by default, and the query's embedding is metered to the run", async () => {
    const res = await gw.owner.post<KnowledgeBaseView>(kbUrl(gw.workspaceId), {
      name: 'vectors',
      embeddingModel: 'text-embedding-3-small',
    });
    expect(res.status, res.text).toBe(201);
    await upload(gw.workspaceId, res.body.id, 'seals.md', '# Seals\n\nSeals rest on the ice floes.\n');
    await app.jobs.drain('knowledge.ingest');
    await agent('vectorian', { knowledge_bases: ['vectors'] });
    fake.received.length = 0;
    fake.next(
      { kind: 'reply', toolCalls: [{ name: 'knowledge_search', arguments: '{"query":"seals on ice"}' }] },
      { kind: 'ok' },
      { kind: 'reply', content: 'Done.' },
    );
    const run = await gw.owner.post<RunView>(runsUrl(), { agent: 'vectorian', input: 'Where do seals rest?' });
    expect(run.body).toMatchObject({ status: 'completed', output: 'Done.' });
    const sent = fake.received[2]?.body as { messages: Array<{ role: string; content: string }> } | undefined;
    const toolAnswer = sent?.messages.at(-1);
    expect(JSON.parse(toolAnswer?.content ?? 'null').results[0].text).toContain('ice floes');
    expect(fake.received[1]?.path).toMatch(/\/embeddings$/);
    await app.modules.gateway.service.usage.flush();
    const usage = (await app.db.system((tx) =>
      tx.execute(sql`select endpoint from usage_events where request_id = ${run.body.id} order by endpoint`),
    )) as unknown as { rows: Array<{ endpoint: string }> };
    expect(usage.rows.map((r) => r.endpoint)).toEqual(['chat.completions', 'chat.completions', 'embeddings']);
  });
});

describe('errors', () => {
  it('answers knowledge_base_not_found for a name not attached to the agent', async () => {
    const { step, content } = await searchRun('explicit', { query: 'refund', knowledge_base: 'faq' });
    expect(step).toMatchObject({ status: 'failed', errorCode: 'knowledge_base_not_found' });
    expect(content.error.code).toBe('knowledge_base_not_found');
  });

  it('answers knowledge_base_not_found when the agent has no knowledge base', async () => {
    const { step } = await searchRun('bare', { query: 'refund' });
    expect(step).toMatchObject({ status: 'failed', errorCode: 'knowledge_base_not_found' });
  });

  it('answers invalid_arguments for a query out of bounds or white space only', async () => {
    const long = await searchRun('librarian', { query: 'a'.repeat(2001) });
    expect(long.step).toMatchObject({ status: 'failed', errorCode: 'invalid_arguments' });
    const blank = await searchRun('librarian', { query: '   ' });
    expect(blank.step).toMatchObject({ status: 'failed', errorCode: 'invalid_arguments' });
    const topK = await searchRun('librarian', { query: 'refund', top_k: 21 });
    expect(topK.step).toMatchObject({ status: 'failed', errorCode: 'invalid_arguments' });
  });

  it('answers knowledge_base_processing while none of its documents is ready', async () => {
    const late = await createKb(gw.workspaceId, 'late');
    await upload(gw.workspaceId, late.id, 'late.md', '# Late\n\nA refund arrives late.\n');
    await agent('waiting', { knowledge_bases: ['late'] });
    const { step, content } = await searchRun('waiting', { query: 'refund' });
    expect(step).toMatchObject({ status: 'failed', errorCode: 'knowledge_base_processing' });
    expect(content.error.code).toBe('knowledge_base_processing');
    // Another attached knowledge base answers meanwhile.
    await agent('mixed', { knowledge_bases: ['late', 'handbook'] });
    const mixed = await searchRun('mixed', { query: 'refund' });
    expect((mixed.content.results as Citation[]).map((r) => r.knowledge_base)).toEqual(['handbook']);
    await app.jobs.drain('knowledge.ingest');
  });
});

describe('security', () => {
  it("never searches another workspace's knowledge bases, even one of the same name", async () => {
    const { step, content } = await searchRun('stray', { query: 'refund' });
    expect(step).toMatchObject({ status: 'failed', errorCode: 'knowledge_base_not_found' });
    expect(JSON.stringify(content)).not.toContain(OTHER_CANARY);
    const same = await searchRun('librarian', { query: `refund or ${OTHER_CANARY}`, knowledge_base: 'handbook' });
    expect((same.content.results as Citation[]).map((r) => r.document_id)).toEqual([refundsDoc]);
    expect(JSON.stringify(same.content)).not.toContain(OTHER_CANARY);
  });
});
