import { type SQL, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { logIn, makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import { createLogger } from '../../platform/logger.ts';
import type { Mailer } from '../notifications/index.ts';
import { SUBPROCESSOR_NOTICE_CLAIM_STALE_MS, SUBPROCESSOR_NOTICES_JOB } from './index.ts';
import { subprocessorsRepo } from './privacy.subprocessors.repo.ts';
import type { ObjectionView, OperatorSubprocessorView, SubprocessorView } from './privacy.subprocessors.schemas.ts';
import { subprocessorsService } from './privacy.subprocessors.ts';

/**
 * The sub-processor registry: at least 30 days' notice on Berth's clock, every workspace
 * owner mailed once (by a job, claimed before sending), owners' objections once per
 * workspace, a public list, operators only for changes.
 */

let app: TestApp;
let op: SignedInClient;
let anon: TestClient;
let seq = 0;

beforeAll(async () => {
  app = await createTestApp();
  op = await signUp(app);
  await makeOperator(app, op.userId);
  anon = new TestClient(app);
});
afterAll(async () => {
  await app?.close();
});

async function rows<T>(query: SQL): Promise<T[]> {
  const res = (await app.db.system((tx) => tx.execute(query))) as unknown as { rows: T[] };
  return res.rows;
}

/** Moves Berth's clock; sessions idle that long end, so the operator signs in again. */
async function advance(ms: number) {
  app.clock.advance(ms);
  op = await logIn(app, op.email, op.password);
}

const inDays = (days: number, extraMs = 0) => new Date(app.clock.now().getTime() + days * DAY + extraMs).toISOString();

function body(over: Record<string, unknown> = {}) {
  return {
    name: `Mailer ${++seq}`,
    purpose: 'Delivers transactional email',
    dataCategories: ['account', 'communication'],
    region: 'EU (Frankfurt)',
    effectiveAt: inDays(30),
    ...over,
  };
}

async function register(over: Record<string, unknown> = {}) {
  const res = await op.post<SubprocessorView>('/api/operator/subprocessors', body(over));
  if (res.status !== 201) throw new Error(`register: ${res.status} ${res.text}`);
  return res.body;
}

async function workspace(owner: SignedInClient, name = 'Owned'): Promise<string> {
  const res = await owner.post<{ id: string }>('/api/workspaces', { name });
  if (res.status !== 201) throw new Error(`workspace: ${res.status} ${res.text}`);
  return res.body.id;
}

async function addMember(ownerId: string, workspaceId: string, role: 'admin' | 'member') {
  const member = await signUp(app);
  const scope = { workspaceId, actor: { type: 'user' as const, userId: ownerId }, role: 'owner' as const };
  const { token } = await app.modules.workspaces.service.invite({ scope, email: member.email, role });
  await app.modules.workspaces.service.acceptInvitation({ token, userId: member.userId });
  return member;
}

/** Notices of the sub-processor named `name` in the outbox, per recipient. */
async function noticesTo(name: string): Promise<Map<string, number>> {
  const found = await rows<{ to: string; n: number }>(
    sql`select to_address as "to", count(*)::int as n from email_outbox
        where tag = 'privacy.subprocessor_notice' and subject like ${`%sub-processor ${name} from%`} group by to_address`,
  );
  return new Map(found.map((r) => [r.to, r.n]));
}

async function ownerCount(): Promise<number> {
  const [r] = await rows<{ n: number }>(
    sql`select count(distinct user_id)::int as n from memberships where role = 'owner'`,
  );
  return r?.n ?? 0;
}

async function auditActions(target: string): Promise<string[]> {
  const found = await rows<{ action: string }>(
    sql`select action from audit_events where target_id = ${target} order by occurred_at, seq`,
  );
  return found.map((r) => r.action);
}

describe('happy', () => {
  it('registers with 30 days of notice, lists it publicly, and activates it on its date', async () => {
    const sub = await register({ name: 'Postmark EU' });
    expect(sub).toMatchObject({ name: 'Postmark EU', status: 'announced', region: 'EU (Frankfurt)', replaces: null });
    expect(sub.id).toMatch(/^sub_/);
    expect(new Date(sub.effectiveAt).getTime() - new Date(sub.noticeAt).getTime()).toBe(30 * DAY);

    const listed = await anon.get<{ data: SubprocessorView[] }>('/api/subprocessors');
    expect(listed.status).toBe(200);
    expect(listed.body.data.find((s) => s.id === sub.id)?.status).toBe('announced');
    expect(await auditActions(sub.id)).toEqual(['subprocessor.registered']);

    await advance(30 * DAY);
    const later = await anon.get<{ data: SubprocessorView[] }>('/api/subprocessors');
    expect(later.body.data.find((s) => s.id === sub.id)?.status).toBe('active');
  });

  it('mails every workspace owner once, whatever the workspaces they own, and no one else', async () => {
    const alice = await signUp(app);
    const bob = await signUp(app);
    const a1 = await workspace(alice, 'Alice one');
    await workspace(alice, 'Alice two');
    await workspace(bob, 'Bob');
    const admin = await addMember(alice.userId, a1, 'admin');

    const sub = await register({ name: 'Notified Inc' });
    // The request only queued the job: nothing is sent on the request path.
    expect((await noticesTo('Notified Inc')).size).toBe(0);
    const sentBy = await app.jobs.drain(SUBPROCESSOR_NOTICES_JOB);
    expect(sentBy.completed).toBeGreaterThanOrEqual(1);

    const notices = await noticesTo('Notified Inc');
    expect(notices.get(alice.email)).toBe(1);
    expect(notices.get(bob.email)).toBe(1);
    expect(notices.has(admin.email)).toBe(false);
    expect(notices.size).toBe(await ownerCount());

    // A retried job, the sweep and a second run send nothing more: every notice was claimed.
    await app.modules.privacy.service.subprocessors.sendNotices(sub.id);
    await advance(11 * MINUTE);
    expect(await app.modules.privacy.service.subprocessors.sweepNotices()).toBe(0);
    await app.jobs.drain();
    expect(await noticesTo('Notified Inc')).toEqual(notices);

    const [text] = await app.modules.notifications.service
      .listOutbox({ limit: 200 })
      .then((all) => all.filter((m) => m.to === alice.email && m.subject.includes('Notified Inc')).map((m) => m.text));
    expect(text).toContain(a1);
    expect(text).toContain(`/subprocessors/${sub.id}/objection`);

    const ops = await op.get<{ data: OperatorSubprocessorView[] }>('/api/operator/subprocessors');
    expect(ops.body.data.find((s) => s.id === sub.id)).toMatchObject({
      noticesSent: notices.size,
      noticesDone: true,
      objections: 0,
    });
  });

  it('gives back a notice the mailer refused, so a retry sends it (and only it)', async () => {
    const carol = await signUp(app);
    const dave = await signUp(app);
    await workspace(carol);
    await workspace(dave);
    const sub = await register({ name: 'Flaky Relay' });
    const sent: string[] = [];
    let refuse = true;
    const mailer: Mailer = {
      async send(m) {
        if (refuse && m.to === dave.email) throw new Error('relay down');
        sent.push(m.to);
      },
    };
    const service = subprocessorsService({
      db: app.db,
      repo: subprocessorsRepo,
      audit: app.modules.audit.service,
      clock: app.clock,
      jobs: app.jobs,
      logger: createLogger({ level: 'silent' }),
      mailer,
      workspaces: app.modules.workspaces.service,
      categories: () => new Set(['account', 'communication']),
      publicUrl: 'http://berth.test',
    });
    const first = await service.sendNotices(sub.id);
    expect(first.failed).toBe(1);
    expect(sent).toContain(carol.email);
    expect(sent).not.toContain(dave.email);
    let ops = await op.get<{ data: OperatorSubprocessorView[] }>('/api/operator/subprocessors');
    expect(ops.body.data.find((s) => s.id === sub.id)?.noticesDone).toBe(false);

    refuse = false;
    sent.length = 0;
    expect(await service.sendNotices(sub.id)).toEqual({ sent: 1, failed: 0, pending: 0 });
    expect(sent).toEqual([dave.email]);
    ops = await op.get<{ data: OperatorSubprocessorView[] }>('/api/operator/subprocessors');
    expect(ops.body.data.find((s) => s.id === sub.id)?.noticesDone).toBe(true);
  });

  it('takes over a notice whose sender crashed after claiming it, once the claim is stale, and sends it once', async () => {
    const erin = await signUp(app);
    const frank = await signUp(app);
    await workspace(erin);
    await workspace(frank);
    const sub = await register({ name: 'Crashy Relay' });
    // A worker claimed Erin's notice and died before mailing it.
    await app.db.system((tx) => subprocessorsRepo.claimNotice(tx, sub.id, erin.userId, app.clock.now(), new Date(0)));

    const done = async () =>
      (await op.get<{ data: OperatorSubprocessorView[] }>('/api/operator/subprocessors')).body.data.find(
        (s) => s.id === sub.id,
      )?.noticesDone;
    await app.jobs.drain(SUBPROCESSOR_NOTICES_JOB);
    let notices = await noticesTo('Crashy Relay');
    expect(notices.get(frank.email)).toBe(1);
    // A fresh claim may still be in flight elsewhere: not sent again, and the entry not done.
    expect(notices.has(erin.email)).toBe(false);
    expect(await done()).toBe(false);

    // The sweep keeps queueing it; before the claim is stale nothing is sent twice...
    await advance(11 * MINUTE);
    expect(await app.modules.privacy.service.subprocessors.sweepNotices()).toBeGreaterThanOrEqual(1);
    await app.jobs.drain();
    expect((await noticesTo('Crashy Relay')).has(erin.email)).toBe(false);

    // ...once it is, the claim is taken over and the notice goes out.
    await advance(SUBPROCESSOR_NOTICE_CLAIM_STALE_MS);
    expect(await app.modules.privacy.service.subprocessors.sweepNotices()).toBeGreaterThanOrEqual(1);
    await app.jobs.drain();
    notices = await noticesTo('Crashy Relay');
    expect(notices.get(erin.email)).toBe(1);
    expect(notices.get(frank.email)).toBe(1);
    expect(await done()).toBe(true);

    // Later sweeps and runs send nothing more.
    await advance(SUBPROCESSOR_NOTICE_CLAIM_STALE_MS + MINUTE);
    await app.modules.privacy.service.subprocessors.sweepNotices();
    await app.jobs.drain();
    await app.modules.privacy.service.subprocessors.sendNotices(sub.id);
    expect(await noticesTo('Crashy Relay')).toEqual(notices);
  });

  it('the sweep also finds a stale unsent claim on an entry already marked done', async () => {
    const gina = await signUp(app);
    await workspace(gina);
    const sub = await register({ name: 'Marked Relay' });
    await app.db.system((tx) => subprocessorsRepo.claimNotice(tx, sub.id, gina.userId, app.clock.now(), new Date(0)));
    await app.jobs.drain(SUBPROCESSOR_NOTICES_JOB);
    // The state an earlier release could leave after such a crash: the entry marked done anyway.
    await app.db.system((tx) => subprocessorsRepo.markNoticesDone(tx, sub.id, app.clock.now()));
    expect((await noticesTo('Marked Relay')).has(gina.email)).toBe(false);

    await advance(SUBPROCESSOR_NOTICE_CLAIM_STALE_MS + MINUTE);
    const now = app.clock.now().getTime();
    const listed = await app.db.system((tx) =>
      subprocessorsRepo.noticesPending(
        tx,
        new Date(now - 10 * MINUTE),
        new Date(now - SUBPROCESSOR_NOTICE_CLAIM_STALE_MS),
        100,
      ),
    );
    expect(listed).toContain(sub.id);
    await app.modules.privacy.service.subprocessors.sweepNotices();
    await app.jobs.drain();
    expect((await noticesTo('Marked Relay')).get(gina.email)).toBe(1);
  });

  it('records an owner’s objection once, audited, and shows it to operators', async () => {
    const owner = await signUp(app);
    const ws = await workspace(owner);
    const sub = await register();
    const res = await owner.post<ObjectionView>(`/api/workspaces/${ws}/subprocessors/${sub.id}/objection`, {
      reason: 'Our customers require EU-only processing.',
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ workspaceId: ws, subprocessorId: sub.id, userId: owner.userId });

    const again = await owner.post(`/api/workspaces/${ws}/subprocessors/${sub.id}/objection`, {});
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ code: 'objection_exists' });

    const seen = await op.get<{ data: ObjectionView[] }>(
      `/api/operator/subprocessors/objections?subprocessorId=${sub.id}`,
    );
    expect(seen.body.data).toEqual([
      expect.objectContaining({ workspaceId: ws, reason: 'Our customers require EU-only processing.' }),
    ]);
    const events = await rows<{ action: string; workspace_id: string }>(
      sql`select action, workspace_id from audit_events where target_id = ${sub.id} and action = 'subprocessor.objected'`,
    );
    expect(events).toEqual([{ action: 'subprocessor.objected', workspace_id: ws }]);
  });

  it('replaces one: the old entry is retired when the new one starts', async () => {
    const old = await register({ name: 'Old Host' });
    const fresh = await register({ name: 'New Host', replaces: old.id, effectiveAt: inDays(45) });
    expect(fresh.replaces).toBe(old.id);
    let list = (await anon.get<{ data: SubprocessorView[] }>('/api/subprocessors')).body.data;
    expect(list.find((s) => s.id === old.id)).toMatchObject({
      status: 'announced',
      replacedBy: fresh.id,
      retiredAt: fresh.effectiveAt,
    });

    await advance(45 * DAY + MINUTE);
    list = (await anon.get<{ data: SubprocessorView[] }>('/api/subprocessors')).body.data;
    expect(list.find((s) => s.id === old.id)?.status).toBe('replaced');
    expect(list.find((s) => s.id === fresh.id)?.status).toBe('active');
  });

  it('retires one at once', async () => {
    const sub = await register();
    const res = await op.delete<SubprocessorView>(`/api/operator/subprocessors/${sub.id}`);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('retired');
    expect(await auditActions(sub.id)).toEqual(['subprocessor.registered', 'subprocessor.retired']);
  });
});

describe('errors', () => {
  async function count() {
    return (await anon.get<{ data: SubprocessorView[] }>('/api/subprocessors')).body.data.length;
  }

  it('refuses a start less than 30 days after the notice, on the moved clock, storing nothing', async () => {
    const before = await count();
    const effectiveAt = inDays(30);
    const short = await op.post('/api/operator/subprocessors', body({ effectiveAt: inDays(30, -MINUTE) }));
    expect(short.status).toBe(400);
    expect(short.body).toMatchObject({ code: 'notice_period_too_short' });

    // The same date, a day later on Berth's clock, is only 29 days away.
    await advance(DAY);
    const late = await op.post('/api/operator/subprocessors', body({ effectiveAt }));
    expect(late.status).toBe(400);
    expect(late.body).toMatchObject({ code: 'notice_period_too_short' });
    expect(await count()).toBe(before);

    const ok = await op.post('/api/operator/subprocessors', body({ effectiveAt: inDays(30) }));
    expect(ok.status).toBe(201);
    expect(await count()).toBe(before + 1);
  });

  it('refuses categories the data map does not have, and bad input, with 400', async () => {
    const res = await op.post('/api/operator/subprocessors', body({ dataCategories: ['account', 'horoscopes'] }));
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'unknown_data_category' });
    const bad = await op.post('/api/operator/subprocessors', body({ effectiveAt: 'next month' }));
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'validation_failed' });
  });

  it('refuses to replace or object to a retired one, and to retire it twice', async () => {
    const owner = await signUp(app);
    const ws = await workspace(owner);
    const sub = await register();
    expect((await op.delete(`/api/operator/subprocessors/${sub.id}`)).status).toBe(200);
    const twice = await op.delete(`/api/operator/subprocessors/${sub.id}`);
    expect(twice.body).toMatchObject({ code: 'subprocessor_retired' });
    const replace = await op.post('/api/operator/subprocessors', body({ replaces: sub.id }));
    expect(replace.status).toBe(409);
    expect(replace.body).toMatchObject({ code: 'subprocessor_retired' });
    const object = await owner.post(`/api/workspaces/${ws}/subprocessors/${sub.id}/objection`, {});
    expect(object.status).toBe(409);
    const unknown = await owner.post(
      `/api/workspaces/${ws}/subprocessors/sub_00000000000000000000000000/objection`,
      {},
    );
    expect(unknown.status).toBe(404);
  });
});

describe('security', () => {
  it('lets only operators register, retire and read the operators’ views', async () => {
    const user = await signUp(app);
    const sub = await register();
    for (const [res, status] of [
      [await user.post('/api/operator/subprocessors', body()), 403],
      [await anon.post('/api/operator/subprocessors', body()), 401],
      [await user.delete(`/api/operator/subprocessors/${sub.id}`), 403],
      [await user.get('/api/operator/subprocessors'), 403],
      [await user.get('/api/operator/subprocessors/objections'), 403],
      [await anon.get('/api/operator/subprocessors/objections'), 401],
    ] as const) {
      expect(res.status).toBe(status);
    }
    expect(
      (await anon.get<{ data: SubprocessorView[] }>('/api/subprocessors')).body.data.find((s) => s.id === sub.id)
        ?.status,
    ).toBe('announced');
  });

  it('lets only the owners of the workspace object for it', async () => {
    const owner = await signUp(app);
    const ws = await workspace(owner);
    const admin = await addMember(owner.userId, ws, 'admin');
    const stranger = await signUp(app);
    const sub = await register();
    const url = `/api/workspaces/${ws}/subprocessors/${sub.id}/objection`;
    expect((await admin.post(url, {})).status).toBe(403);
    expect([403, 404]).toContain((await stranger.post(url, {})).status);
    expect((await anon.post(url, {})).status).toBe(401);
    expect(
      (await op.get<{ data: ObjectionView[] }>(`/api/operator/subprocessors/objections?subprocessorId=${sub.id}`)).body
        .data,
    ).toEqual([]);
  });
});
