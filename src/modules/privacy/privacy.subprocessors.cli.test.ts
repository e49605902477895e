import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { berthInProcess } from '../../../test/helpers/cli.ts';
import { makeOperator, type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import { DAY, HOUR } from '../../platform/clock.ts';
import type { BreachView, RecordOfProcessing, SubprocessorView } from './index.ts';

/**
 * `berth subprocessors add|list|retire|objections` and `berth privacy records|breaches`, in
 * process, over HTTP against a listening test server, signed in as an operator.
 */

let app: TestApp;
let url: string;
let op: SignedInClient;
let user: SignedInClient;

beforeAll(async () => {
  app = await createTestApp();
  op = await signUp(app);
  await makeOperator(app, op.userId);
  user = await signUp(app);
  url = await app.http.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await app?.close();
});

async function berth(args: string[], password?: string) {
  return berthInProcess(args, {}, password === undefined ? '' : `${password}\n`);
}

const asOp = () => ['--url', url, '--email', op.email];
const day = (days: number) => new Date(app.clock.now().getTime() + days * DAY).toISOString().slice(0, 10);

describe('happy', () => {
  it('adds a sub-processor as an operator and lists it publicly', async () => {
    const add = await berth(
      [
        'subprocessors',
        'add',
        ...asOp(),
        '--name',
        'CLI Mail',
        '--purpose',
        'Sends email',
        '--categories',
        'account,communication',
        '--region',
        'EU',
        '--effective',
        day(32),
        '--json',
      ],
      op.password,
    );
    expect(add.code, add.stderr).toBe(0);
    const added = JSON.parse(add.stdout) as SubprocessorView;
    expect(added).toMatchObject({
      name: 'CLI Mail',
      status: 'announced',
      dataCategories: ['account', 'communication'],
    });

    const list = await berth(['subprocessors', 'list', '--url', url, '--json']);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { data: SubprocessorView[] }).data.map((s) => s.id)).toContain(added.id);
    const human = await berth(['subprocessors', 'list', '--url', url]);
    expect(human.stdout).toContain(`${added.id}  announced  CLI Mail  (EU)  from ${day(32)}`);

    const retired = await berth(['subprocessors', 'retire', added.id, ...asOp()], op.password);
    expect(retired.code, retired.stderr).toBe(0);
    expect(retired.stdout).toBe(`Retired CLI Mail (${added.id}).`);
  });

  it('prints the record of processing as a table, or JSON', async () => {
    const human = await berth(['privacy', 'records', ...asOp()], op.password);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain('PURPOSE\tPERSONAL DATA\tPEOPLE\tLAWFUL BASIS\tRECIPIENTS\tRETENTION');
    const json = await berth(['privacy', 'records', ...asOp(), '--json'], op.password);
    const record = JSON.parse(json.stdout) as RecordOfProcessing;
    expect(record.activities.length).toBeGreaterThan(5);
    for (const a of record.activities) expect(human.stdout).toContain(`${a.purpose}\t`);
  });

  it('records a breach and when the authority was told', async () => {
    const awareAt = new Date(app.clock.now().getTime() - 2 * HOUR).toISOString();
    const add = await berth(
      [
        'privacy',
        'breaches',
        'add',
        ...asOp(),
        '--description',
        'Lost laptop',
        '--categories',
        'account',
        '--aware-at',
        awareAt,
        '--subjects',
        '40',
        '--json',
      ],
      op.password,
    );
    expect(add.code, add.stderr).toBe(0);
    const b = JSON.parse(add.stdout) as BreachView;
    expect(b.notifyDeadline).toBe(new Date(new Date(awareAt).getTime() + 72 * HOUR).toISOString());
    const told = app.clock.now().toISOString();
    const update = await berth(
      ['privacy', 'breaches', 'update', b.id, ...asOp(), '--authority-notified-at', told, '--json'],
      op.password,
    );
    expect(update.code, update.stderr).toBe(0);
    expect(JSON.parse(update.stdout)).toMatchObject({ authorityNotifiedAt: told, notifiedLate: false });
    const list = await berth(['privacy', 'breaches', 'list', ...asOp()], op.password);
    expect(list.stdout).toContain(`${b.id}  aware ${b.awareAt}  authority told ${told}`);
  });
});

describe('errors', () => {
  it('exits 4 with the server’s code when the notice is too short, and 2 on a bad date', async () => {
    const base = ['subprocessors', 'add', ...asOp(), '--name', 'Soon', '--purpose', 'p', '--categories', 'account'];
    const soon = await berth([...base, '--region', 'EU', '--effective', day(10), '--json'], op.password);
    expect(soon.code).toBe(4);
    expect(JSON.parse(soon.stdout)).toMatchObject({ error: { code: 'notice_period_too_short' } });
    const bad = await berth([...base, '--region', 'EU', '--effective', 'soon'], op.password);
    expect(bad.code).toBe(2);
  });

  it('refuses a user who is not an operator (exit 4, forbidden)', async () => {
    const res = await berth(['privacy', 'records', '--url', url, '--email', user.email, '--json'], user.password);
    expect(res.code).toBe(4);
    expect(JSON.parse(res.stdout)).toMatchObject({ error: { code: 'forbidden' } });
  });
});
