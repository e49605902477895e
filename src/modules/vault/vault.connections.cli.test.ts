import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { listen } from '../../../test/helpers/gateway.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { seedConnection } from './vault.connections.matrix.ts';
import type { ConnectionView } from './vault.connections.schemas.ts';

/** `berth connections list|disconnect` in process, over HTTP against a listening test app, with an API key. */

let app: TestApp;
let url: string;
let owner: SignedInClient;
let wsId: string;
let apiKey: string;
let providerId: string;

async function berth(args: string[]) {
  return berthInProcess(args, { BERTH_URL: url, BERTH_API_KEY: apiKey });
}

beforeAll(async () => {
  app = await createTestApp();
  url = await listen(app);
  owner = await signUp(app);
  const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'CLI' });
  wsId = ws.body.id;
  const key = await owner.post<{ secret: string }>(`/api/workspaces/${wsId}/keys`, {
    name: 'cli',
    scopes: ['workspace:admin'],
  });
  expect(key.status, key.text).toBe(201);
  apiKey = key.body.secret;
  const p = await owner.post<{ id: string }>(`/api/workspaces/${wsId}/oauth-providers`, {
    name: 'acme',
    authorizationUrl: 'https://auth.example.com/authorize',
    tokenUrl: 'https://auth.example.com/token',
    clientId: 'client',
    clientSecret: 'secret',
  });
  providerId = p.body.id;
});

afterAll(async () => {
  await app?.close();
});

describe('happy', () => {
  it('lists the key member’s connections and disconnects one', async () => {
    const id = await seedConnection(app, { workspaceId: wsId, userId: owner.userId, providerId });
    const listed = await berth(['connections', 'list', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const body = JSON.parse(listed.stdout) as { data: ConnectionView[] };
    expect(body.data.find((c) => c.id === id)).toMatchObject({ provider: 'acme', mine: true, status: 'active' });
    const human = await berth(['connections', 'list']);
    expect(human.stdout).toMatch(new RegExp(`^${id} +acme +active +personal +yours`, 'm'));

    const gone = await berth(['connections', 'disconnect', id, '--json']);
    expect(gone.code, gone.stderr).toBe(0);
    expect(JSON.parse(gone.stdout)).toEqual({ id, revoked: false });
    const rows = (await app.db.system((tx) =>
      tx.execute(sql`select count(*)::int as n from oauth_connection_tokens where connection_id = ${id}`),
    )) as unknown as { rows: Array<{ n: number }> };
    expect(rows.rows[0]?.n).toBe(0);
    expect((await berth(['connections', 'list'])).stdout).toBe('No connections.');
  });
});

describe('errors', () => {
  it('exits 4 with not_found for an unknown connection, 2 without an API key', async () => {
    const unknown = await berth(['connections', 'disconnect', 'con_00000000000000000000000000']);
    expect(unknown.code).toBe(4);
    expect(unknown.stderr).toContain('No such connection');
    const noKey = await berthInProcess(['connections', 'list'], { BERTH_URL: url });
    expect(noKey.code).toBe(2);
  });
});
