import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient, type TestResponse } from '../../../test/helpers/client.ts';
import { fullDatabaseText } from '../../../test/helpers/dump.ts';
import { logIn, makeOperator, signUp, testEmail, testIp, testPassword } from '../../../test/helpers/identity.ts';
import { HOUR, MINUTE } from '../../platform/clock.ts';
import { passwordHasher } from './identity.passwords.ts';
import { totpCodeAt } from './identity.totp.ts';

let app: TestApp;

beforeAll(async () => {
  app = await createTestApp();
});
afterAll(async () => {
  await app?.close();
});
afterEach(() => {
  vi.restoreAllMocks();
});

type Body = Record<string, unknown>;

function expectProblem(res: TestResponse, status: number, code: string) {
  expect(res.status, res.text).toBe(status);
  expect(res.body.code).toBe(code);
}

/** Runs SQL as the table owner (server Postgres runs requests as the app role, which may not add triggers). */
async function asOwner(text: string): Promise<void> {
  if (app.testDb.url) {
    const c = new pg.Client({ connectionString: app.testDb.url });
    await c.connect();
    try {
      await c.query(text);
    } finally {
      await c.end();
    }
  } else {
    await app.db.exec(text);
  }
}

/**
 * Makes the next matching statement fail inside the database (a trigger raising an error),
 * to prove that everything before it in the same use case rolls back.
 */
async function failWhen(table: string, event: 'insert' | 'update', condition: string): Promise<() => Promise<void>> {
  await asOwner(`
    create or replace function berth_test_fail() returns trigger language plpgsql as $$
    begin raise exception 'injected failure'; end $$;
    create trigger berth_test_fail before ${event} on ${table} for each row when (${condition})
      execute function berth_test_fail();`);
  return () => asOwner(`drop trigger berth_test_fail on ${table}; drop function berth_test_fail();`);
}

const code = (secret: string) => totpCodeAt(secret, app.clock.now());

/** A signed-up user (requests from `ip`) with TOTP confirmed. */
async function enrolled(ip: string) {
  const c = await signUp(app, { ip });
  const start = await c.post<{ secret: string }>('/api/me/mfa/totp');
  const secret = start.body.secret;
  const confirm = await c.post<{ recoveryCodes: string[] }>('/api/me/mfa/totp/confirm', { code: code(secret) });
  expect(confirm.status, confirm.text).toBe(200);
  app.clock.advance(30_000);
  return Object.assign(c, { secret });
}

async function eventsOf(userId: string) {
  return app.modules.identity.service.listSecurityEvents(userId, 1000);
}

/** The newest mail to an address with a tag, after queued mail jobs ran. */
async function mailTo(email: string, tag: string) {
  await app.jobs.drain();
  const messages = await app.modules.notifications.service.listOutbox({ limit: 1000 });
  return messages.find((m) => m.to === email && m.tag === tag) ?? null;
}

const tokenIn = (text: string | undefined) => text?.match(/token=([A-Za-z0-9_-]{43})/)?.[1] ?? '';

const databaseDump = () => fullDatabaseText(app);

/** Row counts of every table, to compare the work two requests did. */
async function tableCounts(): Promise<Record<string, number>> {
  const tables = await app.db.query<{ s: string; t: string }>(
    "select table_schema as s, table_name as t from information_schema.tables where table_schema in ('public', 'pgboss') and table_type = 'BASE TABLE' order by 1, 2",
  );
  const out: Record<string, number> = {};
  await app.db.system(async (tx) => {
    for (const { s, t } of tables) {
      const res = await tx.execute(sql.raw(`select count(*)::int as n from "${s}"."${t}"`));
      out[`${s}.${t}`] = Number((res as unknown as { rows: Array<{ n: number }> }).rows[0]?.n ?? 0);
    }
  });
  return out;
}

function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v !== (before[k] ?? 0)) out[k] = v - (before[k] ?? 0);
  return out;
}

describe('happy', () => {
  it('keeps an emailed link in the outbox only encrypted, until it expires, and drops it once used', async () => {
    const u = await signUp(app);
    const mail = await mailTo(u.email, 'verify_email');
    const token = tokenIn(mail?.text);
    expect(token).toHaveLength(43);
    const [row] = await app.db.query<{ body_ciphertext: Uint8Array; expires_at: Date; user_id: string }>(
      'select body_ciphertext, expires_at, user_id from email_outbox where id = $1',
      [mail?.id],
    );
    expect(Buffer.from(row?.body_ciphertext ?? new Uint8Array()).toString('latin1')).not.toContain(token);
    expect(row?.user_id).toBe(u.userId);
    // The row lives exactly as long as the link: BERTH_EMAIL_TOKEN_TTL_MINUTES (24 h).
    const [tok] = await app.db.query<{ expires_at: Date }>(
      "select expires_at from email_tokens where user_id = $1 and purpose = 'verify_email'",
      [u.userId],
    );
    expect(new Date(row?.expires_at ?? 0).toISOString()).toBe(new Date(tok?.expires_at ?? 1).toISOString());
    expect((await new TestClient(app).post('/api/auth/verify-email', { token })).status).toBe(200);
    expect(await mailTo(u.email, 'verify_email')).toBeNull();
  });

  it('mails the password-reset link from a job, not on the request path', async () => {
    const u = await signUp(app);
    const res = await new TestClient(app, { ip: testIp() }).post('/api/auth/password/forgot', { email: u.email });
    expect(res.status).toBe(200);
    const queued = await app.modules.notifications.service.listOutbox({ limit: 1000 });
    expect(queued.some((m) => m.to === u.email && m.tag === 'reset_password')).toBe(false);
    const mail = await mailTo(u.email, 'reset_password');
    const password = testPassword();
    const reset = await new TestClient(app).post('/api/auth/password/reset', { token: tokenIn(mail?.text), password });
    expect(reset.status, reset.text).toBe(200);
    expect(await mailTo(u.email, 'reset_password')).toBeNull();
    await logIn(app, u.email, password, { ip: testIp() });
  });
});

describe('errors', () => {
  it('answers 400 invalid_token to a second step whose user turned TOTP off since the challenge', async () => {
    const u = await enrolled('198.51.100.10');
    const first = await new TestClient(app, { ip: '198.51.100.10' }).post<Body>('/api/auth/login', {
      email: u.email,
      password: u.password,
    });
    expectProblem(first, 401, 'mfa_challenge_required');
    expect((await u.request('DELETE', '/api/me/mfa/totp', { password: u.password })).status).toBe(200);
    const second = await new TestClient(app, { ip: '198.51.100.10' }).post('/api/auth/login/mfa', {
      challengeToken: first.body.challengeToken,
      code: code(u.secret),
    });
    expectProblem(second, 400, 'invalid_token');
  });

  it('never leaves no active operator: disabled operators do not count', async () => {
    const opA = await signUp(app);
    const opB = await signUp(app);
    for (const o of await app.db.query<{ id: string }>('select id from users where is_operator')) {
      await app.db.query('update users set is_operator = false where id = $1', [o.id]);
    }
    await makeOperator(app, opA.userId);
    await makeOperator(app, opB.userId);
    // B is disabled (by A); A is then the only active operator.
    expect((await opA.post(`/api/operator/users/${opB.userId}/disable`)).status).toBe(200);
    expect(await app.modules.identity.service.countActiveOperators()).toBe(1);
    expect(await app.modules.identity.service.countOperators()).toBe(2);
    // Removing A would leave only a disabled operator.
    const svc = app.modules.identity.service;
    const meta = { ip: '127.0.0.1', userAgent: null, requestId: 'test' };
    const asB = {
      kind: 'session' as const,
      userId: opB.userId,
      sessionId: 'ses_x',
      mfaEnabled: false,
      isOperator: true,
    };
    await expect(svc.removeOperator(asB, opA.userId, meta)).rejects.toMatchObject({ code: 'last_operator' });
    // Nor may A be disabled (here by B's stale session, as the CLI or a race would).
    await expect(svc.disableUser(asB, opA.userId, meta)).rejects.toMatchObject({ code: 'last_operator' });
    expect((await opA.get('/api/me')).status).toBe(200);
    // With B enabled again, A may go.
    expect((await opA.post(`/api/operator/users/${opB.userId}/enable`)).status).toBe(200);
    await svc.disableUser(asB, opA.userId, meta);
    expect(await svc.countActiveOperators()).toBe(1);
  });

  it('limits sign-ups per IP with 429 rate_limited and Retry-After', async () => {
    const small = await createTestApp({ config: { BERTH_SIGNUP_IP_MAX: 3 } });
    try {
      const ip = '192.0.2.80';
      for (let i = 0; i < 3; i++) await signUp(small, { ip });
      const refused = await new TestClient(small, { ip }).post('/api/auth/signup', {
        email: testEmail(),
        password: testPassword(),
      });
      expectProblem(refused, 429, 'rate_limited');
      expect(Number(refused.headers['retry-after'])).toBe(3600);
      await signUp(small, { ip: '192.0.2.81' });
      small.clock.advance(HOUR);
      await signUp(small, { ip });
    } finally {
      await small.close();
    }
  });

  it('limits password-reset requests per address, alike for unknown and known addresses', async () => {
    const u = await signUp(app);
    const ghost = testEmail('ghost');
    for (const address of [u.email, ghost]) {
      for (let i = 0; i < 5; i++) {
        const ok = await new TestClient(app, { ip: testIp() }).post('/api/auth/password/forgot', { email: address });
        expect(ok.status).toBe(200);
      }
      const refused = await new TestClient(app, { ip: testIp() }).post('/api/auth/password/forgot', {
        email: address.toUpperCase(),
      });
      expectProblem(refused, 429, 'rate_limited');
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    }
    await app.jobs.drain();
    const mails = await app.modules.notifications.service.listOutbox({ limit: 1000 });
    expect(mails.filter((m) => m.to === u.email && m.tag === 'reset_password')).toHaveLength(5);
    expect(mails.filter((m) => m.to === ghost)).toHaveLength(0);
  });

  it('limits verification resends per address, and password-reset requests per IP', async () => {
    const u = await signUp(app);
    for (let i = 0; i < 5; i++) expect((await u.post('/api/auth/verify-email/resend')).status).toBe(200);
    expectProblem(await u.post('/api/auth/verify-email/resend'), 429, 'rate_limited');

    const ip = '203.0.113.99';
    for (let i = 0; i < 20; i++) {
      const res = await new TestClient(app, { ip }).post('/api/auth/password/forgot', { email: testEmail() });
      expect(res.status).toBe(200);
    }
    expectProblem(
      await new TestClient(app, { ip }).post('/api/auth/password/forgot', { email: testEmail() }),
      429,
      'rate_limited',
    );
    await app.jobs.drain();
  });

  it('resets a password all or nothing: when ending the sessions fails, the token and the old password stay', async () => {
    const u = await signUp(app);
    await new TestClient(app, { ip: testIp() }).post('/api/auth/password/forgot', { email: u.email });
    const token = tokenIn((await mailTo(u.email, 'reset_password'))?.text);
    const restore = await failWhen('sessions', 'update', "new.revoke_reason = 'password_reset'");
    const password = testPassword();
    try {
      const res = await new TestClient(app).post('/api/auth/password/reset', { token, password });
      expectProblem(res, 500, 'internal_error');
    } finally {
      await restore();
    }
    expect((await u.get('/api/me')).status).toBe(200);
    await logIn(app, u.email, u.password, { ip: testIp() });
    // The token was not spent: it still works, once.
    expect((await new TestClient(app).post('/api/auth/password/reset', { token, password })).status).toBe(200);
    expect((await u.get('/api/me')).status).toBe(401);
  });

  it('changes a password all or nothing: when ending the other sessions fails, the old password stays', async () => {
    const u = await signUp(app, { ip: '198.51.100.150' });
    const other = await logIn(app, u.email, u.password, { ip: '198.51.100.151' });
    const restore = await failWhen('sessions', 'update', "new.revoke_reason = 'password_changed'");
    try {
      const res = await u.post('/api/me/password', { currentPassword: u.password, newPassword: testPassword() });
      expectProblem(res, 500, 'internal_error');
    } finally {
      await restore();
    }
    expect((await other.get('/api/me')).status).toBe(200);
    await logIn(app, u.email, u.password, { ip: '198.51.100.152' });
  });

  it('confirms TOTP all or nothing: when storing recovery codes fails, TOTP stays off', async () => {
    const c = await signUp(app);
    const start = await c.post<{ secret: string }>('/api/me/mfa/totp');
    const restore = await failWhen('mfa_recovery_codes', 'insert', `new.user_id = '${c.userId}'`);
    try {
      const res = await c.post('/api/me/mfa/totp/confirm', { code: code(start.body.secret) });
      expectProblem(res, 500, 'internal_error');
    } finally {
      await restore();
    }
    const [row] = await app.db.query<{ confirmed_at: Date | null }>(
      'select confirmed_at from mfa_totp where user_id = $1',
      [c.userId],
    );
    expect(row?.confirmed_at).toBeNull();
    expect((await c.get<{ user: Body }>('/api/me')).body.user.mfaEnabled).toBe(false);
    // The same code works now: its time step was not claimed either.
    const again = await c.post<{ recoveryCodes: string[] }>('/api/me/mfa/totp/confirm', {
      code: code(start.body.secret),
    });
    expect(again.status, again.text).toBe(200);
    expect(again.body.recoveryCodes).toHaveLength(10);
    app.clock.advance(30_000);
  });
});

describe('security', () => {
  it('lets at most 10 of 30 parallel wrong passwords through to a password check; the rest get 429', async () => {
    const u = await signUp(app);
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        new TestClient(app, { ip: `198.18.${Math.floor(i / 200)}.${(i % 200) + 1}` }).post('/api/auth/login', {
          email: u.email,
          password: `wrong-password-${i}`,
        }),
      ),
    );
    const unauthorized = results.filter((r) => r.status === 401 && r.body.code === 'invalid_credentials');
    const throttled = results.filter((r) => r.status === 429 && r.body.code === 'too_many_attempts');
    expect(unauthorized.length).toBeLessThanOrEqual(10);
    expect(unauthorized.length + throttled.length).toBe(30);
    const events = await eventsOf(u.userId);
    expect(events.filter((e) => e.type === 'login_failed')).toHaveLength(unauthorized.length);
    expect(events.filter((e) => e.type === 'login_throttled')).toHaveLength(throttled.length);
    app.clock.advance(16 * MINUTE);
  });

  it('throttles TOTP codes given from a session (recovery codes, turning 2FA off) and records mfa_failed', async () => {
    const u = await enrolled('198.51.100.20');
    for (let i = 0; i < 5; i++) {
      expectProblem(await u.post('/api/me/mfa/recovery-codes', { code: '000000' }), 400, 'invalid_mfa_code');
      expectProblem(await u.request('DELETE', '/api/me/mfa/totp', { code: '000000' }), 400, 'invalid_mfa_code');
    }
    const blocked = await u.post('/api/me/mfa/recovery-codes', { code: code(u.secret) });
    expectProblem(blocked, 429, 'too_many_attempts');
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
    expectProblem(await u.request('DELETE', '/api/me/mfa/totp', { code: code(u.secret) }), 429, 'too_many_attempts');
    expect((await u.get<{ user: Body }>('/api/me')).body.user.mfaEnabled).toBe(true);
    const events = await eventsOf(u.userId);
    const failed = events.filter((e) => e.type === 'mfa_failed');
    expect(failed.filter((e) => e.details.action === 'regenerate_recovery_codes')).toHaveLength(5);
    expect(failed.filter((e) => e.details.action === 'disable_totp')).toHaveLength(5);
    expect(events.filter((e) => e.type === 'login_throttled')).toHaveLength(2);
    app.clock.advance(16 * MINUTE);
    expect((await u.post('/api/me/mfa/recovery-codes', { code: code(u.secret) })).status).toBe(200);
  });

  it('records a failed TOTP confirmation', async () => {
    const c = await signUp(app);
    await c.post('/api/me/mfa/totp');
    expectProblem(await c.post('/api/me/mfa/totp/confirm', { code: '000000' }), 400, 'invalid_mfa_code');
    expect((await eventsOf(c.userId)).map((e) => e.type)).toContain('mfa_confirm_failed');
  });

  it('does the same Argon2 work for unknown and known emails at sign-in', async () => {
    const u = await signUp(app);
    const verify = vi.spyOn(passwordHasher, 'verify');
    const known = await new TestClient(app, { ip: testIp() }).post('/api/auth/login', {
      email: u.email,
      password: 'wrong-password-1',
    });
    const knownCalls = verify.mock.calls.length;
    const unknown = await new TestClient(app, { ip: testIp() }).post('/api/auth/login', {
      email: testEmail('nobody'),
      password: 'wrong-password-1',
    });
    expectProblem(known, 401, 'invalid_credentials');
    expectProblem(unknown, 401, 'invalid_credentials');
    expect(knownCalls).toBe(1);
    expect(verify.mock.calls.length - knownCalls).toBe(knownCalls);
  });

  it('does the same database work on the request path for unknown and known emails at password reset', async () => {
    const u = await signUp(app);
    // Warm up (the first send creates the job queue).
    await new TestClient(app, { ip: testIp() }).post('/api/auth/password/forgot', { email: testEmail('warm') });
    await app.jobs.drain();
    const c0 = await tableCounts();
    const known = await new TestClient(app, { ip: testIp() }).post('/api/auth/password/forgot', { email: u.email });
    const c1 = await tableCounts();
    const unknown = await new TestClient(app, { ip: testIp() }).post('/api/auth/password/forgot', {
      email: testEmail('nobody'),
    });
    const c2 = await tableCounts();
    expect(known.status).toBe(200);
    expect(unknown.body).toEqual(known.body);
    const knownWork = delta(c0, c1);
    expect(knownWork).toEqual(delta(c1, c2));
    expect(knownWork['public.security_events']).toBe(1);
    expect(knownWork['public.email_tokens']).toBeUndefined();
    expect(knownWork['public.email_outbox']).toBeUndefined();
    // The link is issued and mailed by the job.
    expect(tokenIn((await mailTo(u.email, 'reset_password'))?.text)).toHaveLength(43);
  });

  it('keeps no email token or invitation token in clear anywhere in the database', async () => {
    const owner = await signUp(app);
    const tokens: string[] = [tokenIn((await mailTo(owner.email, 'verify_email'))?.text)];
    await new TestClient(app, { ip: testIp() }).post('/api/auth/password/forgot', { email: owner.email });
    tokens.push(tokenIn((await mailTo(owner.email, 'reset_password'))?.text));
    const ws = await owner.post<{ id: string }>('/api/workspaces', { name: 'Leak scan' });
    expect(ws.status, ws.text).toBe(201);
    const invitee = testEmail('invitee');
    const inv = await owner.post(`/api/workspaces/${ws.body.id}/invitations`, { email: invitee, role: 'member' });
    expect(inv.status, inv.text).toBe(201);
    const invitation = await mailTo(invitee, 'invitation');
    tokens.push(tokenIn(invitation?.text));
    for (const t of tokens) expect(t).toHaveLength(43);
    const dump = await databaseDump();
    expect(dump).toContain(owner.userId);
    for (const t of tokens) expect(dump.includes(t), 'a token is stored in clear').toBe(false);
    expect(app.logs.join('\n')).not.toContain(tokens[2]);
  });
});
