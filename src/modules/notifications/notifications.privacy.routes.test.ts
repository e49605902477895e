import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { signUp, testEmail } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import { DELETION_GRACE_DAYS, ERASURE_JOB, EXPORT_BUILD_JOB } from '../privacy/index.ts';

/**
 * Mail held in the outbox is its addressee's personal data, whether or not it names their
 * account: a user's export includes the held mails addressed to their verified address
 * (never the body, which is ciphertext), and erasing them deletes those mails.
 */
const app = useTestApp({ config: { BERTH_SIGNUP_IP_MAX: 10_000, BERTH_EMAIL_IP_MAX: 10_000 } });

/** Mail to `to` that names no account (sent before the address had one, or by address only). */
async function holdMail(to: string, subject: string): Promise<void> {
  await app().modules.notifications.service.mailer.send({
    to,
    subject,
    text: `Body for ${to}`,
    tag: 'test.by_address',
    expiresAt: new Date(app().clock.now().getTime() + 60 * DAY),
  });
}

/** Confirms the address with the link mailed at sign-up: only a verified address finds mail held for it. */
async function verifyEmail(email: string): Promise<void> {
  const mails = await app().modules.notifications.service.listOutbox({ limit: 1000 });
  const token = /token=([A-Za-z0-9_-]{43})/.exec(
    mails.find((m) => m.to === email && m.tag === 'verify_email')?.text ?? '',
  )?.[1];
  if (!token) throw new Error('no verification mail');
  const res = await new TestClient(app()).post('/api/auth/verify-email', { token });
  expect(res.status, res.text).toBe(200);
}

async function heldFor(to: string): Promise<Array<{ subject: string; user_id: string | null }>> {
  return app().db.system(async (tx) => {
    const res = (await tx.execute(
      sql`select subject, user_id from email_outbox where to_address = ${to} order by created_at`,
    )) as unknown as { rows: Array<{ subject: string; user_id: string | null }> };
    return res.rows;
  });
}

describe('happy', () => {
  it("a user's export includes the mail held for their address, without bodies, and no one else's", async () => {
    const alice = await signUp(app(), { email: testEmail('outbox-alice') });
    await verifyEmail(alice.email);
    const bobEmail = testEmail('outbox-bob');
    await holdMail(alice.email, 'Held for Alice by address');
    await holdMail(bobEmail, 'Held for Bob');
    const req = await alice.post<{ id: string }>('/api/me/privacy/exports');
    expect(req.status, req.text).toBe(202);
    await app().jobs.drain(EXPORT_BUILD_JOB);
    const mails = await app().modules.notifications.service.listOutbox({ limit: 200 });
    const ready = mails.find((m) => m.to === alice.email && m.tag === 'privacy.export_ready');
    const link = /http:\/\/berth\.test(\/api\/privacy\/exports\/\S+)/.exec(ready?.text ?? '')?.[1];
    if (!link) throw new Error('no export link');
    const res = await new TestClient(app()).get(link);
    expect(res.status, res.text).toBe(200);
    const archive = JSON.parse(res.text) as {
      data: Record<string, Array<Record<string, unknown>>>;
      manifest: { tables: Array<{ table: string; notExported: Array<{ column: string }> }> };
    };
    const held = archive.data.email_outbox ?? [];
    const byAddress = held.find((r) => r.subject === 'Held for Alice by address');
    expect(byAddress).toMatchObject({ to_address: alice.email, user_id: null, tag: 'test.by_address' });
    expect(byAddress).not.toHaveProperty('body_ciphertext');
    expect(held.every((r) => r.to_address === alice.email)).toBe(true);
    expect(res.text).not.toContain('Held for Bob');
    expect(res.text).not.toContain(bobEmail);
    const entry = archive.manifest.tables.find((t) => t.table === 'email_outbox');
    expect(entry?.notExported.map((c) => c.column)).toContain('body_ciphertext');
  });

  it("erasure deletes the mail held for the user's address, also mail naming no account", async () => {
    const carol = await signUp(app(), { email: testEmail('outbox-carol') });
    await verifyEmail(carol.email);
    const daveEmail = testEmail('outbox-dave');
    await holdMail(carol.email, 'Held for Carol by address');
    await holdMail(daveEmail, 'Held for Dave');
    expect((await heldFor(carol.email)).some((m) => m.user_id === null)).toBe(true);
    const del = await carol.post('/api/me/deletion', { password: carol.password });
    expect(del.status, del.text).toBe(202);
    app().clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
    await app().jobs.send(ERASURE_JOB, {});
    expect((await app().jobs.drain(ERASURE_JOB)).failed).toBe(0);
    expect(await heldFor(carol.email)).toEqual([]);
    expect((await heldFor(daveEmail)).map((m) => m.subject)).toEqual(['Held for Dave']);
  });
});
