import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY } from '../../platform/clock.ts';

/**
 * `berth retention run|runs`, in process, over HTTP against a listening test server, signed
 * in as an operator: the printed table per data class, `--json`, `--dry-run` with a future
 * `--as-of`, and the refusals.
 */

let app: TestApp;
let url: string;
let op: SignedInClient;
let user: SignedInClient;

beforeAll(async () => {
  app = await createTestApp();
  op = await signUp(app);
  await makeOperator(app, op.userId);
  user = await signUp(app);
  // A security event a day past its 13-month window, and one a day inside it.
  const at = (days: number) => new Date(app.clock.now().getTime() - days * DAY).toISOString();
  await app.db.query(
    `insert into security_events (id, user_id, type, details, created_at) values
       ('sev_cli_past', $1, 'login', '{}', $2), ('sev_cli_inside', $1, 'login', '{}', $3)`,
    [user.userId, at(13 * 31 + 1), at(13 * 30 - 1)],
  );
  url = await app.http.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await app?.close();
});

async function berth(args: string[], password?: string) {
  return berthInProcess(args, {}, password === undefined ? '' : `${password}\n`);
}

const asOp = () => ['--url', url, '--email', op.email];
const day = (days: number) => new Date(app.clock.now().getTime() + days * DAY).toISOString().slice(0, 10);
const securityIds = async () =>
  (
    await app.db.query<{ id: string }>(
      `select id from security_events where id in ('sev_cli_past', 'sev_cli_inside') order by id`,
    )
  ).map((r) => r.id);

describe('happy', () => {
  it('previews a future date with --dry-run, then runs and prints what went per class', async () => {
    const preview = await berth(
      ['retention', 'run', ...asOp(), '--dry-run', '--as-of', day(60), '--json'],
      op.password,
    );
    expect(preview.code, preview.stderr).toBe(0);
    const dry = JSON.parse(preview.stdout) as {
      dryRun: boolean;
      results: Array<{ table: string; rowsDeleted: number }>;
    };
    expect(dry.dryRun).toBe(true);
    // 60 days on, both events are past their window: counted, not removed.
    expect(dry.results.find((r) => r.table === 'security_events')?.rowsDeleted).toBeGreaterThanOrEqual(2);
    expect(await securityIds()).toEqual(['sev_cli_inside', 'sev_cli_past']);

    const run = await berth(['retention', 'run', ...asOp()], op.password);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^Retention run rtn_\S+ as of \S+: completed/);
    expect(run.stdout).toMatch(/security_13_months\s+security_events\s+removed 1 row\(s\) \(older than /);
    expect(run.stdout).toMatch(/usage_13_months\s+usage_events\s+removed 0 row\(s\)/);
    expect(await securityIds()).toEqual(['sev_cli_inside']);

    const runs = await berth(['retention', 'runs', ...asOp(), '--json'], op.password);
    expect(runs.code, runs.stderr).toBe(0);
    const list = JSON.parse(runs.stdout) as Array<{ dryRun: boolean; trigger: string; startedBy: string }>;
    expect(list.map((r) => r.dryRun)).toEqual([false, true]);
    expect(list.every((r) => r.trigger === 'operator' && r.startedBy === op.userId)).toBe(true);
  });
});

describe('errors', () => {
  it('refuses a removing run dated in the future, and a bad date, removing nothing', async () => {
    const future = await berth(['retention', 'run', ...asOp(), '--as-of', day(2)], op.password);
    expect(future.code).toBe(4);
    expect(future.stderr).toContain('cannot be dated in the future');
    const bad = await berth(['retention', 'run', ...asOp(), '--dry-run', '--as-of', 'soon'], op.password);
    expect(bad.code).toBe(2);
    expect(await securityIds()).toEqual(['sev_cli_inside']);
  });
});

describe('security', () => {
  it('is refused to a user who is not an operator', async () => {
    const res = await berth(['retention', 'run', '--url', url, '--email', user.email, '--dry-run'], user.password);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('Only platform operators');
  });
});
