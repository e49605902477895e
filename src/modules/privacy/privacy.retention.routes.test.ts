import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { onServerPostgres } from '../../../test/helpers/db.ts';
import { usageRow } from '../../../test/helpers/gateway.ts';
import { logIn, makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { dataMap } from '../../app.ts';
import { DAY, manualClock } from '../../platform/clock.ts';
import { newId } from '../../platform/ids.ts';
import { generateAuditSigningKey } from '../audit/index.ts';
import { gatewayRepo } from '../gateway/gateway.repo.ts';
import { usageAggregates } from '../gateway/index.ts';
import { windowStart } from './privacy.retention.ts';

/**
 * Retention, end to end: the clock is set back to write old data (the audit log's removal
 * functions also check the database's own clock, so old rows must really be old), then a run
 * as of now must remove exactly what is one day past each window and keep what is one day
 * inside it, drop whole monthly partitions, roll per-call usage into daily totals with the
 * same sums, and leave every audit chain verifiable.
 */

type RunBody = {
  id: string;
  dryRun: boolean;
  asOf: string;
  status: string;
  results: Array<{
    retentionClass: string;
    table: string;
    rule: string;
    rowsDeleted: number;
    rowsRolledUp: number;
    partitionsDropped: number;
  }>;
};

const NOW = new Date();
const months = (n: number, from = NOW) => windowStart(from, { months: n });
const days = (n: number, from = NOW) => new Date(from.getTime() - n * DAY);

let app: TestApp;
let op: SignedInClient;
const clock = manualClock(months(17));
let w1: string; // free plan: audit kept 13 months
let w2: string; // scale plan: audit kept 7 years
let dry: RunBody;
let ownerLogin: { email: string; password: string };

/** Rows of a query run as system work (on server Postgres, tenant rows are hidden otherwise). */
async function sys<T>(query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await app.db.system((tx) => tx.execute(query))) as unknown as { rows: T[] }).rows;
}

async function count(q: string): Promise<number> {
  const rows = await sys<{ n: string | number }>(sql.raw(q));
  return Number(rows[0]?.n ?? 0);
}

async function partitions(table: string): Promise<string[]> {
  const rows = await app.db.query<{ name: string }>(`select name from berth_month_partitions($1)`, [table]);
  return rows.map((r) => r.name);
}

const monthName = (table: string, at: Date) =>
  `${table}_p${at.getUTCFullYear()}${String(at.getUTCMonth() + 1).padStart(2, '0')}`;

/** One audit event of a workspace's chain at the clock's time. */
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

async function insertUsage(rows: Parameters<typeof usageRow>[0][]) {
  await app.db.system((tx) => gatewayRepo.insertUsage(tx, rows.map(usageRow)));
}

async function runRetention(body: Record<string, unknown>) {
  return op.post<RunBody>('/api/operator/retention/run', body);
}

function result(run: RunBody, table: string) {
  const r = run.results.find((x) => x.table === table);
  if (!r) throw new Error(`no result for ${table}`);
  return r;
}

beforeAll(async () => {
  // Everything starts 17 months ago, so no event of any chain is written before the old ones.
  app = await createTestApp({ clock, config: { BERTH_AUDIT_SIGNING_KEY: generateAuditSigningKey() } });
  // The audit months exist as the job would have made them ahead (usage's old months are
  // left in the default partition: the run makes their partitions first).
  for (let m = 17; m >= 12; m--) {
    await app.db.query(`select berth_ensure_month_partition('audit_events', $1::timestamptz)`, [
      months(m).toISOString(),
    ]);
  }
  const owner = await signUp(app);
  ownerLogin = { email: owner.email, password: owner.password };
  const a = await owner.post<{ id: string }>('/api/workspaces', { name: 'Old' });
  expect(a.status).toBe(201);
  w1 = a.body.id;
  await auditAt(w1, months(16), 'test.m16');
  // Signed checkpoints inside the months that will go, and after them.
  expect(await app.modules.audit.service.checkpointAll()).toBeGreaterThanOrEqual(1);
  clock.set(months(15));
  const owner2 = await signUp(app); // the first session expired meanwhile
  const b = await owner2.post<{ id: string }>('/api/workspaces', { name: 'Kept long' });
  expect(b.status).toBe(201);
  w2 = b.body.id;
  await app.modules.billing.service.setPlan({
    actor: { type: 'system', name: 'test' },
    workspaceId: w2,
    plan: 'scale',
  });
  await auditAt(w2, months(15), 'test.w2.m15');
  await auditAt(w1, days(1, months(13)), 'test.w1.past');
  await auditAt(w1, days(-1, months(13)), 'test.w1.inside');
  await auditAt(w2, days(1, months(13)), 'test.w2.past');
  expect(await app.modules.audit.service.checkpointAll()).toBeGreaterThanOrEqual(2);

  // Now: the operator, recent heads, usage and security events around each window.
  clock.set(NOW);
  const operator = await signUp(app);
  await makeOperator(app, operator.userId);
  op = operator;
  await auditAt(w1, NOW, 'test.w1.now');
  await auditAt(w2, NOW, 'test.w2.now');
  clock.set(NOW);
  await app.db.system((tx) =>
    app.modules.audit.service.record(tx, {
      workspaceId: null,
      actor: { type: 'system', name: 'test' },
      action: 'test.platform.now',
      target: { type: 'test', id: 'now' },
    }),
  );
  await insertUsage([
    { id: 'use_inside', requestId: 'r1', workspaceId: w1, keyId: 'key_a', userId: 'usr_a', createdAt: days(89) },
    {
      id: 'use_past',
      requestId: 'r2',
      workspaceId: w1,
      keyId: 'key_a',
      userId: 'usr_a',
      createdAt: days(91),
      inputTokens: 5,
    },
    { id: 'use_old1', requestId: 'r3', workspaceId: w1, keyId: 'key_b', createdAt: days(200), costMicros: 40 },
    {
      id: 'use_old2',
      requestId: 'r4',
      workspaceId: w1,
      keyId: 'key_b',
      createdAt: days(200),
      status: 500,
      costMicros: 0,
    },
    { id: 'use_y_in', requestId: 'r5', workspaceId: w1, createdAt: days(-1, months(13)), outputTokens: 7 },
    { id: 'use_y_out', requestId: 'r6', workspaceId: w1, createdAt: days(1, months(13)), outputTokens: 9 },
  ]);
  // Request facts kept beside the chains follow their chain's cut-off.
  await sys(sql`insert into audit_event_context (event_id, occurred_at, chain, workspace_id, ip) values
    ('ctx_w1_past', ${days(1, months(13)).toISOString()}::timestamptz, ${w1}, ${w1}, '192.0.2.1'),
    ('ctx_w1_inside', ${days(-1, months(13)).toISOString()}::timestamptz, ${w1}, ${w1}, '192.0.2.2'),
    ('ctx_w2_past', ${days(1, months(13)).toISOString()}::timestamptz, ${w2}, ${w2}, '192.0.2.3')`);
  await app.db.query(
    `insert into security_events (id, user_id, type, details, created_at) values
       ('sev_inside', $1, 'login', '{}', $2), ('sev_past', $1, 'login', '{}', $3)`,
    [operator.userId, days(-1, months(13)).toISOString(), days(1, months(13)).toISOString()],
  );
});

afterAll(async () => {
  await app?.close();
});

describe('errors', () => {
  it('refuses a removing run dated in the future, and removes nothing', async () => {
    const before = await count('select count(*) as n from usage_events');
    const res = await runRetention({ asOf: new Date(NOW.getTime() + 2 * DAY).toISOString() });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'retention_as_of_future' });
    expect(await count('select count(*) as n from usage_events')).toBe(before);
  });

  it('rejects a malformed date and unknown fields', async () => {
    expect((await runRetention({ asOf: 'yesterday' })).status).toBe(400);
    expect((await runRetention({ dryRun: true, everything: true })).status).toBe(400);
  });
});

describe('data map', () => {
  it('names a real column for every declared retention time, and an expiry rule for expiring tables', () => {
    const map = dataMap(app.modules);
    for (const t of map.filter((e) => e.retentionFrom)) {
      expect(Object.keys(t.columns), t.table).toContain(t.retentionFrom);
    }
    // Expired by their own module's job instead: sign-in throttle counters by the throttle's
    // configured windows (identity.purge-expired); exports may be expired by their own job
    // (privacy.exports-expire). A new expiring table must declare its rule.
    const withoutRule = map.filter((t) => t.retention === 'until_expiry' && !t.expiredWhen).map((t) => t.table);
    for (const table of withoutRule) expect(['login_failures', 'privacy_exports'], table).toContain(table);
    expect(map.filter((t) => t.retention === 'until_expiry' && t.expiredWhen).length).toBeGreaterThanOrEqual(5);
    // Every class a run applies reaches at least one table, so a policy is never dead code.
    const classes = new Set(map.map((t) => t.retention));
    for (const c of ['until_expiry', 'security_13_months', 'usage_13_months', 'audit_13_months']) {
      expect(classes.has(c as never), c).toBe(true);
    }
  });
});

describe('security', () => {
  it.skipIf(!onServerPostgres())(
    'the application role reaches partitions only through their parents (server Postgres only)',
    async () => {
      const [part] = await partitions('usage_events');
      expect(part).toBeDefined();
      // Directly, RLS of the parent would not apply: the schema is closed to the app role.
      await expect(app.db.query(`select count(*) from berth_partitions.${part}`)).rejects.toThrow(/permission denied/);
      await expect(app.db.query('select count(*) from berth_partitions.usage_events_default')).rejects.toThrow(
        /permission denied/,
      );
      await expect(app.db.query(`drop table berth_partitions.${part}`)).rejects.toThrow();
      expect(await partitions('usage_events')).toContain(part);
    },
  );

  it('is for operators only', async () => {
    const user = await signUp(app);
    expect((await user.post('/api/operator/retention/run', { dryRun: true })).status).toBe(403);
    expect((await user.get('/api/operator/retention/runs')).status).toBe(403);
  });
});

describe('happy', () => {
  it('a dry run counts what would go and changes nothing, also as of a future date', async () => {
    const snapshot = async () => ({
      usage: await count('select count(*) as n from usage_events'),
      daily: await count('select count(*) as n from usage_daily'),
      // (each run, dry ones too, is itself recorded in the platform chain)
      audit: await count(`select count(*) as n from audit_events where action <> 'privacy.retention_run'`),
      security: await count('select count(*) as n from security_events'),
      usageParts: await partitions('usage_events'),
      auditParts: await partitions('audit_events'),
    });
    const before = await snapshot();
    const res = await runRetention({ dryRun: true });
    expect(res.status).toBe(200);
    expect(res.body.dryRun).toBe(true);
    expect(result(res.body, 'usage_events')).toMatchObject({ rule: 'rollup', rowsRolledUp: 5 });
    expect(result(res.body, 'security_events').rule).toBe('older_than');
    expect(result(res.body, 'security_events').rowsDeleted).toBeGreaterThanOrEqual(1);
    expect(result(res.body, 'audit_events').rowsDeleted).toBeGreaterThanOrEqual(3);
    expect(result(res.body, 'audit_events').partitionsDropped).toBeGreaterThanOrEqual(2);
    expect(await snapshot()).toEqual(before);
    dry = res.body;

    // A month from now the inside rows are past too: previewed, not removed.
    const later = await runRetention({ dryRun: true, asOf: new Date(NOW.getTime() + 30 * DAY).toISOString() });
    expect(later.status).toBe(200);
    expect(result(later.body, 'usage_events').rowsRolledUp).toBe(6);
    expect(result(later.body, 'security_events').rowsDeleted).toBeGreaterThan(
      result(res.body, 'security_events').rowsDeleted,
    );
    expect(await snapshot()).toEqual(before);
  });

  it('removes what is one day past each window, keeps what is one day inside, and records the run', async () => {
    const totalsBefore = await usageAggregates(app.db, w1, { since: months(13), until: NOW, groupBy: 'model' });
    // The monthly statement of the month 200 days ago, as its owner reads it.
    const owner = await logIn(app, ownerLogin.email, ownerLogin.password);
    const old = days(200);
    const period = `${old.getUTCFullYear()}-${String(old.getUTCMonth() + 1).padStart(2, '0')}`;
    const statement = async () => {
      const r = await owner.get<{ usage: { requests: number; costMicros: number; byKey: Array<{ name: string }> } }>(
        `/api/workspaces/${w1}/billing/invoices/${period}`,
      );
      expect(r.status, r.text).toBe(200);
      return r.body.usage;
    };
    const statementBefore = await statement();
    expect(statementBefore).toMatchObject({ requests: 2, costMicros: 40 });
    const res = await runRetention({});
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('completed');
    // What the dry run said is what the run did (daily totals made by this run's roll-up and
    // already past 13 months are the one thing a dry run cannot count).
    for (const table of ['security_events', 'sessions', 'audit_events']) {
      expect(result(res.body, table), table).toEqual(result(dry, table));
    }
    expect(result(res.body, 'usage_events').rowsRolledUp).toBe(result(dry, 'usage_events').rowsRolledUp);

    // Security events: 13 months.
    const sev = await app.db.query<{ id: string }>(
      `select id from security_events where id in ('sev_inside', 'sev_past') order by id`,
    );
    expect(sev.map((r) => r.id)).toEqual(['sev_inside']);

    // Usage: only the event 89 days old is still a per-call row; the others are daily totals.
    const raw = await sys<{ id: string }>(sql`select id from usage_events where workspace_id = ${w1}`);
    expect(raw.map((r) => r.id)).toEqual(['use_inside']);
    expect(result(res.body, 'usage_events')).toMatchObject({ rule: 'rollup', rowsRolledUp: 5 });
    // The daily total of the day 13 months + 1 day ago went with the 13-month window; the other stayed.
    const dailyDays = await sys<{ day: string }>(
      sql`select distinct to_char(day, 'YYYY-MM-DD') as day from usage_daily where workspace_id = ${w1} order by day`,
    );
    const iso = (d: Date) => d.toISOString().slice(0, 10);
    expect(dailyDays.map((r) => r.day)).toEqual([iso(days(-1, months(13))), iso(days(200)), iso(days(91))].sort());
    // The totals carry no key and no user, and add up to what the rows said.
    const cols = await app.db.query<{ column_name: string }>(
      `select column_name from information_schema.columns where table_name = 'usage_daily'`,
    );
    expect(cols.map((c) => c.column_name)).not.toContain('key_id');
    expect(cols.map((c) => c.column_name)).not.toContain('user_id');
    const totalsAfter = await usageAggregates(app.db, w1, { since: months(13), until: NOW, groupBy: 'model' });
    expect(totalsAfter).toEqual(totalsBefore);
    // The statement says the same, except that its calls no longer name their API key.
    const { byKey: keysBefore, ...restBefore } = statementBefore;
    const { byKey: keysAfter, ...restAfter } = await statement();
    expect(restAfter).toEqual(restBefore);
    expect(keysBefore.map((k) => k.name)).toEqual(['key_b']);
    expect(keysAfter).toEqual(keysBefore.map((k) => ({ ...k, name: '' })));
    expect(totalsAfter[0]).toMatchObject({ requests: 5, errors: 1, costMicros: 40 + 1 + 1 + 1 });
    // By key, the rolled-up calls count under no key.
    const byKey = await usageAggregates(app.db, w1, { since: months(13), until: NOW, groupBy: 'key' });
    expect(byKey).toEqual([
      expect.objectContaining({ group: '', requests: 4 }),
      expect.objectContaining({ group: 'key_a', requests: 1 }),
    ]);
    // The month 200 days ago (wholly before the cut-off) was rolled up and dropped as a partition.
    expect(result(res.body, 'usage_events').partitionsDropped).toBeGreaterThanOrEqual(1);
    expect(await partitions('usage_events')).not.toContain(monthName('usage_events', days(200)));
    // Months ahead are ready.
    const ahead = new Date(Date.UTC(NOW.getUTCFullYear(), NOW.getUTCMonth() + 3, 1));
    expect(await partitions('usage_events')).toContain(monthName('usage_events', ahead));
    expect(await partitions('audit_events')).toContain(monthName('audit_events', ahead));

    // The run and its results are recorded and listed.
    const runs = await op.get<{ data: RunBody[] }>('/api/operator/retention/runs');
    expect(runs.status).toBe(200);
    expect(runs.body.data[0]).toMatchObject({ id: res.body.id, dryRun: false, status: 'completed' });
    expect(runs.body.data.some((r) => r.dryRun)).toBe(true);
    expect(result(runs.body.data[0] as RunBody, 'security_events').rowsDeleted).toBe(
      result(res.body, 'security_events').rowsDeleted,
    );
  });

  it('drops whole audit months, keeps a longer plan’s events, and every chain still verifies', async () => {
    const actions = async (ws: string) =>
      (
        await sys<{ action: string }>(
          sql`select action from audit_events where chain = ${ws} and action like 'test.%' order by seq`,
        )
      ).map((r) => r.action);
    // w1 (13 months): the month 16 months ago went whole; the event a day past the window went
    // from its chain; the one a day inside stayed.
    expect(await actions(w1)).toEqual(['test.w1.inside', 'test.w1.now']);
    // w2 (scale plan, 7 years): nothing of it went.
    expect(await actions(w2)).toEqual(['test.w2.m15', 'test.w2.past', 'test.w2.now']);
    expect(await partitions('audit_events')).not.toContain(monthName('audit_events', months(16)));
    expect(await partitions('audit_events')).toContain(monthName('audit_events', months(15)));

    const reports = await app.modules.audit.service.verifyAll();
    expect(reports.length).toBeGreaterThanOrEqual(3);
    for (const r of reports) expect(r, r.chain).toMatchObject({ ok: true });
    // w1's checkpoints from the dropped months went, but for the one signing its new anchor.
    const w1Checkpoints = await sys<{ seq: string }>(sql`select seq from audit_checkpoints where chain = ${w1}`);
    const [head] = await sys<{ anchor_seq: string }>(sql`select anchor_seq from audit_chain_heads where chain = ${w1}`);
    expect(w1Checkpoints.length).toBeGreaterThanOrEqual(1);
    for (const c of w1Checkpoints) expect(Number(c.seq)).toBeGreaterThanOrEqual(Number(head?.anchor_seq) - 1);
    const context = await sys<{ event_id: string }>(
      sql`select event_id from audit_event_context where event_id like 'ctx%' order by event_id`,
    );
    expect(context.map((r) => r.event_id)).toEqual(['ctx_w1_inside', 'ctx_w2_past']);
    // The removal is on record in the platform chain.
    const platform = await sys(
      sql`select action, target_id from audit_events where chain = 'platform' and action = 'audit.partition_dropped'`,
    );
    expect(platform).toContainEqual({
      action: 'audit.partition_dropped',
      target_id: monthName('audit_events', months(16)),
    });
  });

  it('keeps the audit log append-only for the application while retention drops partitions', async () => {
    await expect(sys(sql`update audit_events set action = 'x' where chain = ${w1}`)).rejects.toThrow();
    await expect(sys(sql`delete from audit_events where chain = ${w1}`)).rejects.toThrow();
    expect(await count(`select count(*) as n from audit_events where action = 'x'`)).toBe(0);
    // (chain, seq) stays unique across partitions.
    const [first] = await sys<Record<string, unknown>>(
      sql`select * from audit_events where chain = ${w2} order by seq limit 1`,
    );
    const e = first ?? {};
    await expect(
      app.db.system((tx) =>
        tx.execute(sql`insert into audit_events (id, chain, workspace_id, seq, occurred_at, actor_type, actor_id, action,
          target_type, target_id, outcome, prev_hash, hash)
          values (${newId('aud')}, ${w2}, ${w2}, ${e.seq as string}, now(), 'system', 'x', 'forged', 'workspace', ${w2},
            'success', ${e.prev_hash as string}, ${e.hash as string})`),
      ),
    ).rejects.toThrow();
  });

  it('a second run finds nothing more to remove', async () => {
    const res = await runRetention({});
    expect(res.status).toBe(200);
    expect(result(res.body, 'usage_events').rowsRolledUp).toBe(0);
    expect(result(res.body, 'security_events').rowsDeleted).toBe(0);
    expect(result(res.body, 'audit_events').rowsDeleted).toBe(0);
  });
});
