import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import { DELETION_GRACE_DAYS, ERASURE_JOB, EXPORT_BUILD_JOB } from '../privacy/index.ts';
import type { AgentView } from './agents.schemas.ts';

/**
 * Agent definitions are the workspace's content (data map: `content`, workspace lifetime):
 * the owner's workspace export contains them, deleting the workspace deletes them, and
 * erasing the member who published a version leaves the version with their pseudonym.
 */
const app = useTestApp();

async function count(table: 'agents' | 'agent_versions', workspaceId: string): Promise<number> {
  const res = await app().db.system((tx) =>
    tx.execute(sql`select count(*)::int as n from ${sql.identifier(table)} where workspace_id = ${workspaceId}`),
  );
  return Number((res as unknown as { rows: Array<{ n: number }> }).rows[0]?.n ?? 0);
}

async function workspaceWithAgent(owner: SignedInClient, name: string) {
  const ws = (await owner.post<{ id: string }>('/api/workspaces', { name })).body.id;
  const made = await owner.post<AgentView>(`/api/workspaces/${ws}/agents`, {
    name: 'exported',
    model: 'gpt-4o-mini',
    instructions: 'Instructions the owner wrote.',
  });
  expect(made.status, made.text).toBe(201);
  await owner.post(`/api/workspaces/${ws}/agents/${made.body.id}/publish`);
  return { ws, agentId: made.body.id };
}

describe('happy', () => {
  it("is in the workspace owner's export, with its draft and versions", async () => {
    const owner = await signUp(app());
    const { ws, agentId } = await workspaceWithAgent(owner, 'Exported');
    const requested = await owner.post<{ id: string }>(`/api/workspaces/${ws}/privacy/exports`);
    expect(requested.status, requested.text).toBe(202);
    await app().jobs.drain(EXPORT_BUILD_JOB);
    const mails = await app().modules.notifications.service.listOutbox({ limit: 200 });
    const mail = mails.find((m) => m.to === owner.email && m.text.includes(requested.body.id));
    const link = /http:\/\/berth\.test(\/api\/privacy\/exports\/\S+)/.exec(mail?.text ?? '')?.[1];
    expect(link).toBeTruthy();
    const res = await new TestClient(app()).get(link ?? '');
    expect(res.status).toBe(200);
    const archive = JSON.parse(res.text) as { data: Record<string, Array<Record<string, unknown>>> };
    expect(archive.data.agents).toEqual([
      expect.objectContaining({
        id: agentId,
        name: 'exported',
        draft: expect.objectContaining({ instructions: 'Instructions the owner wrote.' }),
      }),
    ]);
    expect(archive.data.agent_versions).toEqual([
      expect.objectContaining({ agent_id: agentId, version: 1, created_by: owner.userId }),
    ]);
  });

  it('goes with the workspace when it is deleted', async () => {
    const owner = await signUp(app());
    const { ws } = await workspaceWithAgent(owner, 'Doomed');
    expect(await count('agents', ws)).toBe(1);
    expect(await count('agent_versions', ws)).toBe(1);
    const res = await owner.delete(`/api/workspaces/${ws}`, { confirmName: 'Doomed' });
    expect(res.status, res.text).toBeLessThan(300);
    expect(await count('agents', ws)).toBe(0);
    expect(await count('agent_versions', ws)).toBe(0);
  });

  it("erasing the member who published a version keeps the version under the member's pseudonym", async () => {
    const owner = await signUp(app());
    const ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Shared' })).body.id;
    const member = await signUp(app());
    const scope = { workspaceId: ws, actor: { type: 'user' as const, userId: owner.userId }, role: 'owner' as const };
    const { token } = await app().modules.workspaces.service.invite({ scope, email: member.email, role: 'member' });
    await app().modules.workspaces.service.acceptInvitation({ token, userId: member.userId });
    const made = await member.post<AgentView>(`/api/workspaces/${ws}/agents`, { name: 'kept', model: 'm' });
    await member.post(`/api/workspaces/${ws}/agents/${made.body.id}/publish`);

    expect((await member.post('/api/me/deletion', { password: member.password })).status).toBe(202);
    app().clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
    await app().jobs.send(ERASURE_JOB, {});
    expect(await app().jobs.drain(ERASURE_JOB)).toMatchObject({ failed: 0 });

    const version = await app().modules.agents.service.getVersion({ scope, agent: made.body.id, version: 1 });
    expect(version.definition.name).toBe('kept');
    expect(version.createdBy).not.toBe(member.userId);
    expect(version.createdBy).toMatch(/^anon_/);
  });
});
