import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { logIn, makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY } from '../../platform/clock.ts';
import { dueDateOf, PRIVACY_OVERDUE_JOB, type RequestView } from './index.ts';

/**
 * Privacy requests through the real app: a user's rectification request and their own
 * list, the operators' list and answers, the one-month deadline, and the overdue alert
 * (the pg-boss job, mail through the outbox) sent once per request on a moved clock.
 */

type List = { data: RequestView[]; nextCursor: string | null };

let app: TestApp;
let op: SignedInClient;
let operator: SignedInClient;

beforeAll(async () => {
  app = await createTestApp();
  op = await signUp(app);
  await makeOperator(app, op.userId);
  operator = await logIn(app, op.email, op.password);
});

/** Moves the clock; sessions may have expired on the way, so the operator signs in again. */
async function moveClockTo(at: Date) {
  app.clock.set(at);
  operator = await logIn(app, op.email, op.password);
}
afterAll(async () => {
  await app?.close();
});

async function overdueMails(requestId: string) {
  const all = await app.modules.notifications.service.listOutbox({ limit: 1000 });
  return all.filter((m) => m.tag === 'privacy.request_overdue' && m.text.includes(requestId));
}

async function runOverdueJob() {
  await app.jobs.send(PRIVACY_OVERDUE_JOB, {});
  return app.jobs.drain(PRIVACY_OVERDUE_JOB);
}

describe('happy', () => {
  it('records a rectification request, due one calendar month later, and lists it for its subject only', async () => {
    const alice = await signUp(app);
    const bob = await signUp(app);
    const res = await alice.post<RequestView>('/api/me/privacy/rectification', {
      description: 'My surname is misspelt on invoices:\nit is "Müller", not "Muller".',
    });
    expect(res.status).toBe(201);
    const now = app.clock.now();
    expect(res.body).toMatchObject({
      type: 'rectification',
      userId: alice.userId,
      workspaceId: null,
      status: 'received',
      details: 'My surname is misspelt on invoices:\nit is "Müller", not "Muller".',
      outcome: null,
      receivedAt: now.toISOString(),
      dueAt: dueDateOf(now).toISOString(),
      completedAt: null,
      overdue: false,
    });
    expect(res.body.id).toMatch(/^prq_/);

    const mine = await alice.get<List>('/api/me/privacy/requests');
    expect(mine.status).toBe(200);
    expect(mine.body.data.map((r) => r.id)).toEqual([res.body.id]);
    // Another user sees none of it.
    const theirs = await bob.get<List>('/api/me/privacy/requests');
    expect(theirs.body.data).toEqual([]);
  });

  it('lets operators list requests by status, type, subject and overdue, and answer a rectification', async () => {
    const carol = await signUp(app);
    const opened = await carol.post<RequestView>('/api/me/privacy/rectification', { description: 'Wrong name.' });
    const byUser = await operator.get<List>(`/api/operator/privacy/requests?userId=${carol.userId}`);
    expect(byUser.body.data.map((r) => r.id)).toEqual([opened.body.id]);
    const received = await operator.get<List>('/api/operator/privacy/requests?status=received&type=rectification');
    expect(received.body.data.map((r) => r.id)).toContain(opened.body.id);
    const erasures = await operator.get<List>('/api/operator/privacy/requests?type=erasure');
    expect(erasures.body.data.map((r) => r.id)).not.toContain(opened.body.id);

    const started = await operator.post<RequestView>(`/api/operator/privacy/requests/${opened.body.id}`, {
      status: 'in_progress',
    });
    expect(started.status).toBe(200);
    expect(started.body).toMatchObject({ status: 'in_progress', completedAt: null });
    app.clock.advance(60_000);
    const done = await operator.post<RequestView>(`/api/operator/privacy/requests/${opened.body.id}`, {
      status: 'completed',
      outcome: 'Name corrected.',
    });
    expect(done.body).toMatchObject({
      status: 'completed',
      outcome: 'Name corrected.',
      completedAt: app.clock.now().toISOString(),
    });
    // The subject sees the answer.
    const mine = await carol.get<List>('/api/me/privacy/requests');
    expect(mine.body.data[0]).toMatchObject({ id: opened.body.id, status: 'completed', outcome: 'Name corrected.' });
    // A closed request can be asked again.
    const again = await carol.post<RequestView>('/api/me/privacy/rectification', { description: 'Another one.' });
    expect(again.status).toBe(201);
  });

  it('pages through a user’s requests', async () => {
    const dave = await signUp(app);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await dave.post<RequestView>('/api/me/privacy/rectification', { description: `Fix ${i}` });
      ids.push(r.body.id);
      await operator.post(`/api/operator/privacy/requests/${r.body.id}`, { status: 'rejected', outcome: 'Not ours.' });
    }
    const first = await dave.get<List>('/api/me/privacy/requests?limit=2');
    expect(first.body.data.map((r) => r.id)).toEqual([ids[2], ids[1]]);
    expect(first.body.nextCursor).toBe(ids[1]);
    const second = await dave.get<List>(`/api/me/privacy/requests?limit=2&cursor=${first.body.nextCursor}`);
    expect(second.body.data.map((r) => r.id)).toEqual([ids[0]]);
  });
});

describe('deadline', () => {
  it('is one calendar month after receipt, the month’s last day when it has no such day', () => {
    expect(dueDateOf(new Date('2026-01-15T10:20:30.000Z')).toISOString()).toBe('2026-02-15T10:20:30.000Z');
    expect(dueDateOf(new Date('2026-01-31T23:00:00.000Z')).toISOString()).toBe('2026-02-28T23:00:00.000Z');
    expect(dueDateOf(new Date('2028-01-31T08:00:00.000Z')).toISOString()).toBe('2028-02-29T08:00:00.000Z');
    expect(dueDateOf(new Date('2026-12-31T00:00:00.000Z')).toISOString()).toBe('2027-01-31T00:00:00.000Z');
    expect(dueDateOf(new Date('2026-03-31T12:00:00.000Z')).toISOString()).toBe('2026-04-30T12:00:00.000Z');
  });

  it('alerts the operators once per overdue request, from its due date on, and not after it is answered', async () => {
    const erin = await signUp(app);
    const late = await erin.post<RequestView>('/api/me/privacy/rectification', { description: 'Please fix.' });
    const frank = await signUp(app);
    const answered = await frank.post<RequestView>('/api/me/privacy/rectification', { description: 'Fix too.' });
    const due = new Date(late.body.dueAt).getTime();

    // One day before the deadline: not overdue, no mail.
    await moveClockTo(new Date(due - DAY));
    await runOverdueJob();
    expect(await overdueMails(late.body.id)).toEqual([]);
    const notYet = await operator.get<List>('/api/operator/privacy/requests?overdue=true');
    expect(notYet.body.data.map((r) => r.id)).not.toContain(late.body.id);
    await operator.post(`/api/operator/privacy/requests/${answered.body.id}`, {
      status: 'completed',
      outcome: 'Done.',
    });

    // The day after: overdue, one mail to the operator, audited; a second run sends nothing more.
    await moveClockTo(new Date(due + DAY));
    await runOverdueJob();
    await runOverdueJob();
    const mails = await overdueMails(late.body.id);
    expect(mails).toHaveLength(1);
    expect(mails[0]?.to).toBe(operator.email);
    expect(mails[0]?.text).not.toContain('Please fix.');
    expect(await overdueMails(answered.body.id)).toEqual([]);

    const overdue = await operator.get<List>('/api/operator/privacy/requests?overdue=true');
    const row = overdue.body.data.find((r) => r.id === late.body.id);
    expect(row).toMatchObject({ overdue: true, overdueAlertedAt: new Date(due + DAY).toISOString() });
    expect(overdue.body.data.map((r) => r.id)).not.toContain(answered.body.id);
    // Audit events are visible only to system work (row-level security on server Postgres).
    const events = await app.db.system(async (tx) => {
      const res = (await tx.execute(
        sql`select action from audit_events where chain = 'platform' and target_id = ${late.body.id} order by seq`,
      )) as unknown as { rows: Array<{ action: string }> };
      return res.rows;
    });
    expect(events.map((e) => e.action)).toEqual(['privacy.rectification_requested', 'privacy.request_overdue']);
    // The subject sees it overdue too.
    const mine = await (await logIn(app, erin.email, erin.password)).get<List>('/api/me/privacy/requests');
    expect(mine.body.data[0]).toMatchObject({ id: late.body.id, overdue: true });
  });
});

describe('errors', () => {
  it('refuses a second open request of the same type with 409 request_pending, recording nothing', async () => {
    const gina = await signUp(app);
    expect((await gina.post('/api/me/privacy/rectification', { description: 'One.' })).status).toBe(201);
    const dup = await gina.post('/api/me/privacy/rectification', { description: 'Two.' });
    expect(dup.status).toBe(409);
    expect(dup.body.code).toBe('request_pending');
    expect((await gina.get<List>('/api/me/privacy/requests')).body.data).toHaveLength(1);
  });

  it('refuses empty, oversized or control-character descriptions with 400', async () => {
    const hal = await signUp(app);
    for (const description of ['', '   ', 'x'.repeat(4001), 'bad\u0000byte', 'bell\u0007']) {
      const res = await hal.post('/api/me/privacy/rectification', { description });
      expect(res.status, JSON.stringify(description)).toBe(400);
      expect(res.body.code).toBe('validation_failed');
    }
    expect((await hal.get<List>('/api/me/privacy/requests')).body.data).toEqual([]);
  });

  it('answers operator mistakes with stable codes and changes nothing', async () => {
    const ivy = await signUp(app);
    const r = await ivy.post<RequestView>('/api/me/privacy/rectification', { description: 'Fix.' });
    const url = `/api/operator/privacy/requests/${r.body.id}`;
    const noReason = await operator.post(url, { status: 'rejected' });
    expect(noReason.status).toBe(400);
    expect(noReason.body.code).toBe('validation_failed');
    expect((await operator.post(url, { status: 'completed' })).status).toBe(200);
    const closed = await operator.post(url, { status: 'rejected', outcome: 'Too late.' });
    expect(closed.status).toBe(409);
    expect(closed.body.code).toBe('request_closed');
    const unknown = await operator.post('/api/operator/privacy/requests/prq_01JD6F3Q4N8ZK5R2W7XH9YB0C1', {
      status: 'completed',
    });
    expect(unknown.status).toBe(404);
    expect((await operator.post('/api/operator/privacy/requests/nonsense', { status: 'completed' })).status).toBe(404);

    // A restriction is Berth's to answer, not an operator's.
    await ivy.post('/api/me/privacy/restriction');
    const mine = await ivy.get<List>('/api/me/privacy/requests');
    const restriction = mine.body.data.find((x) => x.type === 'restriction');
    expect(restriction?.status).toBe('completed');
    const erasure = await app.db.system((tx) =>
      app.modules.privacy.service.requests.open(tx, { type: 'erasure', userId: ivy.userId }),
    );
    const automated = await operator.post(`/api/operator/privacy/requests/${erasure.id}`, { status: 'completed' });
    expect(automated.status).toBe(409);
    expect(automated.body.code).toBe('request_not_manual');
    expect((await ivy.get<List>('/api/me/privacy/requests')).body.data.find((x) => x.id === erasure.id)?.status).toBe(
      'received',
    );
  });
});

describe('security', () => {
  it('answers 401 to anonymous callers and 403 to users on operator routes', async () => {
    const anon = new TestClient(app);
    expect((await anon.get('/api/me/privacy/requests')).status).toBe(401);
    expect((await anon.post('/api/me/privacy/rectification', { description: 'x' })).status).toBe(401);
    expect((await anon.get('/api/operator/privacy/requests')).status).toBe(401);
    const jo = await signUp(app);
    const r = await jo.post<RequestView>('/api/me/privacy/rectification', { description: 'Mine.' });
    const list = await jo.get('/api/operator/privacy/requests');
    expect(list.status).toBe(403);
    expect(list.body.code).toBe('forbidden');
    const self = await jo.post(`/api/operator/privacy/requests/${r.body.id}`, { status: 'completed' });
    expect(self.status).toBe(403);
    expect((await jo.get<List>('/api/me/privacy/requests')).body.data[0]?.status).toBe('received');
  });

  it('does not log what a subject wrote', async () => {
    const kim = await signUp(app);
    const marker = `rectify-marker-${Date.now()}`;
    await kim.post('/api/me/privacy/rectification', { description: marker });
    expect(app.logs.join('\n')).not.toContain(marker);
  });
});
