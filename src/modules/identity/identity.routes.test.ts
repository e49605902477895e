import { hash, parseOptions } from '@node-rs/argon2';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient, type TestResponse } from '../../../test/helpers/client.ts';
import { logIn, makeOperator, signUp, testEmail, testPassword } from '../../../test/helpers/identity.ts';
import { HOUR, MINUTE } from '../../platform/clock.ts';

let app: TestApp;
/** Every secret a test handled; the leak scans at the end look for each of them. */
const secrets = { passwords: new Set<string>(), sessionTokens: new Set<string>(), other: new Set<string>() };

const COOKIE = 'berth_session';
type Body = Record<string, unknown>;

function remember(client: TestClient & { password?: string }) {
  if (client.password) secrets.passwords.add(client.password);
  const token = client.cookies.get(COOKIE);
  if (token) secrets.sessionTokens.add(token);
  return client;
}

async function user(opts: { ip?: string } = {}) {
  const c = await signUp(app, opts);
  remember(c);
  return c;
}

async function count(table: string): Promise<number> {
  const rows = await app.db.query<{ n: string }>(`select count(*)::text as n from ${table}`);
  return Number(rows[0]?.n ?? 0);
}

/** The newest token mailed to an address for a purpose, read from the outbox. */
async function mailedToken(email: string, tag: string): Promise<string> {
  // Password-reset mail leaves through a job, off the request path.
  await app.jobs.drain();
  const messages = await app.modules.notifications.service.listOutbox({ limit: 1000 });
  const m = messages.find((x) => x.to === email && x.tag === tag);
  const token = m?.text.match(/token=([A-Za-z0-9_-]{43})/)?.[1];
  if (!token) throw new Error(`no ${tag} mail for ${email}`);
  secrets.other.add(token);
  return token;
}

function withoutRequest(body: Body) {
  const { requestId: _r, instance: _i, ...rest } = body;
  return rest;
}

function expectProblem(res: TestResponse, status: number, code: string) {
  expect(res.status, res.text).toBe(status);
  expect(res.body.code).toBe(code);
  expect(String(res.headers['content-type'])).toContain('application/problem+json');
}

beforeAll(async () => {
  app = await createTestApp();
});
afterAll(async () => {
  await app?.close();
});

describe('happy', () => {
  it('signs up: 201, a session cookie with safe attributes, the CSRF token and a verification email', async () => {
    const client = new TestClient(app);
    const email = testEmail();
    const password = testPassword();
    const res = await client.post<Body>('/api/auth/signup', {
      email: email.toUpperCase(),
      password,
      displayName: 'Ada',
    });
    expect(res.status, res.text).toBe(201);
    const body = res.body as { user: Body; csrfToken: string };
    expect(body.user).toMatchObject({ email, displayName: 'Ada', emailVerified: false, mfaEnabled: false });
    expect(body.csrfToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const setCookie = String(res.headers['set-cookie']);
    expect(setCookie).toMatch(/^berth_session=[A-Za-z0-9_-]{43};/);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Lax/i);
    expect(setCookie).toMatch(/Path=\//);
    expect(setCookie).not.toMatch(/Secure/i);
    expect(setCookie).toMatch(/Max-Age=43200/);
    client.csrfToken = body.csrfToken;
    remember(Object.assign(client, { password }));
    const session = await client.get<Body>('/api/auth/session');
    expect(session.status).toBe(200);
    expect(session.body).toMatchObject({ user: { email }, csrfToken: body.csrfToken });
    expect(await mailedToken(email, 'verify_email')).toHaveLength(43);
    const events = await app.modules.identity.service.listSecurityEvents(String(body.user.id));
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['account_created', 'login_succeeded']));
  });

  it('signs in with a new session each time and signs out on the server', async () => {
    const alice = await user();
    const second = remember(await logIn(app, alice.email.toUpperCase(), alice.password));
    expect(second.cookies.get(COOKIE)).not.toBe(alice.cookies.get(COOKIE));
    const sessions = await alice.get<{ sessions: Array<{ id: string; current: boolean }> }>('/api/me/sessions');
    expect(sessions.body.sessions).toHaveLength(2);
    expect(sessions.body.sessions.filter((s) => s.current)).toHaveLength(1);

    const stolenCookie = second.cookies.get(COOKIE) ?? '';
    const out = await second.post('/api/auth/logout');
    expect(out.status).toBe(200);
    expect(second.cookies.has(COOKIE)).toBe(false);
    // Replaying the old cookie after logout gets nothing.
    const replay = await app.http.inject({
      method: 'GET',
      url: '/api/me',
      headers: { cookie: `${COOKIE}=${stolenCookie}` },
    });
    expect(replay.statusCode).toBe(401);
    expect((await alice.get('/api/me')).status).toBe(200);
    const types = (await app.modules.identity.service.listSecurityEvents(alice.userId)).map((e) => e.type);
    expect(types).toContain('logout');
  });

  it('rehashes a password stored with older, weaker Argon2 parameters at sign-in', async () => {
    const bob = await user();
    const weak = await hash(bob.password, { memoryCost: 4096, timeCost: 1, parallelism: 1 });
    await app.db.query('update users set password_hash = $1 where id = $2', [weak, bob.userId]);
    await logIn(app, bob.email, bob.password);
    const [row] = await app.db.query<{ password_hash: string }>('select password_hash from users where id = $1', [
      bob.userId,
    ]);
    const o = parseOptions(row?.password_hash ?? '');
    expect(o.memoryCost).toBe(19_456);
    expect(o.timeCost).toBe(2);
    expect(o.parallelism).toBe(1);
    await logIn(app, bob.email, bob.password);
  });

  it('ends a session after 30 idle minutes, and activity keeps it alive', async () => {
    const a = await user();
    app.clock.advance(20 * MINUTE);
    expect((await a.get('/api/me')).status).toBe(200);
    app.clock.advance(20 * MINUTE);
    expect((await a.get('/api/me')).status).toBe(200);
    app.clock.advance(31 * MINUTE);
    expect((await a.get('/api/me')).status).toBe(401);
    expect(a.cookies.has(COOKIE)).toBe(false);
  });

  it('ends a session 12 hours after sign-in however active it is', async () => {
    const a = await user();
    for (let i = 0; i < 35; i++) {
      app.clock.advance(20 * MINUTE);
      expect((await a.get('/api/me')).status).toBe(200);
    }
    app.clock.advance(19 * MINUTE); // 11 h 59 min after sign-in
    expect((await a.get('/api/me')).status).toBe(200);
    app.clock.advance(MINUTE);
    expect((await a.get('/api/me')).status).toBe(401);
  });

  it('signs out everywhere: every session of the account ends, this one included', async () => {
    const a = await user();
    const b = remember(await logIn(app, a.email, a.password));
    const other = await user();
    const res = await a.post<{ revoked: number }>('/api/auth/sessions/revoke-all');
    expect(res.status).toBe(200);
    expect(res.body.revoked).toBe(2);
    expect((await a.get('/api/me')).status).toBe(401);
    expect((await b.get('/api/me')).status).toBe(401);
    expect((await other.get('/api/me')).status).toBe(200);
  });

  it('ends one chosen session', async () => {
    const a = await user();
    const b = remember(await logIn(app, a.email, a.password));
    const list = await a.get<{ sessions: Array<{ id: string; current: boolean }> }>('/api/me/sessions');
    const other = list.body.sessions.find((s) => !s.current);
    expect(other).toBeDefined();
    const res = await a.delete(`/api/me/sessions/${other?.id}`);
    expect(res.status).toBe(200);
    expect((await b.get('/api/me')).status).toBe(401);
    expect((await a.get('/api/me')).status).toBe(200);
  });

  it('changes the password: other sessions end, this one stays, and a notice is mailed', async () => {
    const a = await user();
    const b = remember(await logIn(app, a.email, a.password));
    const newPassword = testPassword();
    secrets.passwords.add(newPassword);
    const res = await a.post('/api/me/password', { currentPassword: a.password, newPassword });
    expect(res.status, res.text).toBe(200);
    expect((await a.get('/api/me')).status).toBe(200);
    expect((await b.get('/api/me')).status).toBe(401);
    const old = await new TestClient(app).post('/api/auth/login', { email: a.email, password: a.password });
    expectProblem(old, 401, 'invalid_credentials');
    remember(await logIn(app, a.email, newPassword));
    const mails = await app.modules.notifications.service.listOutbox({ limit: 1000 });
    expect(mails.some((m) => m.to === a.email && m.tag === 'password_changed')).toBe(true);
  });

  it('verifies the email address with a single-use token', async () => {
    const a = await user();
    const token = await mailedToken(a.email, 'verify_email');
    const res = await new TestClient(app).post<{ user: Body }>('/api/auth/verify-email', { token });
    expect(res.status, res.text).toBe(200);
    expect(res.body.user.emailVerified).toBe(true);
    expectProblem(await new TestClient(app).post('/api/auth/verify-email', { token }), 400, 'token_used');
    expect((await a.get<{ user: Body }>('/api/me')).body.user.emailVerified).toBe(true);
    expectProblem(await a.post('/api/auth/verify-email/resend'), 409, 'conflict');
  });

  it('resends the verification email with a new token', async () => {
    const a = await user();
    const first = await mailedToken(a.email, 'verify_email');
    app.clock.advance(1000);
    expect((await a.post('/api/auth/verify-email/resend')).status).toBe(200);
    const second = await mailedToken(a.email, 'verify_email');
    expect(second).not.toBe(first);
    expect((await new TestClient(app).post('/api/auth/verify-email', { token: second })).status).toBe(200);
  });

  it('resets a forgotten password: every session ends, the token works once', async () => {
    const a = await user();
    const anon = new TestClient(app);
    expect((await anon.post('/api/auth/password/forgot', { email: a.email.toUpperCase() })).status).toBe(200);
    const token = await mailedToken(a.email, 'reset_password');
    const password = testPassword();
    secrets.passwords.add(password);
    // A refused password does not spend the token.
    expectProblem(await anon.post('/api/auth/password/reset', { token, password: 'password' }), 400, 'weak_password');
    expect((await anon.post('/api/auth/password/reset', { token, password })).status).toBe(200);
    expect((await a.get('/api/me')).status).toBe(401);
    expectProblem(await anon.post('/api/auth/password/reset', { token, password: testPassword() }), 400, 'token_used');
    remember(await logIn(app, a.email, password));
    const types = (await app.modules.identity.service.listSecurityEvents(a.userId)).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['password_reset_requested', 'password_reset']));
  });

  it('updates the display name', async () => {
    const a = await user();
    const res = await a.patch<{ user: Body }>('/api/me', { displayName: '  Grace Hopper ' });
    expect(res.status).toBe(200);
    expect(res.body.user.displayName).toBe('Grace Hopper');
    expect((await a.patch<{ user: Body }>('/api/me', { displayName: null })).body.user.displayName).toBeNull();
  });

  it('creates users for the CLI and finds them by id and email', async () => {
    const svc = app.modules.identity.service;
    const email = testEmail('cli');
    const password = testPassword();
    secrets.passwords.add(password);
    const created = await svc.createUser({ email, password, isOperator: true, emailVerified: true });
    expect(created.id).toMatch(/^usr_/);
    expect(await svc.findUserByEmail(email.toUpperCase())).toMatchObject({
      id: created.id,
      isOperator: true,
      emailVerified: true,
    });
    expect((await svc.findUserById(created.id))?.email).toBe(email);
    expect(await svc.findUserById('usr_nope')).toBeNull();
    await expect(svc.createUser({ email, password })).rejects.toMatchObject({ code: 'email_taken' });
    await expect(svc.createUser({ email: testEmail(), password: 'password1' })).rejects.toMatchObject({
      code: 'weak_password',
    });
  });

  it('lets operators list, add and remove operators, and disable and enable accounts', async () => {
    const op = await user();
    await makeOperator(app, op.userId);
    const target = await user();
    const targetOtherBrowser = remember(await logIn(app, target.email, target.password));

    const list = await op.get<{ operators: Body[] }>('/api/operator/operators');
    expect(list.status).toBe(200);
    expect(list.body.operators.map((o) => o.id)).toContain(op.userId);

    const added = await op.post<{ user: Body }>('/api/operator/operators', { email: target.email });
    expect(added.status, added.text).toBe(200);
    expect(added.body.user.isOperator).toBe(true);
    expect((await target.get('/api/operator/operators')).status).toBe(200);
    expect((await op.delete(`/api/operator/operators/${target.userId}`)).status).toBe(200);
    expectProblem(await target.get('/api/operator/operators'), 403, 'forbidden');
    expect((await op.post('/api/operator/operators', { userId: target.userId })).status).toBe(200);
    expect((await op.delete(`/api/operator/operators/${target.userId}`)).status).toBe(200);

    const disabled = await op.post<{ user: Body }>(`/api/operator/users/${target.userId}/disable`);
    expect(disabled.status).toBe(200);
    expect(disabled.body.user.status).toBe('disabled');
    expect((await target.get('/api/me')).status).toBe(401);
    expect((await targetOtherBrowser.get('/api/me')).status).toBe(401);
    expectProblem(
      await new TestClient(app).post('/api/auth/login', { email: target.email, password: target.password }),
      403,
      'account_disabled',
    );
    expect((await op.post(`/api/operator/users/${target.userId}/enable`)).status).toBe(200);
    remember(await logIn(app, target.email, target.password));
    const types = (await app.modules.identity.service.listSecurityEvents(target.userId)).map((e) => e.type);
    expect(types).toEqual(
      expect.arrayContaining(['operator_added', 'operator_removed', 'account_disabled', 'account_enabled']),
    );
  });

  it('purges exactly the expired sessions, spent tokens and old throttling rows', async () => {
    // Its own database, so the counts are exact.
    const fresh = await createTestApp();
    try {
      const svc = fresh.modules.identity.service;
      const a = await signUp(fresh); // a session, a live verification token, a sign-up counter row
      const b = await logIn(fresh, a.email, a.password);
      await b.post('/api/auth/logout');
      const wrong = await new TestClient(fresh, { ip: '192.0.2.9' }).post('/api/auth/login', {
        email: a.email,
        password: 'wrong-password-1',
      });
      expect(wrong.status).toBe(401); // two failure rows: the account's and the address's
      expect(await svc.purgeExpired()).toEqual({ sessions: 1, emailTokens: 0, challenges: 0, loginFailures: 0 });
      fresh.clock.advance(25 * HOUR);
      expect(await svc.purgeExpired()).toEqual({ sessions: 1, emailTokens: 1, challenges: 0, loginFailures: 3 });
      expect(await svc.purgeExpired()).toEqual({ sessions: 0, emailTokens: 0, challenges: 0, loginFailures: 0 });
    } finally {
      await fresh.close();
    }
  });
});

describe('errors', () => {
  it('answers malformed JSON, wrong types, unknown fields, bad emails and over-long strings with 4xx and changes nothing', async () => {
    const before = await count('users');
    const c = new TestClient(app);
    const raw = await app.http.inject({
      method: 'POST',
      url: '/api/auth/signup',
      headers: { 'content-type': 'application/json' },
      payload: '{"email": ',
    });
    expect(raw.statusCode).toBe(400);
    expect(raw.json().code).toBe('invalid_json');
    expectProblem(await c.post('/api/auth/signup', { email: 42, password: testPassword() }), 400, 'validation_failed');
    expectProblem(
      await c.post('/api/auth/signup', { email: testEmail(), password: testPassword(), isOperator: true }),
      400,
      'validation_failed',
    );
    expectProblem(
      await c.post('/api/auth/signup', { email: 'not-an-email', password: testPassword() }),
      400,
      'validation_failed',
    );
    expectProblem(
      await c.post('/api/auth/signup', { email: `${'a'.repeat(250)}@example.test`, password: testPassword() }),
      400,
      'validation_failed',
    );
    expectProblem(
      await c.post('/api/auth/signup', { email: testEmail(), password: testPassword(), displayName: 'x'.repeat(101) }),
      400,
      'validation_failed',
    );
    expectProblem(
      await c.post('/api/auth/signup', { email: testEmail(), password: 'p'.repeat(2000) }),
      400,
      'validation_failed',
    );
    expect(await count('users')).toBe(before);
    expect(c.cookies.size).toBe(0);
  });

  it('refuses weak passwords with weak_password', async () => {
    const c = new TestClient(app);
    for (const password of ['short', 'password', 'qwerty123', 'x'.repeat(129)]) {
      expectProblem(await c.post('/api/auth/signup', { email: testEmail(), password }), 400, 'weak_password');
    }
  });

  it('refuses a duplicate sign-up, whatever the case of the email', async () => {
    const a = await user();
    const before = await count('users');
    const res = await new TestClient(app).post('/api/auth/signup', {
      email: a.email.toUpperCase(),
      password: testPassword(),
    });
    expectProblem(res, 409, 'email_taken');
    expect(await count('users')).toBe(before);
  });

  it('refuses expired, unknown and malformed email tokens', async () => {
    const a = await user();
    const token = await mailedToken(a.email, 'verify_email');
    app.clock.advance(24 * HOUR + MINUTE);
    const anon = new TestClient(app);
    expectProblem(await anon.post('/api/auth/verify-email', { token }), 400, 'token_expired');
    expectProblem(await anon.post('/api/auth/verify-email', { token: 'A'.repeat(43) }), 400, 'invalid_token');
    expectProblem(await anon.post('/api/auth/verify-email', { token: 'short' }), 400, 'invalid_token');
    // A verification token is not a reset token.
    const b = await user();
    const verify = await mailedToken(b.email, 'verify_email');
    expectProblem(
      await anon.post('/api/auth/password/reset', { token: verify, password: testPassword() }),
      400,
      'invalid_token',
    );
    const [row] = await app.db.query<{ email_verified_at: string | null }>(
      'select email_verified_at from users where id = $1',
      [a.userId],
    );
    expect(row?.email_verified_at).toBeNull();
  });

  it('requires a session for /api/me routes and an operator for /api/operator routes', async () => {
    const anon = new TestClient(app);
    expectProblem(await anon.get('/api/me'), 401, 'unauthenticated');
    expectProblem(await anon.get('/api/auth/session'), 401, 'unauthenticated');
    expectProblem(
      await anon.post('/api/me/password', { currentPassword: 'x', newPassword: 'y' }),
      401,
      'unauthenticated',
    );
    expectProblem(await anon.get('/api/operator/operators'), 401, 'unauthenticated');
    const a = await user();
    expectProblem(await a.get('/api/operator/operators'), 403, 'forbidden');
    expectProblem(await a.post(`/api/operator/users/${a.userId}/disable`), 403, 'forbidden');
    expectProblem(await a.post('/api/operator/operators', { userId: a.userId }), 403, 'forbidden');
    expect((await a.get<{ user: Body }>('/api/me')).body.user.isOperator).toBe(false);
  });

  it('refuses a wrong current password and a weak new one, changing nothing', async () => {
    const a = await user({ ip: '198.51.100.90' });
    expectProblem(
      await a.post('/api/me/password', { currentPassword: 'wrong-password-1', newPassword: testPassword() }),
      401,
      'invalid_credentials',
    );
    expectProblem(
      await a.post('/api/me/password', { currentPassword: a.password, newPassword: 'password' }),
      400,
      'weak_password',
    );
    remember(await logIn(app, a.email, a.password));
  });

  it('never removes the last operator, and an operator cannot disable themself', async () => {
    const ops = await app.db.query<{ id: string }>('select id from users where is_operator');
    const op = await user();
    await makeOperator(app, op.userId);
    for (const o of ops) await app.db.query('update users set is_operator = false where id = $1', [o.id]);
    expectProblem(await op.delete(`/api/operator/operators/${op.userId}`), 403, 'last_operator');
    expectProblem(await op.post(`/api/operator/users/${op.userId}/disable`), 403, 'forbidden');
    expectProblem(await op.delete('/api/operator/operators/usr_00000000000000000000000000'), 404, 'not_found');
    expectProblem(await op.post('/api/operator/operators', { email: testEmail() }), 404, 'not_found');
    expect((await op.get<{ operators: Body[] }>('/api/operator/operators')).body.operators).toHaveLength(1);
  });

  it('answers 404 for another user’s session id', async () => {
    const a = await user();
    const b = await user();
    const list = await b.get<{ sessions: Array<{ id: string }> }>('/api/me/sessions');
    const id = list.body.sessions[0]?.id ?? '';
    expectProblem(await a.delete(`/api/me/sessions/${id}`), 404, 'not_found');
    expect((await b.get('/api/me')).status).toBe(200);
  });
});

describe('security', () => {
  it('refuses cookie-authenticated changes without the CSRF token, with a wrong one, or from another site', async () => {
    const a = await user();
    const token = a.csrfToken ?? '';
    a.csrfToken = null;
    expectProblem(await a.patch('/api/me', { displayName: 'Mallory' }), 403, 'csrf_failed');
    a.csrfToken = 'A'.repeat(43);
    expectProblem(await a.patch('/api/me', { displayName: 'Mallory' }), 403, 'csrf_failed');
    const b = await user();
    a.csrfToken = b.csrfToken; // another session's token
    expectProblem(await a.patch('/api/me', { displayName: 'Mallory' }), 403, 'csrf_failed');
    a.csrfToken = token;
    expectProblem(
      await a.patch(
        '/api/me',
        { displayName: 'Mallory' },
        { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
      ),
      403,
      'csrf_failed',
    );
    expectProblem(
      await a.patch('/api/me', { displayName: 'Mallory' }, { 'sec-fetch-site': 'same-site' }),
      403,
      'csrf_failed',
    );
    expectProblem(
      await a.post('/api/auth/logout', {}, { origin: 'http://berth.test.evil.example' }),
      403,
      'csrf_failed',
    );
    expect((await a.get<{ user: Body }>('/api/me')).body.user.displayName).toBeNull();
    // Sign out everywhere is a state change too.
    a.csrfToken = null;
    expectProblem(await a.post('/api/auth/sessions/revoke-all'), 403, 'csrf_failed');
    a.csrfToken = token;
    expect((await a.get('/api/me')).status).toBe(200);
    expect((await a.patch('/api/me', { displayName: 'Ada' })).status).toBe(200);
  });

  it('refuses cross-site sign-in and sign-up (login CSRF)', async () => {
    const a = await user();
    const evil = new TestClient(app, { origin: 'https://evil.example' });
    expectProblem(await evil.post('/api/auth/login', { email: a.email, password: a.password }), 403, 'csrf_failed');
    expectProblem(
      await evil.post('/api/auth/signup', { email: testEmail(), password: testPassword() }),
      403,
      'csrf_failed',
    );
    expect(evil.cookies.size).toBe(0);
    // Non-browser clients send no Origin at all and may sign in.
    const cli = new TestClient(app, { origin: null });
    expect((await cli.post('/api/auth/login', { email: a.email, password: a.password })).status).toBe(200);
    remember(cli);
  });

  it('uses a __Host- cookie with Secure when the public URL is https', async () => {
    const tls = await createTestApp({ config: { BERTH_PUBLIC_URL: 'https://berth.test' } });
    try {
      const c = new TestClient(tls, { origin: 'https://berth.test' });
      const password = testPassword();
      secrets.passwords.add(password);
      const res = await c.post<{ csrfToken: string }>('/api/auth/signup', { email: testEmail(), password });
      expect(res.status, res.text).toBe(201);
      const setCookie = String(res.headers['set-cookie']);
      expect(setCookie).toMatch(/^__Host-berth_session=/);
      expect(setCookie).toMatch(/; Secure/i);
      expect(setCookie).toMatch(/Path=\//);
      expect(setCookie).not.toMatch(/Domain=/i);
      c.csrfToken = res.body.csrfToken;
      expect((await c.get('/api/me')).status).toBe(200);
      expectProblem(
        await c.patch('/api/me', { displayName: 'x' }, { origin: 'http://berth.test' }),
        403,
        'csrf_failed',
      );
    } finally {
      await tls.close();
    }
  });

  it('answers unknown and known emails alike, at sign-in and password reset', async () => {
    const a = await user();
    const ip = '203.0.113.7';
    const known = await new TestClient(app, { ip }).post<Body>('/api/auth/login', {
      email: a.email,
      password: 'wrong-password-1',
    });
    const unknown = await new TestClient(app, { ip }).post<Body>('/api/auth/login', {
      email: testEmail('nobody'),
      password: 'wrong-password-1',
    });
    expectProblem(known, 401, 'invalid_credentials');
    expect(withoutRequest(unknown.body)).toEqual(withoutRequest(known.body));
    expect(unknown.status).toBe(known.status);

    const fk = await new TestClient(app).post('/api/auth/password/forgot', { email: a.email });
    const fu = await new TestClient(app).post('/api/auth/password/forgot', { email: testEmail('nobody') });
    expect(fk.status).toBe(200);
    expect(fu.status).toBe(200);
    expect(fu.body).toEqual(fk.body);
    app.clock.advance(2 * MINUTE);
  });

  it('throttles failed sign-ins per account (any IP) with 429 and Retry-After, then lets them through', async () => {
    const a = await user();
    for (let i = 0; i < 10; i++) {
      const res = await new TestClient(app, { ip: `198.51.100.${i + 1}` }).post('/api/auth/login', {
        email: a.email,
        password: `wrong-password-${i}`,
      });
      expectProblem(res, 401, 'invalid_credentials');
    }
    // Even the right password is refused while the account is throttled.
    const blocked = await new TestClient(app, { ip: '198.51.100.77' }).post('/api/auth/login', {
      email: a.email,
      password: a.password,
    });
    expectProblem(blocked, 429, 'too_many_attempts');
    const retry = Number(blocked.headers['retry-after']);
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(15 * 60);
    // Unknown emails are throttled the same way.
    const ghost = testEmail('ghost');
    for (let i = 0; i < 10; i++) {
      await new TestClient(app, { ip: `198.51.101.${i + 1}` }).post('/api/auth/login', {
        email: ghost,
        password: 'nope-nope-1',
      });
    }
    expectProblem(
      await new TestClient(app, { ip: '198.51.101.99' }).post('/api/auth/login', {
        email: ghost,
        password: 'nope-nope-1',
      }),
      429,
      'too_many_attempts',
    );
    app.clock.advance(retry * 1000);
    remember(await logIn(app, a.email, a.password, { ip: '198.51.100.78' }));
  });

  it('throttles failed sign-ins per IP address (any account) for a minute', async () => {
    const ip = '192.0.2.55';
    for (let i = 0; i < 10; i++) {
      const res = await new TestClient(app, { ip }).post('/api/auth/login', {
        email: testEmail(),
        password: 'wrong-password-1',
      });
      expectProblem(res, 401, 'invalid_credentials');
    }
    const a = await user();
    const blocked = await new TestClient(app, { ip }).post('/api/auth/login', { email: a.email, password: a.password });
    expectProblem(blocked, 429, 'too_many_attempts');
    const retry = Number(blocked.headers['retry-after']);
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(60);
    // Another address is not affected.
    remember(await logIn(app, a.email, a.password, { ip: '192.0.2.56' }));
    app.clock.advance(61_000);
    remember(await logIn(app, a.email, a.password, { ip }));
  });

  it('records failed sign-ins as security events without the password', async () => {
    const a = await user();
    await new TestClient(app, { ip: '192.0.2.201' }).post('/api/auth/login', {
      email: a.email,
      password: 'wrong-password-9',
    });
    const events = await app.modules.identity.service.listSecurityEvents(a.userId);
    const failed = events.find((e) => e.type === 'login_failed');
    expect(failed).toMatchObject({ ip: '192.0.2.201', details: { reason: 'wrong_password' } });
    expect(JSON.stringify(events)).not.toContain('wrong-password-9');
  });

  it('stores login throttling keys as keyed hashes, not emails or addresses', async () => {
    const rows = await app.db.query<{ key_hash: string }>('select key_hash from login_failures');
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) {
      expect(r.key_hash).toMatch(/^[0-9a-f]{64}$/);
    }
  });

  it('writes no password, session token, email token or CSRF token to the logs', async () => {
    const logs = app.logs.join('\n');
    expect(logs.length).toBeGreaterThan(0);
    for (const s of [...secrets.passwords, ...secrets.sessionTokens, ...secrets.other]) {
      expect(logs.includes(s), 'a secret reached the logs').toBe(false);
    }
    expect(logs).not.toMatch(/berth_session=/);
  });

  it('keeps no plaintext password, session token or email token in any column of the database', async () => {
    const tables = await app.db.query<{ table_name: string }>(
      "select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'",
    );
    const dump = await app.db.system(async (tx) => {
      const parts: string[] = [];
      for (const { table_name } of tables) {
        const res = await tx.execute(sql.raw(`select t::text as row from "${table_name}" t`));
        for (const r of (res as { rows: Array<{ row: string }> }).rows) parts.push(r.row);
      }
      return parts.join('\n');
    });
    expect(dump).toContain('usr_');
    expect(secrets.passwords.size).toBeGreaterThan(5);
    expect(secrets.sessionTokens.size).toBeGreaterThan(5);
    expect(secrets.other.size).toBeGreaterThan(3);
    // Email tokens too: the outbox holds mail bodies only encrypted.
    for (const s of [...secrets.passwords, ...secrets.sessionTokens, ...secrets.other]) {
      expect(dump.includes(s), 'a plaintext secret is stored').toBe(false);
    }
  });
});
