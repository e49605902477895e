import { randomBytes } from 'node:crypto';
import type { TestApp } from './app.ts';
import { TestClient } from './client.ts';

export type SignedInClient = TestClient & { userId: string; email: string; password: string };

/** A unique, acceptable password for tests. */
export function testPassword(): string {
  return `berth-test-${randomBytes(9).toString('base64url')}`;
}

/** A unique email address for tests. */
export function testEmail(label = 'user'): string {
  return `${label}-${randomBytes(6).toString('hex')}@example.test`;
}

/** A random address in 10.0.0.0/8: each simulated person signs up from their own address. */
export function testIp(): string {
  const [a = 0, b = 0, c = 1] = randomBytes(3);
  return `10.${a}.${b}.${c === 0 ? 1 : c}`;
}

/**
 * Signs a new user up through the HTTP API and returns a browser-like client holding the
 * session cookie and the CSRF token, ready for authenticated requests.
 *
 * Sign-ups are limited per IP (BERTH_SIGNUP_IP_MAX), so without `opts.ip` the sign-up
 * request comes from a random private address (`testIp()`); the returned client then
 * makes its requests from 127.0.0.1 like any other TestClient.
 *
 * @example const alice = await signUp(app); await alice.post('/api/workspaces', { name: 'Acme' });
 */
export async function signUp(
  app: TestApp,
  opts: { email?: string; password?: string; displayName?: string; ip?: string } = {},
): Promise<SignedInClient> {
  const email = opts.email ?? testEmail();
  const password = opts.password ?? testPassword();
  const signupClient = new TestClient(app, { ip: opts.ip ?? testIp() });
  const res = await signupClient.post<{ user: { id: string; email: string }; csrfToken: string }>('/api/auth/signup', {
    email,
    password,
    ...(opts.displayName ? { displayName: opts.displayName } : {}),
  });
  if (res.status !== 201) throw new Error(`sign-up failed: ${res.status} ${res.text}`);
  const client = opts.ip ? signupClient : new TestClient(app);
  if (client !== signupClient) for (const [k, v] of signupClient.cookies) client.cookies.set(k, v);
  client.csrfToken = res.body.csrfToken;
  return Object.assign(client, { userId: res.body.user.id, email: res.body.user.email, password });
}

/** Signs an existing user in on a fresh client (a second browser). Throws when a 2FA step is required. */
export async function logIn(app: TestApp, email: string, password: string, opts: { ip?: string } = {}) {
  const client = new TestClient(app, opts.ip ? { ip: opts.ip } : {});
  const res = await client.post<{ user: { id: string; email: string }; csrfToken: string }>('/api/auth/login', {
    email,
    password,
  });
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${res.text}`);
  client.csrfToken = res.body.csrfToken;
  return Object.assign(client, { userId: res.body.user.id, email: res.body.user.email, password });
}

/** Makes a user a platform operator directly (operators are otherwise made by `berth admin create` or other operators). */
export async function makeOperator(app: TestApp, userId: string): Promise<void> {
  await app.db.query('update users set is_operator = true where id = $1', [userId]);
}
