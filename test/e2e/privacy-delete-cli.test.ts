import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { berth, migratedDataDir, startServer } from '../helpers/cli.ts';

/**
 * `berth privacy delete` as a user runs it against a running server: it signs in, confirms
 * with the password again and closes the account; the operator's own account cannot be
 * deleted while they are the last operator.
 */

let dataDir: string;
let env: Record<string, string>;
let server: { child: ChildProcess; url: string } | undefined;
const password = 'a long and unguessable passphrase';

beforeAll(async () => {
  dataDir = await migratedDataDir('berth-e2e-privacy-');
  env = { BERTH_DATA_DIR: dataDir };
  const created = await berth(
    ['admin', 'create', '--email', 'operator@example.com', '--workspace', 'Ops', '--json'],
    env,
    'correct horse battery staple\n',
  );
  expect(created.code, created.stderr).toBe(0);
  server = await startServer(env);
  const signup = await fetch(`${server.url}/api/auth/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'leaving@example.com', password }),
  });
  expect(signup.status, await signup.clone().text()).toBe(201);
}, 120_000);

afterAll(async () => {
  if (server) {
    const exited = new Promise((resolve) => server?.child.on('exit', resolve));
    server.child.kill('SIGTERM');
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

describe('errors', () => {
  it('does nothing without --yes, with a wrong password, or for the last operator', async () => {
    const url = server?.url ?? '';
    const noYes = await berth(
      ['privacy', 'delete', '--url', url, '--email', 'leaving@example.com'],
      env,
      `${password}\n`,
    );
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toContain('--yes');

    const wrong = await berth(
      ['privacy', 'delete', '--url', url, '--email', 'leaving@example.com', '--yes'],
      env,
      'not the password\n',
    );
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/not correct/);

    const operator = await berth(
      ['privacy', 'delete', '--url', url, '--email', 'operator@example.com', '--yes', '--json'],
      env,
      'correct horse battery staple\n',
    );
    expect(operator.code).not.toBe(0);
    expect(`${operator.stdout}${operator.stderr}`).toContain('last_operator');
  }, 120_000);
});

describe('happy', () => {
  it('closes the account and says when it will be erased; it can no longer sign in', async () => {
    const url = server?.url ?? '';
    const r = await berth(
      ['privacy', 'delete', '--url', url, '--email', 'leaving@example.com', '--yes', '--json'],
      env,
      `${password}\n`,
    );
    expect(r.code, r.stderr).toBe(0);
    const deletion = JSON.parse(r.stdout);
    expect(deletion).toMatchObject({ status: 'scheduled' });
    expect(new Date(deletion.eraseAfter).getTime() - Date.now()).toBeGreaterThan(29 * 24 * 3600 * 1000);

    const login = await fetch(`${url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'leaving@example.com', password }),
    });
    expect(login.status).toBe(403);
    expect(await login.json()).toMatchObject({ code: 'account_disabled' });
  }, 120_000);
});
