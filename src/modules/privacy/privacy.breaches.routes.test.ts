import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { logIn, makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { HOUR, MINUTE } from '../../platform/clock.ts';
import type { BreachView } from './privacy.breaches.schemas.ts';

/**
 * The breach register (Art. 33): each breach keeps its 72-hour deadline from awareness;
 * views flag it overdue once the deadline passes unmet, or notified late; changes are
 * audited; operators only.
 */

let app: TestApp;
let op: SignedInClient;

beforeAll(async () => {
  app = await createTestApp();
  op = await signUp(app);
  await makeOperator(app, op.userId);
});
afterAll(async () => {
  await app?.close();
});

/** Moves Berth's clock; sessions idle that long end, so the operator signs in again. */
async function advance(ms: number) {
  app.clock.advance(ms);
  op = await logIn(app, op.email, op.password);
}

const ago = (ms: number) => new Date(app.clock.now().getTime() - ms).toISOString();

function body(over: Record<string, unknown> = {}) {
  return {
    description: 'A backup bucket was readable without credentials.\nFound by an internal scan.',
    dataCategories: ['account', 'security'],
    subjectsCount: 1200,
    awareAt: ago(10 * HOUR),
    ...over,
  };
}

async function record(over: Record<string, unknown> = {}) {
  const res = await op.post<BreachView>('/api/operator/privacy/breaches', body(over));
  if (res.status !== 201) throw new Error(`record: ${res.status} ${res.text}`);
  return res.body;
}

async function auditActions(target: string): Promise<string[]> {
  const res = (await app.db.system((tx) =>
    tx.execute(sql`select action from audit_events where target_id = ${target} order by seq`),
  )) as unknown as { rows: Array<{ action: string }> };
  return res.rows.map((r) => r.action);
}

describe('happy', () => {
  it('stores the 72-hour deadline and flags it overdue once it passes unmet', async () => {
    const b = await record();
    expect(b.id).toMatch(/^brc_/);
    expect(new Date(b.notifyDeadline).getTime() - new Date(b.awareAt).getTime()).toBe(72 * HOUR);
    expect(b).toMatchObject({ overdue: false, notifiedLate: false, authorityNotifiedAt: null, subjectsCount: 1200 });

    // 10 h after awareness now; 62 h later the deadline is one minute away, then passed.
    await advance(62 * HOUR - MINUTE);
    expect((await op.get<BreachView>(`/api/operator/privacy/breaches/${b.id}`)).body.overdue).toBe(false);
    await advance(2 * MINUTE);
    const late = await op.get<{ data: BreachView[] }>('/api/operator/privacy/breaches');
    expect(late.body.data.find((x) => x.id === b.id)?.overdue).toBe(true);

    const told = await op.patch<BreachView>(`/api/operator/privacy/breaches/${b.id}`, {
      authorityNotifiedAt: app.clock.now().toISOString(),
      measures: 'Bucket made private; access logs reviewed.',
    });
    expect(told.status).toBe(200);
    expect(told.body).toMatchObject({
      overdue: false,
      notifiedLate: true,
      measures: 'Bucket made private; access logs reviewed.',
      subjectsNotifiedAt: null,
    });
    expect(await auditActions(b.id)).toEqual(['breach.recorded', 'breach.updated']);
  });

  it('is not late when the authority is told within 72 hours', async () => {
    const b = await record({ awareAt: ago(HOUR) });
    const res = await op.patch<BreachView>(`/api/operator/privacy/breaches/${b.id}`, {
      authorityNotifiedAt: ago(30 * MINUTE),
      subjectsNotifiedAt: ago(10 * MINUTE),
    });
    expect(res.body).toMatchObject({ overdue: false, notifiedLate: false });
    expect(res.body.subjectsNotifiedAt).not.toBeNull();
  });
});

describe('errors', () => {
  it('refuses awareness in the future, notifications outside [awareAt, now], unknown categories and empty changes', async () => {
    const future = await op.post('/api/operator/privacy/breaches', body({ awareAt: ago(-HOUR) }));
    expect(future.status).toBe(400);
    expect(future.body).toMatchObject({ code: 'invalid_date_range' });
    const unknown = await op.post('/api/operator/privacy/breaches', body({ dataCategories: ['gossip'] }));
    expect(unknown.body).toMatchObject({ code: 'unknown_data_category' });
    const nul = await op.post('/api/operator/privacy/breaches', body({ description: 'bad\u0000byte' }));
    expect(nul.status).toBe(400);

    const b = await record({ awareAt: ago(2 * HOUR) });
    const before = await op.patch(`/api/operator/privacy/breaches/${b.id}`, { authorityNotifiedAt: ago(3 * HOUR) });
    expect(before.status).toBe(400);
    expect(before.body).toMatchObject({ code: 'invalid_date_range' });
    const after = await op.patch(`/api/operator/privacy/breaches/${b.id}`, { subjectsNotifiedAt: ago(-HOUR) });
    expect(after.body).toMatchObject({ code: 'invalid_date_range' });
    const empty = await op.patch(`/api/operator/privacy/breaches/${b.id}`, {});
    expect(empty.status).toBe(400);
    expect((await op.get<BreachView>(`/api/operator/privacy/breaches/${b.id}`)).body.authorityNotifiedAt).toBeNull();
    expect(await auditActions(b.id)).toEqual(['breach.recorded']);

    const missing = await op.patch('/api/operator/privacy/breaches/brc_00000000000000000000000000', { measures: 'x' });
    expect(missing.status).toBe(404);
  });
});

describe('security', () => {
  it('is for operators only', async () => {
    const user = await signUp(app);
    const anon = new TestClient(app);
    const b = await record();
    expect((await user.post('/api/operator/privacy/breaches', body())).status).toBe(403);
    expect((await anon.post('/api/operator/privacy/breaches', body())).status).toBe(401);
    expect((await user.get('/api/operator/privacy/breaches')).status).toBe(403);
    expect((await user.get(`/api/operator/privacy/breaches/${b.id}`)).status).toBe(403);
    expect((await user.patch(`/api/operator/privacy/breaches/${b.id}`, { measures: 'x' })).status).toBe(403);
    expect((await op.get<BreachView>(`/api/operator/privacy/breaches/${b.id}`)).body.measures).toBeNull();
  });
});
