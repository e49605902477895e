import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient, type TestResponse } from '../../../test/helpers/client.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { totpCodeAt } from './identity.totp.ts';

let app: TestApp;
const secrets = new Set<string>();

beforeAll(async () => {
  app = await createTestApp();
});
afterAll(async () => {
  await app?.close();
});

type Body = Record<string, unknown>;

function expectProblem(res: TestResponse, status: number, code: string) {
  expect(res.status, res.text).toBe(status);
  expect(res.body.code).toBe(code);
}

/** Moves the clock to the next 30-second step, so a fresh code exists. */
function nextStep() {
  app.clock.advance(30_000);
}

const code = (secret: string) => totpCodeAt(secret, app.clock.now());

/** A signed-up user with TOTP confirmed: its secret and recovery codes. */
async function enrolled(
  opts: { ip?: string } = {},
): Promise<SignedInClient & { secret: string; recoveryCodes: string[] }> {
  const c = await signUp(app, opts);
  const start = await c.post<{ secret: string; otpauthUri: string }>('/api/me/mfa/totp');
  expect(start.status, start.text).toBe(200);
  const secret = start.body.secret;
  secrets.add(secret);
  const confirm = await c.post<{ recoveryCodes: string[] }>('/api/me/mfa/totp/confirm', { code: code(secret) });
  expect(confirm.status, confirm.text).toBe(200);
  for (const rc of confirm.body.recoveryCodes) secrets.add(rc);
  nextStep();
  return Object.assign(c, { secret, recoveryCodes: confirm.body.recoveryCodes });
}

async function challenge(email: string, password: string, ip = '127.0.0.1'): Promise<string> {
  const res = await new TestClient(app, { ip }).post<Body>('/api/auth/login', { email, password });
  expectProblem(res, 401, 'mfa_challenge_required');
  expect(res.headers['set-cookie']).toBeUndefined();
  const token = String(res.body.challengeToken);
  expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
  secrets.add(token);
  return token;
}

describe('happy', () => {
  it('enrols TOTP: secret and otpauth URI once, confirmation answers 10 recovery codes, mfaEnabled on the session', async () => {
    const c = await signUp(app);
    const start = await c.post<{ secret: string; otpauthUri: string }>('/api/me/mfa/totp');
    expect(start.status).toBe(200);
    expect(start.body.otpauthUri).toMatch(/^otpauth:\/\/totp\/Berth:/);
    expect(start.body.otpauthUri).toContain(`secret=${start.body.secret}`);
    // Starting again before confirming replaces the pending secret.
    const again = await c.post<{ secret: string }>('/api/me/mfa/totp');
    expect(again.body.secret).not.toBe(start.body.secret);
    expectProblem(await c.post('/api/me/mfa/totp/confirm', { code: code(start.body.secret) }), 400, 'invalid_mfa_code');
    const confirm = await c.post<{ recoveryCodes: string[] }>('/api/me/mfa/totp/confirm', {
      code: code(again.body.secret),
    });
    expect(confirm.status).toBe(200);
    expect(confirm.body.recoveryCodes).toHaveLength(10);
    expect(new Set(confirm.body.recoveryCodes).size).toBe(10);
    const me = await c.get<{ user: Body }>('/api/me');
    expect(me.body.user.mfaEnabled).toBe(true);
    expect(app.http.hasRoute({ method: 'GET', url: '/api/me/mfa/totp' })).toBe(false);
    const [row] = await app.db.query<{ confirmed_at: string | null }>(
      'select confirmed_at from mfa_totp where user_id = $1',
      [c.userId],
    );
    expect(row?.confirmed_at).not.toBeNull();
    secrets.add(start.body.secret);
    secrets.add(again.body.secret);
    for (const rc of confirm.body.recoveryCodes) secrets.add(rc);
  });

  it('signs in in two steps with a TOTP code', async () => {
    const u = await enrolled();
    const token = await challenge(u.email, u.password);
    const client = new TestClient(app);
    const res = await client.post<{ user: Body; csrfToken: string }>('/api/auth/login/mfa', {
      challengeToken: token,
      code: code(u.secret),
    });
    expect(res.status, res.text).toBe(200);
    expect(res.body.user.mfaEnabled).toBe(true);
    expect(client.cookies.size).toBe(1);
    const types = (await app.modules.identity.service.listSecurityEvents(u.userId)).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['mfa_enabled', 'mfa_challenge_issued', 'login_succeeded']));
  });

  it('signs in with a recovery code, once', async () => {
    const u = await enrolled();
    const rc = u.recoveryCodes[0] ?? '';
    const first = await new TestClient(app).post('/api/auth/login/mfa', {
      challengeToken: await challenge(u.email, u.password),
      recoveryCode: rc.toUpperCase(),
    });
    expect(first.status, first.text).toBe(200);
    const second = await new TestClient(app).post('/api/auth/login/mfa', {
      challengeToken: await challenge(u.email, u.password),
      recoveryCode: rc,
    });
    expectProblem(second, 400, 'invalid_mfa_code');
    const types = (await app.modules.identity.service.listSecurityEvents(u.userId)).map((e) => e.type);
    expect(types).toContain('recovery_code_used');
  });

  it('regenerates recovery codes: the old ones stop working', async () => {
    const u = await enrolled();
    const res = await u.post<{ recoveryCodes: string[] }>('/api/me/mfa/recovery-codes', { code: code(u.secret) });
    expect(res.status, res.text).toBe(200);
    expect(res.body.recoveryCodes).toHaveLength(10);
    for (const rc of res.body.recoveryCodes) secrets.add(rc);
    nextStep();
    const old = await new TestClient(app).post('/api/auth/login/mfa', {
      challengeToken: await challenge(u.email, u.password),
      recoveryCode: u.recoveryCodes[1],
    });
    expectProblem(old, 400, 'invalid_mfa_code');
    const fresh = await new TestClient(app).post('/api/auth/login/mfa', {
      challengeToken: await challenge(u.email, u.password),
      recoveryCode: res.body.recoveryCodes[0],
    });
    expect(fresh.status).toBe(200);
  });

  it('turns TOTP off with the password or a code, then sign-in needs the password only', async () => {
    const u = await enrolled();
    expect((await u.request('DELETE', '/api/me/mfa/totp', { password: u.password })).status).toBe(200);
    expect((await u.get<{ user: Body }>('/api/me')).body.user.mfaEnabled).toBe(false);
    const login = await new TestClient(app).post('/api/auth/login', { email: u.email, password: u.password });
    expect(login.status).toBe(200);
    const [n] = await app.db.query<{ n: string }>(
      'select count(*)::text as n from mfa_recovery_codes where user_id = $1',
      [u.userId],
    );
    expect(n?.n).toBe('0');

    const v = await enrolled();
    expect((await v.request('DELETE', '/api/me/mfa/totp', { code: code(v.secret) })).status).toBe(200);
    const types = (await app.modules.identity.service.listSecurityEvents(v.userId)).map((e) => e.type);
    expect(types).toContain('mfa_disabled');
  });
});

describe('errors', () => {
  it('refuses wrong codes, a second enrolment and malformed bodies', async () => {
    const u = await enrolled();
    expectProblem(await u.post('/api/me/mfa/totp'), 409, 'mfa_already_enabled');
    expectProblem(await u.post('/api/me/mfa/totp/confirm', { code: '123456' }), 409, 'conflict');
    expectProblem(await u.post('/api/me/mfa/recovery-codes', { code: '000000' }), 400, 'invalid_mfa_code');
    expectProblem(await u.post('/api/me/mfa/recovery-codes', { code: '12345' }), 400, 'validation_failed');
    expectProblem(await u.request('DELETE', '/api/me/mfa/totp', { code: '000000' }), 400, 'invalid_mfa_code');
    expectProblem(
      await u.request('DELETE', '/api/me/mfa/totp', { password: 'wrong-password-1' }),
      401,
      'invalid_credentials',
    );
    expectProblem(
      await u.request('DELETE', '/api/me/mfa/totp', { code: '000000', password: 'x' }),
      400,
      'validation_failed',
    );
    expect((await u.get<{ user: Body }>('/api/me')).body.user.mfaEnabled).toBe(true);
    const c = await signUp(app);
    expectProblem(await c.post('/api/me/mfa/totp/confirm', { code: '123456' }), 409, 'conflict');
    expectProblem(await c.request('DELETE', '/api/me/mfa/totp', { password: c.password }), 404, 'not_found');
  });

  it('refuses unknown, spent and expired challenges, and a challenge after 5 wrong codes', async () => {
    const u = await enrolled({ ip: '203.0.113.20' });
    const anon = new TestClient(app, { ip: '203.0.113.20' });
    expectProblem(
      await anon.post('/api/auth/login/mfa', { challengeToken: 'A'.repeat(43), code: '123456' }),
      400,
      'invalid_token',
    );
    expectProblem(
      await anon.post('/api/auth/login/mfa', { challengeToken: 'nope', code: '123456' }),
      400,
      'invalid_token',
    );
    expectProblem(
      await anon.post('/api/auth/login/mfa', { challengeToken: 'A'.repeat(43), code: '123456', recoveryCode: 'x' }),
      400,
      'validation_failed',
    );

    const used = await challenge(u.email, u.password, '203.0.113.20');
    const winner = new TestClient(app, { ip: '203.0.113.20' });
    expect((await winner.post('/api/auth/login/mfa', { challengeToken: used, code: code(u.secret) })).status).toBe(200);
    nextStep();
    expectProblem(
      await anon.post('/api/auth/login/mfa', { challengeToken: used, code: code(u.secret) }),
      400,
      'invalid_token',
    );

    const expiring = await challenge(u.email, u.password, '203.0.113.20');
    app.clock.advance(5 * 60_000 + 1000);
    expectProblem(
      await anon.post('/api/auth/login/mfa', { challengeToken: expiring, code: code(u.secret) }),
      400,
      'invalid_token',
    );

    const guessed = await challenge(u.email, u.password, '203.0.113.21');
    const other = new TestClient(app, { ip: '203.0.113.21' });
    for (let i = 0; i < 5; i++) {
      expectProblem(
        await other.post('/api/auth/login/mfa', { challengeToken: guessed, code: '000000' }),
        400,
        'invalid_mfa_code',
      );
    }
    expectProblem(
      await other.post('/api/auth/login/mfa', { challengeToken: guessed, code: code(u.secret) }),
      400,
      'invalid_token',
    );
    app.clock.advance(2 * 60_000);
  });
});

describe('security', () => {
  it('accepts a TOTP code once: the same code again is refused', async () => {
    const u = await enrolled();
    const c = code(u.secret);
    expect(
      (
        await new TestClient(app).post('/api/auth/login/mfa', {
          challengeToken: await challenge(u.email, u.password),
          code: c,
        })
      ).status,
    ).toBe(200);
    const again = await new TestClient(app).post('/api/auth/login/mfa', {
      challengeToken: await challenge(u.email, u.password),
      code: c,
    });
    expectProblem(again, 400, 'invalid_mfa_code');
    // The code of the previous step (still inside the window) is refused too: steps only move forward.
    const previous = totpCodeAt(u.secret, new Date(app.clock.now().getTime() - 30_000));
    const older = await new TestClient(app).post('/api/auth/login/mfa', {
      challengeToken: await challenge(u.email, u.password),
      code: previous,
    });
    expectProblem(older, 400, 'invalid_mfa_code');
    nextStep();
    const next = await new TestClient(app).post('/api/auth/login/mfa', {
      challengeToken: await challenge(u.email, u.password),
      code: code(u.secret),
    });
    expect(next.status).toBe(200);
  });

  it('accepts a code exactly once when 10 attempts race with it', async () => {
    const u = await enrolled({ ip: '203.0.113.50' });
    const tokens: string[] = [];
    for (let i = 0; i < 10; i++) tokens.push(await challenge(u.email, u.password, `203.0.113.${60 + i}`));
    const c = code(u.secret);
    const results = await Promise.all(
      tokens.map((challengeToken, i) =>
        new TestClient(app, { ip: `203.0.113.${60 + i}` }).post('/api/auth/login/mfa', { challengeToken, code: c }),
      ),
    );
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(results.filter((r) => r.status === 400 && r.body.code === 'invalid_mfa_code')).toHaveLength(9);
    nextStep();
  });

  it('counts wrong second-factor codes against the account throttle', async () => {
    const u = await enrolled({ ip: '198.18.0.1' });
    for (let round = 0; round < 2; round++) {
      const t = await challenge(u.email, u.password, `198.18.${round}.2`);
      for (let i = 0; i < 5; i++) {
        await new TestClient(app, { ip: `198.18.${round}.${10 + i}` }).post('/api/auth/login/mfa', {
          challengeToken: t,
          code: '000001',
        });
      }
    }
    const blocked = await new TestClient(app, { ip: '198.18.9.9' }).post('/api/auth/login', {
      email: u.email,
      password: u.password,
    });
    expectProblem(blocked, 429, 'too_many_attempts');
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
    app.clock.advance(15 * 60_000);
  });

  it('stores the TOTP secret only as vault ciphertext and recovery codes only hashed', async () => {
    const u = await enrolled();
    const [row] = await app.db.query<{ secret_ciphertext: Uint8Array }>(
      'select secret_ciphertext from mfa_totp where user_id = $1',
      [u.userId],
    );
    const stored = Buffer.from(row?.secret_ciphertext ?? new Uint8Array());
    expect(stored.length).toBeGreaterThan(20);
    expect(stored.toString('latin1')).not.toContain(u.secret);
    const codes = await app.db.query<{ code_hash: string }>(
      'select code_hash from mfa_recovery_codes where user_id = $1',
      [u.userId],
    );
    expect(codes).toHaveLength(10);
    for (const c of codes) {
      expect(c.code_hash).toMatch(/^[0-9a-f]{64}$/);
      for (const rc of u.recoveryCodes) expect(c.code_hash).not.toContain(rc);
    }
  });

  it('writes no TOTP secret, recovery code or challenge token to the logs or the database in clear', async () => {
    const logs = app.logs.join('\n');
    const tables = await app.db.query<{ table_name: string }>(
      "select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'",
    );
    const rows: string[] = [];
    await app.db.system(async (tx) => {
      for (const { table_name } of tables) {
        const res = await tx.execute(sql.raw(`select t::text as row from "${table_name}" t`));
        for (const r of (res as { rows: Array<{ row: string }> }).rows) rows.push(r.row);
      }
    });
    const dump = rows.join('\n');
    expect(secrets.size).toBeGreaterThan(20);
    for (const s of secrets) {
      expect(logs.includes(s), 'a secret reached the logs').toBe(false);
      expect(dump.includes(s), 'a secret is stored in clear').toBe(false);
    }
  });
});
