import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { listen } from '../../../test/helpers/gateway.ts';
import { makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { RequestView, RestrictionView } from './index.ts';

/**
 * `berth privacy restrict|unrestrict|requests` in process, over HTTP against a listening
 * test app, signing in with the password from stdin as a user does from a script.
 */

let app: TestApp;
let url: string;

beforeAll(async () => {
  app = await createTestApp();
  url = await listen(app);
});
afterAll(async () => {
  await app?.close();
});

async function berth(args: string[], password: string) {
  return berthInProcess(args, { BERTH_URL: url }, `${password}\n`);
}

const as = (u: SignedInClient) => ['--email', u.email];

describe('happy', () => {
  it('restricts and lifts the signed-in user’s processing, and shows it to operators', async () => {
    const u = await signUp(app);
    const restricted = await berth(['privacy', 'restrict', ...as(u), '--json'], u.password);
    expect(restricted.code).toBe(0);
    expect((JSON.parse(restricted.stdout) as RestrictionView).restricted).toBe(true);
    expect(app.modules.privacy.service.restrictions.processingAllowed(u.userId)).toBe(false);

    const human = await berth(['privacy', 'unrestrict', ...as(u)], u.password);
    expect(human.code).toBe(0);
    expect(human.stdout).toBe('Processing of your data is not restricted.');
    expect(app.modules.privacy.service.restrictions.processingAllowed(u.userId)).toBe(true);

    const op = await signUp(app);
    await makeOperator(app, op.userId);
    const list = await berth(['privacy', 'requests', ...as(op), '--type', 'restriction', '--json'], op.password);
    expect(list.code).toBe(0);
    const body = JSON.parse(list.stdout) as { data: RequestView[] };
    expect(body.data.filter((r) => r.userId === u.userId).map((r) => r.status)).toEqual(['completed', 'completed']);
    const table = await berth(['privacy', 'requests', ...as(op), '--type', 'restriction'], op.password);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`^prq_\\S+ +restriction +completed +${u.userId}`, 'm'));
    const none = await berth(['privacy', 'requests', ...as(op), '--overdue'], op.password);
    expect(none.stdout).toBe('No privacy requests.');
  });
});

describe('errors', () => {
  it('exits 4 with the server’s code when refused, 2 without an email, and changes nothing', async () => {
    const u = await signUp(app);
    expect((await berth(['privacy', 'restrict', ...as(u)], u.password)).code).toBe(0);
    const twice = await berth(['privacy', 'restrict', ...as(u), '--json'], u.password);
    expect(twice.code).toBe(4);
    expect(JSON.parse(twice.stdout)).toMatchObject({ error: { code: 'already_restricted' } });

    const wrong = await berth(['privacy', 'unrestrict', ...as(u)], 'not the password');
    expect(wrong.code).toBe(4);
    expect(app.modules.privacy.service.restrictions.processingAllowed(u.userId)).toBe(false);

    const notOperator = await berth(['privacy', 'requests', ...as(u), '--json'], u.password);
    expect(notOperator.code).toBe(4);
    expect(JSON.parse(notOperator.stdout)).toMatchObject({ error: { code: 'forbidden' } });

    const noEmail = await berth(['privacy', 'restrict'], u.password);
    expect(noEmail.code).toBe(2);
  });
});
