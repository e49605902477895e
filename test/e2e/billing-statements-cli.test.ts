import type { ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { berth, migratedDataDir, startServer } from '../helpers/cli.ts';
import { checkPdf } from '../helpers/pdf.ts';

/**
 * Statements, the usage-cost breakdown and the top-up link as a user gets them from a running
 * server with `berth billing invoices|invoice|usage|topup`, with the initial admin key.
 */

let dataDir: string;
let env: Record<string, string>;
let auth: string[];
let server: { child: ChildProcess; url: string } | undefined;
const thisMonth = new Date().toISOString().slice(0, 7);

beforeAll(async () => {
  dataDir = await migratedDataDir('berth-e2e-statements-');
  env = { BERTH_DATA_DIR: dataDir, BERTH_INVOICE_ISSUER: 'E2E Hosting Ltd' };
  const created = await berth(
    ['admin', 'create', '--email', 'statements@example.com', '--workspace', 'Statements team', '--json'],
    env,
    'correct horse battery staple\n',
  );
  expect(created.code, created.stderr).toBe(0);
  const { apiKey, workspaceId } = JSON.parse(created.stdout);
  const grant = ['operator', 'billing', 'grant', '--workspace', workspaceId, '--amount-usd', '12.50'];
  const granted = await berth([...grant, '--idempotency-key', 'statements-grant-1'], env);
  expect(granted.code, granted.stderr).toBe(0);
  server = await startServer(env);
  auth = ['--url', server.url, '--api-key', apiKey];
}, 180_000);

afterAll(async () => {
  if (server) {
    const exited = new Promise((resolve) => server?.child.on('exit', resolve));
    server.child.kill('SIGTERM');
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

describe('happy', () => {
  it("lists this month's draft, shows it, and saves it as HTML and PDF", async () => {
    const list = await berth(['billing', 'invoices', ...auth, '--json'], env);
    expect(list.code, list.stderr).toBe(0);
    const page = JSON.parse(list.stdout);
    // The free credits of a new workspace (5 USD) and the operator's grant.
    expect(page.data).toEqual([
      expect.objectContaining({ period: thisMonth, status: 'draft', number: null, closingBalanceMicros: 17_500_000 }),
    ]);
    const human = await berth(['billing', 'invoices', ...auth], env);
    expect(human.stdout).toContain(`${thisMonth} (draft)`);
    expect(human.stdout).toContain('closing 17.50 USD');

    const html = path.join(dataDir, 'statement.html');
    const pdf = path.join(dataDir, 'statement.pdf');
    const one = await berth(['billing', 'invoice', thisMonth, ...auth, '--html', html, '--pdf', pdf], env);
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toContain(`Statement ${thisMonth} (draft as of`);
    expect(one.stdout).toMatch(/Granted +17\.50 USD/);
    expect(one.stdout).toContain(`Saved the PDF to ${pdf}.`);
    const page1 = readFileSync(html, 'utf8');
    expect(page1).toContain('Statements team');
    expect(page1).toContain('Issued by E2E Hosting Ltd');
    const check = checkPdf(readFileSync(pdf));
    expect(check.problems).toEqual([]);
    expect(check.text).toContain('Statements team');
    const json = await berth(['billing', 'invoice', thisMonth, ...auth, '--json'], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ period: thisMonth, grantedMicros: 17_500_000, reconciled: true });
  }, 120_000);

  it('breaks usage cost down by model', async () => {
    const usage = await berth(['billing', 'usage', ...auth, '--group-by', 'model', '--json'], env);
    expect(usage.code, usage.stderr).toBe(0);
    expect(JSON.parse(usage.stdout)).toMatchObject({ groupBy: 'model', requests: 0, costMicros: 0, data: [] });
    const human = await berth(['billing', 'usage', ...auth, '--from', `${thisMonth}-01`], env);
    expect(human.stdout).toContain(`${thisMonth}-01 to`);
    expect(human.stdout).toContain('No calls.');
  }, 60_000);
});

describe('errors', () => {
  it('refuses bad periods, dates, groupings and amounts with exit codes 2 or 4', async () => {
    const bad = await berth(['billing', 'invoice', '2026-13', ...auth], env);
    expect(bad.code).toBe(4);
    expect(bad.stderr).toContain('YYYY-MM');
    const badJson = await berth(['billing', 'invoice', 'abc', ...auth, '--json'], env);
    expect(JSON.parse(badJson.stdout)).toMatchObject({ error: { code: 'invalid_period' } });
    const range = await berth(['billing', 'usage', ...auth, '--from', '2026-05-02', '--to', '2026-05-01'], env);
    expect(range.code).toBe(4);
    expect(range.stderr).toContain('from must not be after to');
    expect((await berth(['billing', 'usage', ...auth, '--group-by', 'week'], env)).code).toBe(2);
    for (const amount of ['0.5', 'ten', '25.001']) {
      expect((await berth(['billing', 'topup', ...auth, '--amount-usd', amount], env)).code, amount).toBe(2);
    }
  }, 120_000);

  it('explains that a top-up is an owner action an API key cannot start', async () => {
    const topup = await berth(['billing', 'topup', ...auth, '--amount-usd', '25'], env);
    expect(topup.code).toBe(4);
    expect(topup.stderr).toContain("Buying credits is for the workspace's owners");
  }, 60_000);
});
