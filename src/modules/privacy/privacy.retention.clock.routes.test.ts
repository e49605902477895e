import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY, HOUR, MINUTE, manualClock } from '../../platform/clock.ts';
import { windowStart } from './privacy.retention.ts';

/**
 * Retention runs by the clock, on rows around their limits: a plan's 7-year audit window
 * (events written with the clock set back, because the audit log's removal functions also
 * check the database's own clock), and the `until_expiry` class, whose expired rows a run
 * (not a dry run) deletes while unexpired ones stay.
 */

type RunBody = {
  dryRun: boolean;
  status: string;
  results: Array<{ table: string; rule: string; rowsDeleted: number }>;
};

const NOW = new Date();
const months = (n: number, from = NOW) => windowStart(from, { months: n });
const days = (n: number, from = NOW) => new Date(from.getTime() - n * DAY);

// Everything starts a few days before the 7-year window, so no chain has an older event.
const clock = manualClock(days(3, months(84)));
let app: TestApp;
let op: SignedInClient;
let long: string; // scale plan: audit kept 84 months
let short: string; // free plan: audit kept 13 months

async function sys<T>(query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await app.db.system((tx) => tx.execute(query))) as unknown as { rows: T[] }).rows;
}

/** One audit event of a workspace's chain at `at` (the clock is set there). */
async function auditAt(workspaceId: string, at: Date, action: string) {
  clock.set(at);
  await app.db.tenant(workspaceId, (tx) =>
    app.modules.audit.service.record(tx, {
      workspaceId,
      actor: { type: 'system', name: 'test' },
      action,
      target: { type: 'workspace', id: workspaceId },
    }),
  );
}

async function testActions(chain: string): Promise<string[]> {
  const rows = await sys<{ action: string }>(
    sql`select action from audit_events where chain = ${chain} and action like 'test.%' order by seq`,
  );
  return rows.map((r) => r.action);
}

async function run(body: Record<string, unknown> = {}): Promise<RunBody> {
  const res = await op.post<RunBody>('/api/operator/retention/run', body);
  expect(res.status, res.text).toBe(200);
  expect(res.body.status).toBe('completed');
  return res.body;
}

function result(body: RunBody, table: string) {
  const r = body.results.find((x) => x.table === table);
  if (!r) throw new Error(`no result for ${table}`);
  return r;
}

beforeAll(async () => {
  app = await createTestApp({ clock });
  const owner = await signUp(app);
  const a = await owner.post<{ id: string }>('/api/workspaces', { name: 'Seven years' });
  expect(a.status).toBe(201);
  long = a.body.id;
  await app.modules.billing.service.setPlan({
    actor: { type: 'system', name: 'test' },
    workspaceId: long,
    plan: 'scale',
  });
  const b = await owner.post<{ id: string }>('/api/workspaces', { name: 'Default plan' });
  expect(b.status).toBe(201);
  short = b.body.id;

  await auditAt(long, days(1, months(84)), 'test.long.past');
  await auditAt(short, days(1, months(84)), 'test.short.past');
  await auditAt(long, days(-1, months(84)), 'test.long.inside');
  await auditAt(short, days(-1, months(84)), 'test.short.inside84');
  await auditAt(long, NOW, 'test.long.now');
  await auditAt(short, NOW, 'test.short.now');

  clock.set(NOW);
  op = await signUp(app);
  await makeOperator(app, op.userId);
});

afterAll(async () => {
  await app?.close();
});

describe('happy', () => {
  it('keeps a 7-year plan’s audit event one day inside 84 months, removes the one a day past, and the chains verify', async () => {
    expect(await app.modules.billing.service.limitsOf(long)).toMatchObject({ auditRetentionMonths: 84 });
    expect(await testActions(long)).toEqual(['test.long.past', 'test.long.inside', 'test.long.now']);

    const body = await run();
    expect(result(body, 'audit_events').rowsDeleted).toBeGreaterThanOrEqual(2);

    expect(await testActions(long)).toEqual(['test.long.inside', 'test.long.now']);
    // The same ages on the default plan (13 months) are both past its window: the plan decides.
    expect(await testActions(short)).toEqual(['test.short.now']);
    const reports = await app.modules.audit.service.verifyAll();
    expect(reports.map((r) => r.chain)).toEqual(expect.arrayContaining([long, short, 'platform']));
    for (const r of reports) expect(r, r.chain).toMatchObject({ ok: true });
  });

  it('deletes expired sessions and email tokens and keeps unexpired ones (the run itself, not a dry run)', async () => {
    const now = clock.now();
    const at = (ms: number) => new Date(now.getTime() + ms).toISOString();
    const sessions: Array<[id: string, idle: string, absolute: string, revoked: string | null]> = [
      ['ses_t6_absolute', at(HOUR), at(-MINUTE), null],
      ['ses_t6_idle', at(-MINUTE), at(DAY), null],
      ['ses_t6_revoked', at(HOUR), at(DAY), at(-HOUR)],
      ['ses_t6_live', at(MINUTE), at(DAY), null],
    ];
    for (const [id, idle, absolute, revoked] of sessions) {
      await app.db.query(
        `insert into sessions (id, user_id, token_hash, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at)
         values ($1, $2, $3, $4, $4, $5, $6, $7)`,
        [id, op.userId, `hash-${id}`, at(-2 * HOUR), idle, absolute, revoked],
      );
    }
    const tokens: Array<[id: string, expires: string, used: string | null]> = [
      ['etk_t6_expired', at(-MINUTE), null],
      ['etk_t6_used', at(HOUR), at(-MINUTE)],
      ['etk_t6_live', at(MINUTE), null],
    ];
    for (const [id, expires, used] of tokens) {
      await app.db.query(
        `insert into email_tokens (id, user_id, purpose, token_hash, created_at, expires_at, used_at)
         values ($1, $2, 'reset_password', $3, $4, $5, $6)`,
        [id, op.userId, `hash-${id}`, at(-HOUR), expires, used],
      );
    }
    const left = async () => ({
      sessions: (await sys<{ id: string }>(sql`select id from sessions where id like 'ses_t6_%' order by id`)).map(
        (r) => r.id,
      ),
      tokens: (await sys<{ id: string }>(sql`select id from email_tokens where id like 'etk_t6_%' order by id`)).map(
        (r) => r.id,
      ),
    });
    expect(await left()).toEqual({
      sessions: ['ses_t6_absolute', 'ses_t6_idle', 'ses_t6_live', 'ses_t6_revoked'],
      tokens: ['etk_t6_expired', 'etk_t6_live', 'etk_t6_used'],
    });

    const body = await run();
    expect(body.dryRun).toBe(false);
    expect(result(body, 'sessions')).toMatchObject({ rule: 'expired' });
    expect(result(body, 'sessions').rowsDeleted).toBeGreaterThanOrEqual(3);
    expect(result(body, 'email_tokens').rowsDeleted).toBeGreaterThanOrEqual(2);

    expect(await left()).toEqual({ sessions: ['ses_t6_live'], tokens: ['etk_t6_live'] });
    // The operator's own session, unexpired, still works.
    expect((await op.get('/api/me')).status).toBe(200);

    // A minute later the rows that were a minute inside have expired too.
    clock.advance(MINUTE);
    await run();
    expect(await left()).toEqual({ sessions: [], tokens: [] });
  });
});
