import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { berth, migratedDataDir, startServer } from '../helpers/cli.ts';

/**
 * The billing commands as an operator and a user run them: grants, adjustments and plans on
 * the database (before the server holds it), verification, then balance and entries over
 * HTTP with the initial admin key.
 */

let dataDir: string;
let env: Record<string, string>;
let workspaceId: string;
let apiKey: string;
let server: { child: ChildProcess; url: string } | undefined;

beforeAll(async () => {
  dataDir = await migratedDataDir('berth-e2e-billing-');
  env = { BERTH_DATA_DIR: dataDir };
  const created = await berth(
    ['admin', 'create', '--email', 'billing@example.com', '--workspace', 'Billing team', '--json'],
    env,
    'correct horse battery staple\n',
  );
  expect(created.code, created.stderr).toBe(0);
  const out = JSON.parse(created.stdout);
  apiKey = out.apiKey;
  workspaceId = out.workspaceId;
}, 120_000);

afterAll(async () => {
  if (server) {
    const exited = new Promise((resolve) => server?.child.on('exit', resolve));
    server.child.kill('SIGTERM');
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

// Runs first, while no server holds the embedded database.
describe('errors', () => {
  it('refuses bad amounts and unknown plans with exit code 2 or 4, changing nothing', async () => {
    for (const amount of ['12.5000001', 'ten', '0', '-3']) {
      const r = await berth(['operator', 'billing', 'grant', '--workspace', workspaceId, '--amount-usd', amount], env);
      expect(r.code, `${amount}: ${r.stderr}`).toBe(2);
    }
    const plan = await berth(['operator', 'plans', 'set', '--workspace', workspaceId, '--plan', 'platinum'], env);
    expect(plan.code).toBe(4);
    expect(plan.stderr).toContain('There is no plan called platinum');
  }, 120_000);
});

describe('happy', () => {
  it('grants, adjusts, sets the plan and verifies on the database, then shows balance and entries over HTTP', async () => {
    const grant = ['operator', 'billing', 'grant', '--workspace', workspaceId, '--amount-usd', '12.50'];
    const first = await berth([...grant, '--idempotency-key', 'first-grant-0001', '--json'], env);
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ kind: 'grant', amountMicros: 12_500_000 });
    // The same key grants once.
    const again = await berth([...grant, '--idempotency-key', 'first-grant-0001', '--json'], env);
    expect(JSON.parse(again.stdout)).toEqual(JSON.parse(first.stdout));
    const adjusted = await berth(
      ['operator', 'billing', 'adjust', '--workspace', workspaceId, '--amount-usd', '-0.5', '--memo', 'correction'],
      env,
    );
    expect(adjusted.code, adjusted.stderr).toBe(0);
    expect(adjusted.stdout).toContain('by -0.50 USD: 17.00 USD available');
    const plan = await berth(['operator', 'plans', 'set', '--workspace', workspaceId, '--plan', 'starter'], env);
    expect(plan.stdout).toContain('is on the starter plan');
    const verify = await berth(['billing', 'verify', '--json'], env);
    expect(verify.code, verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, workspaces: 1 });

    server = await startServer(env);
    const auth = ['--url', server.url, '--api-key', apiKey];
    const balance = await berth(['billing', 'balance', ...auth], env);
    expect(balance.code, balance.stderr).toBe(0);
    expect(balance.stdout).toContain('17.00 USD available, 0.00 USD reserved for calls in flight (plan starter)');
    const entries = await berth(['billing', 'entries', ...auth, '--json'], env);
    expect(JSON.parse(entries.stdout).data.map((e: { kind: string }) => e.kind)).toEqual(['adjust', 'grant', 'grant']);

    // Budgets over HTTP with the admin key (workspace:admin covers budgets:manage).
    const set = await berth(
      ['billing', 'budget', 'set', ...auth, '--period', 'month', '--limit-usd', '2.5', '--json'],
      env,
    );
    expect(set.code, set.stderr).toBe(0);
    const budget = JSON.parse(set.stdout) as { id: string; limitMicros: number; period: string };
    expect(budget).toMatchObject({ limitMicros: 2_500_000, period: 'month' });
    const listed = await berth(['billing', 'budgets', ...auth], env);
    expect(listed.stdout).toContain(`${budget.id}  workspace`);
    expect(listed.stdout).toContain('limit 2.50 USD, spent 0.00');
    const bad = await berth(['billing', 'budget', 'set', ...auth, '--period', 'week', '--limit-usd', '1'], env);
    expect(bad.code).toBe(2);
    const removed = await berth(['billing', 'budget', 'remove', ...auth, budget.id], env);
    expect(removed.code, removed.stderr).toBe(0);
    expect((await berth(['billing', 'budgets', ...auth], env)).stdout).toContain('No budgets.');

    // The operator verifies over HTTP while the server holds the embedded database.
    const overHttp = ['billing', 'verify', '--url', server.url, '--email', 'billing@example.com', '--json'];
    const verified = await berth(overHttp, env, 'correct horse battery staple\n');
    expect(verified.code, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ ok: true, workspaces: 1 });
    // Operator movements and plans over HTTP too, while the server holds the embedded database.
    const login = ['--url', server.url, '--email', 'billing@example.com'];
    const password = 'correct horse battery staple\n';
    const granted = await berth(
      ['operator', 'billing', 'grant', '--workspace', workspaceId, '--amount-usd', '1', ...login, '--json'],
      env,
      password,
    );
    expect(granted.code, granted.stderr).toBe(0);
    expect(JSON.parse(granted.stdout)).toMatchObject({ kind: 'grant', amountMicros: 1_000_000 });
    const moved = await berth(
      ['operator', 'billing', 'adjust', '--workspace', workspaceId, '--amount-usd', '-0.25', '--memo', 'fix', ...login],
      env,
      password,
    );
    expect(moved.stdout).toContain('by -0.25 USD: 17.75 USD available');
    const planned = await berth(
      ['operator', 'plans', 'set', '--workspace', workspaceId, '--plan', 'scale', ...login],
      env,
      password,
    );
    expect(planned.stdout).toContain('is on the scale plan');
    const afterwards = await berth(
      ['billing', 'verify', '--workspace', workspaceId, ...login, '--json'],
      env,
      password,
    );
    expect(JSON.parse(afterwards.stdout)).toMatchObject({ ok: true, workspaces: 1 });
    const wrong = await berth(overHttp, env, 'not the password\n');
    expect(wrong.code).toBe(4);
    expect(`${wrong.stdout}${wrong.stderr}`).toContain('invalid_credentials');
  }, 180_000);
});
