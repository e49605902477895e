import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { gatewayWorkspace } from '../../../test/helpers/gateway.ts';
import { makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY, manualClock } from '../../platform/clock.ts';
import { memoryCredits } from '../gateway/index.ts';
import type { RunView } from './agents.runs.schemas.ts';

/**
 * Agent run logs expire 90 days after the run was created, by the retention job: runs are
 * started through the API with the clock set back, then retention runs with the clock moved
 * on. A run one day inside the window keeps its steps and events, one a day past is gone from
 * all three tables; a month of steps and events wholly before the cut-off goes as a dropped
 * partition, the coming months' partitions are made ahead, a dry run as of a later date
 * predicts exactly what the run then removes, and every run is recorded.
 */

type Result = {
  retentionClass: string;
  table: string;
  rule: string;
  rowsDeleted: number;
  rowsRolledUp: number;
  partitionsDropped: number;
  cutoff: string | null;
};
type RetentionRun = { id: string; dryRun: boolean; asOf: string; status: string; results: Result[] };

const RUN_TABLES = ['agent_runs', 'agent_run_steps', 'agent_run_events'] as const;
type RunTable = (typeof RUN_TABLES)[number];

// The runs' times: OLD in a month wholly before the final cut-off, PAST one day before it
// and INSIDE one day after it, both in the month the cut-off falls in.
const START = new Date('2025-11-20T10:00:00.000Z');
const AS_OF = new Date('2026-04-10T10:00:00.000Z');
const CUTOFF = new Date(AS_OF.getTime() - 90 * DAY);
const PAST_AT = new Date(CUTOFF.getTime() - DAY);
const INSIDE_AT = new Date(CUTOFF.getTime() + DAY);

const clock = manualClock(START);
const credits = memoryCredits();
let app: TestApp;
let fake: FakeOpenAi;
let workspaceId: string;
/** An API key's client: a key outlives sessions as the clock moves on. */
let runner: TestClient;
const runs: { old: string; past: string; inside: string } = { old: '', past: '', inside: '' };
/** Rows each run held when it ended: steps and events. */
const held = new Map<string, Record<RunTable, number>>();
let predicted: RetentionRun;

async function rowsOf(runId: string): Promise<Record<RunTable, number>> {
  const out = {} as Record<RunTable, number>;
  for (const table of RUN_TABLES) {
    const column = table === 'agent_runs' ? 'id' : 'run_id';
    const res = (await app.db.system((tx) =>
      tx.execute(
        sql`select count(*)::int as n from ${sql.identifier(table)} where ${sql.identifier(column)} = ${runId}`,
      ),
    )) as unknown as { rows: Array<{ n: number }> };
    out[table] = res.rows[0]?.n ?? 0;
  }
  return out;
}

async function partitions(table: string): Promise<string[]> {
  const rows = await app.db.query<{ name: string }>('select name from berth_month_partitions($1)', [table]);
  return rows.map((r) => r.name);
}

const monthName = (table: string, year: number, month: number) => `${table}_p${year}${String(month).padStart(2, '0')}`;

/** A run of the helper agent at the clock's time: a model call, a calculator call, the answer. */
async function startRun(): Promise<string> {
  fake.next(
    { kind: 'reply', toolCalls: [{ name: 'calculator', arguments: '{"expression":"2+3"}' }] },
    { kind: 'reply', content: 'It is 5.' },
  );
  const res = await runner.post<RunView>(`/api/workspaces/${workspaceId}/runs`, { agent: 'helper', input: 'Add 2+3' });
  expect(res.status, res.text).toBe(200);
  expect(res.body.status).toBe('completed');
  const rows = await rowsOf(res.body.id);
  expect(rows.agent_runs).toBe(1);
  expect(rows.agent_run_steps).toBe(3);
  expect(rows.agent_run_events).toBeGreaterThan(1);
  held.set(res.body.id, rows);
  return res.body.id;
}

/** An operator signed in at the clock's time (sessions do not outlive the jumps). */
async function operator(): Promise<SignedInClient> {
  const op = await signUp(app);
  await makeOperator(app, op.userId);
  return op;
}

async function retention(body: Record<string, unknown> = {}): Promise<RetentionRun> {
  const res = await (await operator()).post<RetentionRun>('/api/operator/retention/run', body);
  expect(res.status, res.text).toBe(200);
  expect(res.body.status).toBe('completed');
  return res.body;
}

function result(run: RetentionRun, table: string): Result {
  const r = run.results.find((x) => x.table === table);
  if (!r) throw new Error(`no result for ${table}`);
  return r;
}

const sum = (ids: string[], table: RunTable) => ids.reduce((n, id) => n + (held.get(id)?.[table] ?? 0), 0);

beforeAll(async () => {
  fake = await startFakeOpenAi();
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_GATEWAY_RETRIES: 0 }, credits, clock });
  const gw = await gatewayWorkspace(app, {
    providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o-mini'] }],
  });
  workspaceId = gw.workspaceId;
  credits.grant(workspaceId, 1_000_000_000);
  const key = await gw.owner.post<{ secret: string }>(`/api/workspaces/${workspaceId}/keys`, {
    name: 'runner',
    scopes: ['agents:run', 'agents:read', 'agents:write'],
  });
  expect(key.status, key.text).toBe(201);
  runner = new TestClient(app);
  runner.headers = { authorization: `Bearer ${key.body.secret}` };
  const agent = await runner.post(`/api/workspaces/${workspaceId}/agents/import?publish=true`, {
    name: 'helper',
    model: 'gpt-4o-mini',
    tools: [{ type: 'builtin', name: 'calculator', requires_approval: false }],
  });
  expect(agent.status, agent.text).toBe(201);
});

afterAll(async () => {
  await app?.close();
  await fake?.close();
});

describe('happy', () => {
  it('keeps the coming months of run steps and events ready as partitions', async () => {
    runs.old = await startRun();
    // A run at the start: the month's rows move out of the default partition into their own,
    // and the next three months are made ahead.
    const first = await retention();
    for (const table of ['agent_run_steps', 'agent_run_events']) {
      expect(result(first, table)).toMatchObject({ retentionClass: 'logs_90_days', rule: 'older_than' });
      expect(await partitions(table)).toEqual(
        expect.arrayContaining([
          monthName(table, 2025, 11),
          monthName(table, 2025, 12),
          monthName(table, 2026, 1),
          monthName(table, 2026, 2),
        ]),
      );
    }
    expect(await rowsOf(runs.old)).toEqual(held.get(runs.old));
    // The rows sit in their month's partition, none is left in the default one.
    const placed = await app.db.system((tx) =>
      tx.execute(sql`select tableoid::regclass::text as part, count(*)::int as n from agent_run_steps
        where run_id = ${runs.old} group by 1`),
    );
    expect((placed as unknown as { rows: Array<{ part: string; n: number }> }).rows).toEqual([
      { part: `berth_partitions.${monthName('agent_run_steps', 2025, 11)}`, n: 3 },
    ]);
  });

  it('a dry run as of a later date reports what the run will remove, and changes nothing', async () => {
    clock.set(PAST_AT);
    runs.past = await startRun();
    clock.set(INSIDE_AT);
    runs.inside = await startRun();

    predicted = await retention({ dryRun: true, asOf: AS_OF.toISOString() });
    expect(predicted).toMatchObject({ dryRun: true, asOf: AS_OF.toISOString() });
    const gone = [runs.old, runs.past];
    expect(result(predicted, 'agent_runs')).toMatchObject({
      rule: 'older_than',
      rowsDeleted: 2,
      partitionsDropped: 0,
      cutoff: CUTOFF.toISOString(),
    });
    for (const table of ['agent_run_steps', 'agent_run_events'] as const) {
      // November and December 2025 ended before the cut-off; January 2026 holds it.
      expect(result(predicted, table)).toMatchObject({
        rule: 'older_than',
        rowsDeleted: sum(gone, table),
        partitionsDropped: 2,
        cutoff: CUTOFF.toISOString(),
      });
    }
    for (const id of [runs.old, runs.past, runs.inside]) expect(await rowsOf(id)).toEqual(held.get(id));
    expect(await partitions('agent_run_steps')).toContain(monthName('agent_run_steps', 2025, 11));
  });

  it('90 days on, removes the run a day past the window from all three tables and keeps the one a day inside', async () => {
    clock.set(AS_OF);
    const run = await retention();
    expect(run.dryRun).toBe(false);
    // What the dry run predicted, table by table.
    for (const table of RUN_TABLES) {
      const { rowsDeleted, partitionsDropped, cutoff, rule } = result(predicted, table);
      expect(result(run, table), table).toMatchObject({ rowsDeleted, partitionsDropped, cutoff, rule });
    }
    const none = { agent_runs: 0, agent_run_steps: 0, agent_run_events: 0 };
    expect(await rowsOf(runs.old)).toEqual(none);
    expect(await rowsOf(runs.past)).toEqual(none);
    expect(await rowsOf(runs.inside)).toEqual(held.get(runs.inside));

    // The months wholly before the cut-off went as partitions; the one it falls in stays, and
    // the coming months are ready.
    for (const table of ['agent_run_steps', 'agent_run_events']) {
      const parts = await partitions(table);
      expect(parts).not.toContain(monthName(table, 2025, 11));
      expect(parts).not.toContain(monthName(table, 2025, 12));
      expect(parts).toContain(monthName(table, 2026, 1));
      for (const month of [4, 5, 6, 7]) expect(parts).toContain(monthName(table, 2026, month));
    }

    // The run that survived reads as before, with its steps.
    const kept = await runner.get<RunView>(`/api/workspaces/${workspaceId}/runs/${runs.inside}`);
    expect(kept.status).toBe(200);
    expect(kept.body).toMatchObject({ status: 'completed', output: 'It is 5.' });
    const steps = await runner.get<{ data: unknown[] }>(`/api/workspaces/${workspaceId}/runs/${runs.inside}/steps`);
    expect(steps.body.data).toHaveLength(3);
    expect((await runner.get(`/api/workspaces/${workspaceId}/runs/${runs.past}`)).status).toBe(404);

    // The run is recorded with its results, and in the platform audit chain.
    const listed = await (await operator()).get<{ data: RetentionRun[] }>('/api/operator/retention/runs');
    const recorded = listed.body.data.find((r) => r.id === run.id);
    expect(recorded).toMatchObject({ dryRun: false, status: 'completed', asOf: AS_OF.toISOString() });
    expect(recorded && result(recorded, 'agent_run_steps')).toEqual(result(run, 'agent_run_steps'));
    const audited = (await app.db.system((tx) =>
      tx.execute(sql`select target_id from audit_events where chain = 'platform' and action = 'privacy.retention_run'
        and target_id = ${run.id}`),
    )) as unknown as { rows: unknown[] };
    expect(audited.rows).toHaveLength(1);
  });

  it('two days later the run that was a day inside is a day past, and goes too', async () => {
    clock.advance(2 * DAY);
    const run = await retention();
    expect(result(run, 'agent_runs').rowsDeleted).toBe(1);
    expect(result(run, 'agent_run_steps')).toMatchObject({ rowsDeleted: 3, partitionsDropped: 0 });
    expect(await rowsOf(runs.inside)).toEqual({ agent_runs: 0, agent_run_steps: 0, agent_run_events: 0 });
  });
});

describe('security', () => {
  it('only the application may drop a month of run logs, and never one that ends after the cut-off', async () => {
    const rows = await app.db.query<{ public: boolean }>(
      `select has_function_privilege('public', 'berth_drop_run_partition(text, text, timestamptz)', 'execute') as public`,
    );
    expect(rows[0]?.public).toBe(false);
    const [current] = (await partitions('agent_run_steps')).slice(-1);
    await expect(
      app.db.query('select berth_drop_run_partition($1, $2, $3::timestamptz)', [
        'agent_run_steps',
        current,
        clock.now().toISOString(),
      ]),
    ).rejects.toThrow(/ends after the cut-off/);
    await expect(
      app.db.query('select berth_drop_run_partition($1, $2, $3::timestamptz)', [
        'usage_events',
        current,
        clock.now().toISOString(),
      ]),
    ).rejects.toThrow(/not a run table/);
    expect(await partitions('agent_run_steps')).toContain(current);
  });
});
