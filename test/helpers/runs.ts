import { expect } from 'vitest';
import type { StepView } from '../../src/modules/agents/agents.runs.schemas.ts';
import type { TestClient } from './client.ts';

/**
 * Agent run test helpers: a published agent (a careful calculator unless `extra` says
 * otherwise), a run's steps, and the server-sent events of a response body.
 *
 * @example const id = await publishedAgent(gw.owner, gw.workspaceId, 'calc');
 */
export async function publishedAgent(
  client: TestClient,
  workspaceId: string,
  name: string,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const res = await client.post<{ id: string }>(`/api/workspaces/${workspaceId}/agents/import?publish=true`, {
    name,
    model: 'gpt-4o-mini',
    instructions: 'You are a careful calculator.',
    tools: [{ type: 'builtin', name: 'calculator', requires_approval: false }],
    ...extra,
  });
  expect(res.status, res.text).toBe(201);
  return res.body.id;
}

/** The steps of a run, in order. */
export async function runSteps(client: TestClient, workspaceId: string, runId: string): Promise<StepView[]> {
  const res = await client.get<{ data: StepView[] }>(`/api/workspaces/${workspaceId}/runs/${runId}/steps`);
  expect(res.status).toBe(200);
  return res.body.data;
}

/** The server-sent events of a response body: id, event and JSON data of each. */
export function sseEvents(text: string) {
  return text
    .split('\n\n')
    .filter((f) => f.trim() !== '' && !f.startsWith(':'))
    .map((f) => {
      const lines = f.split('\n');
      const field = (name: string) => lines.find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2) ?? null;
      return { id: Number(field('id')), event: field('event'), data: JSON.parse(field('data') ?? 'null') };
    });
}
