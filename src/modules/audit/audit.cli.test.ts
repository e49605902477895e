import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { signUp } from '../../../test/helpers/identity.ts';
import { openPglite } from '../../platform/db/db.ts';
import type { AuditEventView, VerifyReport } from './index.ts';

/** `berth audit verify` offline on an embedded data directory, in process. */
let dataDir: string;

async function berth(args: string[]) {
  return berthInProcess(args, { BERTH_DATA_DIR: dataDir });
}

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'berth-audit-cli-'));
  const created = await berth([
    'admin',
    'create',
    '--email',
    'op@example.test',
    '--password',
    'a long operator passphrase',
    '--workspace',
    'Ops',
    '--json',
  ]);
  expect(created.code).toBe(0);
});
afterAll(() => {
  rmSync(dataDir, { recursive: true, force: true });
});

describe('happy', () => {
  it('verifies every chain offline (the platform setup and the new workspace) and exits 0', async () => {
    const res = await berth(['audit', 'verify', '--json']);
    expect(res.code).toBe(0);
    const body = JSON.parse(res.stdout) as { ok: boolean; chains: VerifyReport[] };
    expect(body.ok).toBe(true);
    expect(body.chains.map((c) => c.chain)[0]).toBe('platform');
    expect(body.chains).toHaveLength(2);
    expect(body.chains.every((c) => c.ok && c.checked >= 1 && c.publicKey !== null)).toBe(true);
    const human = await berth(['audit', 'verify', '--workspace', body.chains[1]?.chain ?? '']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^ok +workspace ws_/);
  });

  it('lists and verifies over HTTP with an API key (its workspace by default)', async () => {
    const app = await createTestApp();
    try {
      const owner = await signUp(app);
      const ws = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Remote' })).body.id;
      const key = await owner.post<{ secret: string }>(`/api/workspaces/${ws}/keys`, {
        name: 'cli',
        scopes: ['workspace:admin'],
      });
      expect(key.status).toBe(201);
      const url = await app.http.listen({ host: '127.0.0.1', port: 0 });
      const list = await berth(['audit', 'list', '--url', url, '--api-key', key.body.secret, '--json']);
      expect(list.code).toBe(0);
      const page = JSON.parse(list.stdout) as { data: AuditEventView[] };
      expect(page.data.map((e) => e.action)).toEqual(['key.created', 'workspace.created']);
      const human = await berth(['audit', 'list', '--url', url, '--api-key', key.body.secret, '--action', 'key.*']);
      expect(human.stdout).toContain('key.created');
      expect(human.stdout).not.toContain('workspace.created');
      const verified = await berth(['audit', 'verify', '--url', url, '--api-key', key.body.secret]);
      expect(verified.code).toBe(0);
      expect(verified.stdout).toContain(`ok      workspace ${ws}: 2 event(s)`);
    } finally {
      await app.close();
    }
  });
});

describe('errors', () => {
  it('a row edited behind Berth’s back: exit code 6, naming the chain and seq', async () => {
    const db = await openPglite({ dataDir: path.join(dataDir, 'pgdata') });
    try {
      await db.exec(`begin; set local session_replication_role = replica;
        update audit_events set action = 'platform.nothing' where chain = 'platform' and seq = 1; commit;`);
    } finally {
      await db.close();
    }
    const res = await berth(['audit', 'verify']);
    expect(res.code).toBe(6);
    expect(res.stdout).toContain('BROKEN  platform chain: first broken seq 1 (hash_mismatch)');
    expect(res.stderr).toContain('does not verify');
    const json = await berth(['audit', 'verify', '--json']);
    expect(json.code).toBe(6);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, chains: [{ firstBrokenSeq: 1 }, { ok: true }] });
  });

  it('over HTTP without a workspace or API key it says what is missing', async () => {
    const res = await berth(['audit', 'list', '--url', 'http://127.0.0.1:9']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('--workspace');
  });
});
