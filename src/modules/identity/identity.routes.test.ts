import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { signUp, testEmail, testPassword } from '../../../test/helpers/identity.ts';

let app: TestApp;
beforeAll(async () => {
  app = await createTestApp();
});
afterAll(async () => {
  await app?.close();
});

describe('happy', () => {
  it('signs up, reads the session and signs in again', async () => {
    const alice = await signUp(app);
    expect(alice.userId).toMatch(/^usr_/);
    const s = await alice.get('/api/auth/session');
    expect(s.status).toBe(200);
    const login = await new TestClient(app).post('/api/auth/login', { email: alice.email, password: alice.password });
    expect(login.status).toBe(200);
  });
});
