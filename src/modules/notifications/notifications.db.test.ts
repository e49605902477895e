import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeSmtp, startFakeSmtp } from '../../../test/fakes/smtp.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { signUp, testEmail } from '../../../test/helpers/identity.ts';
import { DAY, HOUR } from '../../platform/clock.ts';
import { createLogger } from '../../platform/logger.ts';
import { OUTBOX_PLATFORM_OWNER, smtpMailer, UNREADABLE_BODY } from './notifications.service.ts';

describe('happy: SMTP', () => {
  let smtp: FakeSmtp;
  let app: TestApp;
  beforeAll(async () => {
    smtp = await startFakeSmtp();
    app = await createTestApp({ config: { SMTP_URL: smtp.url, BERTH_MAIL_FROM: 'Berth <no-reply@berth.test>' } });
  });
  afterAll(async () => {
    await app?.close();
    await smtp?.close();
  });

  it('sends the verification email of a sign-up over SMTP, and keeps nothing in the outbox', async () => {
    expect(app.modules.notifications.service.transport).toBe('smtp');
    const before = smtp.received.length;
    const user = await signUp(app);
    const [mail] = (await smtp.waitFor(before + 1)).slice(before);
    expect(mail?.from).toBe('no-reply@berth.test');
    expect(mail?.to).toEqual([user.email]);
    expect(mail?.raw).toMatch(/^Subject: Confirm your email address for Berth/m);
    expect(mail?.raw).toMatch(/^X-Berth-Tag: verify_email/m);
    const token = mail?.raw.replace(/=\r?\n/g, '').match(/token=3D([A-Za-z0-9_-]{43})|token=([A-Za-z0-9_-]{43})/);
    const value = token?.[1] ?? token?.[2] ?? '';
    expect(value).toHaveLength(43);
    expect(await app.modules.notifications.service.listOutbox()).toEqual([]);
    // The mailed link works.
    const verified = await user.post<{ user: { emailVerified: boolean } }>('/api/auth/verify-email', { token: value });
    expect(verified.status).toBe(200);
    expect(verified.body.user.emailVerified).toBe(true);
    // The log says a mail was sent, by tag only.
    const logs = app.logs.join('\n');
    expect(logs).toContain('"tag":"verify_email"');
    expect(logs).not.toContain(value);
    expect(logs).not.toContain(user.email);
  });

  it('logs in to SMTP servers that require credentials', async () => {
    const authSmtp = await startFakeSmtp({ auth: { user: 'berth', pass: 's3cret pass' } });
    const logs: string[] = [];
    const mailer = smtpMailer({
      url: authSmtp.url,
      from: 'Berth <no-reply@berth.test>',
      logger: createLogger({ destination: { write: (l: string) => logs.push(l) } }),
    });
    try {
      await mailer.send({
        to: 'ops@example.test',
        subject: 'Receipt',
        text: 'Body with a secret link',
        tag: 'receipt',
      });
      const [mail] = await authSmtp.waitFor(1);
      expect(mail?.user).toBe('berth');
      expect(mail?.raw).toContain('Body with a secret link');
      expect(logs.join('\n')).not.toContain('Body with a secret link');
      expect(logs.join('\n')).not.toContain('s3cret');
    } finally {
      mailer.close();
      await authSmtp.close();
    }
  });
});

describe('errors', () => {
  it('fails a send when the SMTP server refuses the login, and a sign-up still succeeds', async () => {
    const authSmtp = await startFakeSmtp({ auth: { user: 'berth', pass: 'right' } });
    const url = authSmtp.url.replace('berth:right@', 'berth:wrong@');
    const mailer = smtpMailer({ url, from: 'Berth <no-reply@berth.test>', logger: createLogger({ level: 'silent' }) });
    try {
      await expect(mailer.send({ to: 'a@example.test', subject: 's', text: 't', tag: 'x' })).rejects.toBeTruthy();
      expect(authSmtp.received).toHaveLength(0);
    } finally {
      mailer.close();
      await authSmtp.close();
    }
    // With an unreachable SMTP server, sign-up still answers 201 (the user can ask for a new link).
    const app = await createTestApp({ config: { SMTP_URL: url } });
    try {
      const user = await signUp(app);
      expect(user.userId).toMatch(/^usr_/);
      expect(app.logs.join('\n')).toContain('mail not sent');
    } finally {
      await app.close();
    }
  });
});

describe('happy: outbox', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp();
  });
  afterAll(async () => {
    await app?.close();
  });

  it('keeps mail in the outbox without SMTP, lists it newest first, and purges it after 30 days at the latest', async () => {
    const svc = app.modules.notifications.service;
    expect(svc.transport).toBe('outbox');
    const email = testEmail();
    await svc.mailer.send({ to: email, subject: 'First', text: 'one', tag: 'test' });
    app.clock.advance(1000);
    // A link that claims to live 90 days is still kept 30 days at most.
    await svc.mailer.send({
      to: email,
      subject: 'Second',
      text: 'two',
      tag: 'test',
      expiresAt: new Date(app.clock.now().getTime() + 90 * DAY),
    });
    const list = await svc.listOutbox({ limit: 2 });
    expect(list.map((m) => m.subject)).toEqual(['Second', 'First']);
    expect(list[0]).toMatchObject({ to: email, text: 'two', tag: 'test' });
    expect(list[0]?.id).toMatch(/^out_/);
    expect(await svc.listOutbox({ limit: 1 })).toHaveLength(1);
    app.clock.advance(30 * DAY - 2000);
    expect(await svc.purgeOutbox()).toBe(0);
    app.clock.advance(1000);
    expect(await svc.purgeOutbox()).toBe(1);
    app.clock.advance(1000);
    expect(await svc.purgeOutbox()).toBe(1);
    expect(await svc.listOutbox()).toEqual([]);
    expect(app.logs.join('\n')).not.toContain(email);
  });

  it('keeps a message only as long as its link lives, and forgets it when the link is used', async () => {
    const svc = app.modules.notifications.service;
    const now = app.clock.now().getTime();
    await svc.mailer.send({
      to: testEmail(),
      subject: 'Link',
      text: 'short',
      tag: 'test',
      expiresAt: new Date(now + HOUR),
    });
    await svc.mailer.send({ to: testEmail(), subject: 'Used', text: 'used', tag: 'test', ref: 'tok_used' });
    await svc.mailer.send({ to: testEmail(), subject: 'Kept', text: 'kept', tag: 'test' });
    await svc.mailer.retract?.('tok_used');
    expect((await svc.listOutbox()).map((m) => m.subject).sort()).toEqual(['Kept', 'Link']);
    app.clock.advance(HOUR);
    expect(await svc.purgeOutbox()).toBe(1);
    expect((await svc.listOutbox()).map((m) => m.subject)).toEqual(['Kept']);
    app.clock.advance(30 * DAY);
    expect(await svc.purgeOutbox()).toBe(1);
  });
});

describe('security', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp();
  });
  afterAll(async () => {
    await app?.close();
  });

  it('stores bodies only as vault ciphertext: under the recipient’s key, or the outbox’s own for addresses without an account', async () => {
    const svc = app.modules.notifications.service;
    const user = await signUp(app);
    const marker = `secret-link-${randomBytes(8).toString('hex')}`;
    await svc.mailer.send({ to: user.email, subject: 'Mine', text: marker, tag: 'test', userId: user.userId });
    await svc.mailer.send({ to: testEmail(), subject: 'Theirs', text: `${marker}-2`, tag: 'test' });
    const rows = await app.db.query<{ subject: string; body_ciphertext: Uint8Array; user_id: string | null }>(
      "select subject, body_ciphertext, user_id from email_outbox where subject in ('Mine', 'Theirs') order by subject",
    );
    expect(rows.map((r) => r.user_id)).toEqual([user.userId, null]);
    for (const r of rows) expect(Buffer.from(r.body_ciphertext).toString('latin1')).not.toContain(marker);
    const owners = await app.db.system(async (tx) => {
      const res = await tx.execute(sql`select owner_type, owner_id from vault_data_keys order by owner_id`);
      return (res as unknown as { rows: Array<{ owner_type: string; owner_id: string }> }).rows;
    });
    expect(owners).toEqual(
      expect.arrayContaining([
        { owner_type: 'user', owner_id: user.userId },
        { owner_type: OUTBOX_PLATFORM_OWNER.type, owner_id: OUTBOX_PLATFORM_OWNER.id },
      ]),
    );
    const listed = await svc.listOutbox({ limit: 1000 });
    expect(listed.find((m) => m.subject === 'Mine')?.text).toBe(marker);
    // Erasing the recipient's key (crypto-shredding) makes their stored mail unreadable for good.
    await app.modules.vault.service.destroyOwnerKey({ type: 'user', id: user.userId });
    const after = await svc.listOutbox({ limit: 1000 });
    expect(after.filter((m) => m.to === user.email).map((m) => m.text)).toEqual([UNREADABLE_BODY, UNREADABLE_BODY]);
    expect(after.find((m) => m.subject === 'Theirs')?.text).toBe(`${marker}-2`);
  });
});
