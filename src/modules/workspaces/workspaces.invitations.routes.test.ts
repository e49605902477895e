import type { AddressInfo } from 'node:net';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeSmtp } from '../../../test/fakes/smtp.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { type SignedInClient, signUp, testEmail } from '../../../test/helpers/identity.ts';
import { MINUTE } from '../../platform/clock.ts';
import { sha256Hex } from '../../platform/crypto.ts';
import type { Scope } from '../../platform/http/context.ts';
import { RESEND_INVITATIONS_JOB, SEND_INVITATION_JOB } from './index.ts';
import { workspacesRepo } from './workspaces.repo.ts';
import { workspacesService } from './workspaces.service.ts';

/**
 * Invitation emails leave through the `workspaces.send-invitation` job after the invitation
 * committed: a mail server that is down neither fails the request nor loses the email.
 */

type Inv = { id: string; email: string; status: string; emailSentAt: string | null };
type Row = { token_hash: string; token_ciphertext: unknown; email_sent_at: unknown };

const LINK = /invitations\/accept\?token=([A-Za-z0-9_-]+)/;

/** The text of a raw message as a reader sees it (quoted-printable soft breaks and escapes undone). */
function readable(raw: string): string {
  return raw
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

async function invitationRow(app: TestApp, id: string): Promise<Row | undefined> {
  const res = await app.db.system((tx) =>
    tx.execute(sql`select token_hash, token_ciphertext, email_sent_at from invitations where id = ${id}`),
  );
  return (res as unknown as { rows: Row[] }).rows[0];
}

/** The data of every job of a queue, read as the table owner (the app role cannot see the pgboss schema). */
async function jobData(app: TestApp, queue: string): Promise<unknown[]> {
  const text = 'select data from pgboss.job where name = $1';
  if (!app.testDb.url) return (await app.db.query<{ data: unknown }>(text, [queue])).map((r) => r.data);
  const client = new pg.Client({ connectionString: app.testDb.url });
  await client.connect();
  try {
    return (await client.query<{ data: unknown }>(text, [queue])).rows.map((r) => r.data);
  } finally {
    await client.end();
  }
}

async function ownerWithWorkspace(app: TestApp) {
  const owner = await signUp(app);
  const res = await owner.post<{ id: string }>('/api/workspaces', { name: 'Mail Co' });
  expect(res.status).toBe(201);
  return { owner, ws: res.body.id, url: `/api/workspaces/${res.body.id}` };
}

describe('happy', () => {
  let app: TestApp;
  let smtp: Awaited<ReturnType<typeof startFakeSmtp>>;
  beforeAll(async () => {
    smtp = await startFakeSmtp();
    app = await createTestApp({ config: { SMTP_URL: smtp.url, BERTH_SIGNUP_IP_MAX: 100_000 } });
  });
  afterAll(async () => {
    await app.close();
    await smtp.close();
  });

  const invitationMails = (to: string) =>
    smtp.received.filter((m) => m.to.includes(to) && /X-Berth-Tag: invitation/i.test(m.raw));

  it('answers at once, then the job emails the link over SMTP and forgets the token', async () => {
    const { owner, ws, url } = await ownerWithWorkspace(app);
    const email = testEmail('smtp');
    const res = await owner.post<Inv>(`${url}/invitations`, { email, role: 'member' });
    expect(res.status).toBe(201);
    expect(res.body.emailSentAt).toBeNull();
    expect(invitationMails(email)).toEqual([]);
    const waiting = await invitationRow(app, res.body.id);
    expect(waiting?.token_ciphertext).not.toBeNull();

    // The job carries ids only.
    const data = await jobData(app, SEND_INVITATION_JOB);
    expect(data).toContainEqual({ workspaceId: expect.any(String), invitationId: res.body.id });
    for (const d of data) expect(Object.keys(d as object).sort()).toEqual(['invitationId', 'workspaceId']);

    expect((await app.jobs.drain(SEND_INVITATION_JOB)).completed).toBeGreaterThanOrEqual(1);
    const [mail, ...more] = invitationMails(email);
    expect(more).toEqual([]);
    const token = readable(mail?.raw ?? '').match(LINK)?.[1] ?? '';
    const sent = await invitationRow(app, res.body.id);
    expect(sha256Hex(token)).toBe(sent?.token_hash);
    expect(sent?.token_ciphertext).toBeNull();
    expect(sent?.email_sent_at).not.toBeNull();
    const list = await owner.get<{ data: Inv[] }>(`${url}/invitations`);
    expect(list.body.data.find((i) => i.id === res.body.id)?.emailSentAt).toEqual(expect.any(String));
    expect(app.logs.join('\n')).not.toContain(token);

    // Running the job again sends nothing more.
    const again = await app.modules.workspaces.service.sendInvitationEmail({
      workspaceId: ws,
      invitationId: res.body.id,
    });
    expect(again).toBe('skipped');
    expect(invitationMails(email)).toHaveLength(1);

    const invitee = await signUp(app, { email });
    expect((await invitee.post('/api/invitations/accept', { token })).status).toBe(200);
  });

  it('does not send the email of an invitation revoked before its job ran', async () => {
    const { owner, url } = await ownerWithWorkspace(app);
    const email = testEmail('revoked');
    const res = await owner.post<Inv>(`${url}/invitations`, { email, role: 'viewer' });
    expect((await owner.delete(`${url}/invitations/${res.body.id}`)).status).toBe(204);
    expect((await invitationRow(app, res.body.id))?.token_ciphertext).toBeNull();
    await app.jobs.drain(SEND_INVITATION_JOB);
    expect(invitationMails(email)).toEqual([]);
  });
});

/**
 * A real SMTP peer that answers 451 (try again later) for the recipients in `failFor`, and
 * accepts everything else.
 */
async function flakySmtp() {
  const failFor = new Set<string>();
  const accepted: Array<{ to: string[]; raw: string }> = [];
  const server = new SMTPServer({
    secure: false,
    disabledCommands: ['STARTTLS', 'AUTH'],
    authOptional: true,
    logger: false,
    onRcptTo(address, _session, callback) {
      if (failFor.has(address.address)) {
        callback(Object.assign(new Error('Mailbox busy, try again later'), { responseCode: 451 }));
      } else {
        callback();
      }
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        accepted.push({
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.server.address() as AddressInfo;
  return {
    url: `smtp://127.0.0.1:${port}`,
    failFor,
    accepted,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('errors', () => {
  let app: TestApp;
  let smtp: Awaited<ReturnType<typeof flakySmtp>>;
  let owner: SignedInClient;
  let ws: string;
  let url: string;
  beforeAll(async () => {
    smtp = await flakySmtp();
    app = await createTestApp({ config: { SMTP_URL: smtp.url, BERTH_SIGNUP_IP_MAX: 100_000 } });
    ({ owner, ws, url } = await ownerWithWorkspace(app));
  });
  afterAll(async () => {
    await app.close();
    await smtp.close();
  });

  const mailsTo = (to: string) => smtp.accepted.filter((m) => m.to.includes(to) && LINK.test(readable(m.raw)));

  it('a mail server failure does not fail the invite; the job is retried until the email leaves', async () => {
    const email = testEmail('busy');
    smtp.failFor.add(email);
    const res = await owner.post<Inv>(`${url}/invitations`, { email, role: 'member' });
    expect(res.status).toBe(201);
    expect(await app.jobs.drain(SEND_INVITATION_JOB)).toEqual({ completed: 0, failed: 1 });
    expect(mailsTo(email)).toEqual([]);
    const waiting = await invitationRow(app, res.body.id);
    expect(waiting?.token_ciphertext).not.toBeNull();
    expect(waiting?.email_sent_at).toBeNull();
    // The failure is logged without the address or the mail server's words.
    const logs = app.logs.join('\n');
    expect(logs).toContain('AppError');
    expect(logs).not.toContain(email);
    expect(logs).not.toContain('Mailbox busy');

    smtp.failFor.delete(email);
    expect(await app.jobs.drain(SEND_INVITATION_JOB, { includeDelayed: true })).toEqual({ completed: 1, failed: 0 });
    expect(mailsTo(email)).toHaveLength(1);
    const list = await owner.get<{ data: Inv[] }>(`${url}/invitations`);
    expect(list.body.data.find((i) => i.id === res.body.id)).toMatchObject({
      status: 'pending',
      emailSentAt: expect.any(String),
    });
  });

  it('when the job gave up, the resend sweep queues the email again', async () => {
    const email = testEmail('down');
    smtp.failFor.add(email);
    const res = await owner.post<Inv>(`${url}/invitations`, { email, role: 'viewer' });
    expect(res.status).toBe(201);
    // Every retry fails: the job ends failed for good.
    const drained = await app.jobs.drain(SEND_INVITATION_JOB, { includeDelayed: true });
    expect(drained.completed).toBe(0);
    expect(drained.failed).toBeGreaterThan(1);
    expect(await app.jobs.drain(SEND_INVITATION_JOB, { includeDelayed: true })).toEqual({ completed: 0, failed: 0 });

    smtp.failFor.delete(email);
    const service = app.modules.workspaces.service;
    // Too early: the job might still be on its way.
    expect(await service.resendUnsentInvitations()).toBe(0);
    app.clock.advance(11 * MINUTE);
    await app.jobs.send(RESEND_INVITATIONS_JOB, {});
    expect(await app.jobs.drain(RESEND_INVITATIONS_JOB)).toEqual({ completed: 1, failed: 0 });
    expect(await app.jobs.drain(SEND_INVITATION_JOB)).toEqual({ completed: 1, failed: 0 });
    expect(mailsTo(email)).toHaveLength(1);
    expect((await invitationRow(app, res.body.id))?.token_ciphertext).toBeNull();
    // Nothing is left to resend.
    expect(await service.resendUnsentInvitations()).toBe(0);
  });

  it('an unreachable job queue does not fail the invite either; the sweep sends the email later', async () => {
    const m = app.modules;
    const scope: Scope = { workspaceId: ws, actor: { type: 'user', userId: owner.userId }, role: 'owner' };
    // The same service, wired to a job queue that refuses every send.
    const broken = workspacesService({
      db: app.db,
      repo: workspacesRepo,
      clock: app.clock,
      config: { publicUrl: 'http://berth.test', BERTH_INVITATION_TTL_DAYS: 7 },
      mailer: m.notifications.service.mailer,
      vault: m.vault.service,
      users: {
        getUsers: async () => [],
        findUserIdByEmail: async () => null,
        hasMfa: async () => false,
      },
      jobs: {
        send: async () => {
          throw new Error('queue unreachable');
        },
      },
      logger: { info: () => undefined, warn: () => undefined },
    });
    const email = testEmail('noqueue');
    const { invitation } = await broken.invite({ scope, email, role: 'member' });
    expect(invitation.emailSentAt).toBeNull();
    expect(await jobData(app, SEND_INVITATION_JOB)).not.toContainEqual({
      workspaceId: ws,
      invitationId: invitation.id,
    });

    app.clock.advance(11 * MINUTE);
    expect(await m.workspaces.service.resendUnsentInvitations()).toBe(1);
    expect(await app.jobs.drain(SEND_INVITATION_JOB)).toEqual({ completed: 1, failed: 0 });
    expect(mailsTo(email)).toHaveLength(1);
  });
});
