import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { berth, migratedDataDir } from '../helpers/cli.ts';

/**
 * `berth operator billing grant --expires`: promotional credits granted from the command
 * line, on the database (no server holds it), with the day they last through.
 */

let dataDir: string;
let env: Record<string, string>;
let workspaceId: string;
const nextYear = new Date().getUTCFullYear() + 1;

beforeAll(async () => {
  dataDir = await migratedDataDir('berth-e2e-promotions-');
  env = { BERTH_DATA_DIR: dataDir };
  const created = await berth(
    ['admin', 'create', '--email', 'promotions@example.com', '--workspace', 'Promoted team', '--json'],
    env,
    'correct horse battery staple\n',
  );
  expect(created.code, created.stderr).toBe(0);
  workspaceId = JSON.parse(created.stdout).workspaceId;
}, 120_000);

afterAll(() => {
  rmSync(dataDir, { recursive: true, force: true });
});

const grant = (...args: string[]) =>
  berth(['operator', 'billing', 'grant', '--workspace', workspaceId, '--amount-usd', '5', ...args], env);

describe('errors', () => {
  it('refuses expiries that are not dates (exit 2) or already past (exit 4), granting nothing', async () => {
    for (const expires of [`${nextYear}-02-30`, 'soon', `${nextYear}-1-31`]) {
      const r = await grant('--expires', expires);
      expect(r.code, `${expires}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain('--expires');
    }
    const past = await grant('--expires', '2020-01-31');
    expect(past.code, past.stderr).toBe(4);
    expect(past.stderr).toContain('in the future');
  }, 120_000);
});

describe('happy', () => {
  it('grants promotional credits lasting through the given day (UTC)', async () => {
    const r = await grant('--expires', `${nextYear}-01-31`, '--idempotency-key', 'launch-promo-0001', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      kind: 'grant',
      amountMicros: 5_000_000,
      // The free 5 USD of a new workspace, and this grant: the refused ones granted nothing.
      availableAfterMicros: 10_000_000,
      expiresAt: `${nextYear}-02-01T00:00:00.000Z`,
    });
    const text = await grant('--expires', `${nextYear}-03-01T12:00:00+02:00`);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(`expiring at ${nextYear}-03-01T10:00:00.000Z`);
    const verify = await berth(['billing', 'verify', '--json'], env);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true });
  }, 120_000);
});
