import { expect } from 'vitest';
import { EXPORT_BUILD_JOB, type ExportView } from '../../src/modules/privacy/privacy.export.service.ts';
import type { TestApp } from './app.ts';
import { TestClient } from './client.ts';
import type { SignedInClient } from './identity.ts';

/**
 * Requests an export at `path` (a user's own or a workspace's), builds it and downloads it
 * through the link mailed to the requester: the archive as text and parsed.
 *
 * @example const { archive } = await exportOf<Archive>(app, owner, `/api/workspaces/${ws}/privacy/export`);
 */
export async function exportOf<A>(
  app: TestApp,
  client: SignedInClient,
  path: string,
): Promise<{ text: string; archive: A }> {
  const req = await client.post<ExportView>(path);
  expect(req.status, req.text).toBe(202);
  await app.jobs.drain(EXPORT_BUILD_JOB);
  const view = await client.get<ExportView>(`/api/me/privacy/exports/${req.body.id}`);
  expect(view.body.status, view.text).toBe('ready');
  const mails = await app.modules.notifications.service.listOutbox({ limit: 500 });
  const mail = mails.find((m) => m.to === client.email && m.text.includes(req.body.id));
  const link = /http:\/\/berth\.test(\/api\/privacy\/exports\/\S+)/.exec(mail?.text ?? '')?.[1];
  if (!link) throw new Error('no export link in the outbox');
  const res = await new TestClient(app).get(link);
  expect(res.status, res.text).toBe(200);
  return { text: res.text, archive: JSON.parse(res.text) as A };
}
