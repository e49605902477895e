import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../../../test/helpers/app.ts';
import { TestClient } from '../../../test/helpers/client.ts';
import { type SignedInClient, signUp, testEmail } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import { DELETION_GRACE_DAYS, ERASURE_JOB, EXPORT_BUILD_JOB } from './index.ts';

/**
 * Rows naming a person by email address (mail held in the outbox, invitations) are theirs
 * whatever casing they were written with, and only once the person has shown the address
 * is theirs (a verified address). Export and erasure match them the same way, so an
 * export shows exactly the rows an erasure removes.
 */
const app = useTestApp({ config: { BERTH_SIGNUP_IP_MAX: 10_000, BERTH_EMAIL_IP_MAX: 10_000 } });

type Rows<T> = T[];

/** Raw SQL as the table owner: PGlite's only role, or the owner URL on server Postgres. */
async function asOwner<T extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<Rows<T>> {
  if (!app().testDb.url) return app().db.query<T>(text, params);
  const client = new pg.Client({ connectionString: app().testDb.url ?? '' });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end();
  }
}

/** Confirms the user's address with the link identity mailed at sign-up. */
async function verifyEmail(c: SignedInClient): Promise<void> {
  const mails = await app().modules.notifications.service.listOutbox({ limit: 1000 });
  const token = /token=([A-Za-z0-9_-]{43})/.exec(
    mails.find((m) => m.to === c.email && m.tag === 'verify_email')?.text ?? '',
  )?.[1];
  if (!token) throw new Error('no verification mail');
  const res = await new TestClient(app()).post('/api/auth/verify-email', { token });
  expect(res.status, res.text).toBe(200);
}

/** Mail held for `to` that names no account (sent by address only). */
async function holdMail(to: string, subject: string): Promise<void> {
  await app().modules.notifications.service.mailer.send({
    to,
    subject,
    text: 'Held by address',
    tag: 'test.by_address',
    expiresAt: new Date(app().clock.now().getTime() + 60 * DAY),
  });
}

type Archive = { data: Record<string, Array<Record<string, unknown>>> };

async function exportOf(c: SignedInClient): Promise<Archive> {
  const req = await c.post<{ id: string }>('/api/me/privacy/exports');
  expect(req.status, req.text).toBe(202);
  await app().jobs.drain(EXPORT_BUILD_JOB);
  const mails = await app().modules.notifications.service.listOutbox({ limit: 1000 });
  const ready = mails.find((m) => m.to === c.email && m.tag === 'privacy.export_ready');
  const link = /http:\/\/berth\.test(\/api\/privacy\/exports\/\S+)/.exec(ready?.text ?? '')?.[1];
  if (!link) throw new Error('no export link');
  const res = await new TestClient(app()).get(link);
  expect(res.status, res.text).toBe(200);
  return JSON.parse(res.text) as Archive;
}

/** Ids of the rows of the tables that name people by address. */
async function addressedRows(): Promise<Set<string>> {
  const rows = await asOwner<{ id: string }>(
    `select 'email_outbox:' || id as id from email_outbox union all select 'invitations:' || id from invitations`,
  );
  return new Set(rows.map((r) => r.id));
}

const idsIn = (archive: Archive) =>
  ['email_outbox', 'invitations'].flatMap((t) => (archive.data[t] ?? []).map((r) => `${t}:${String(r.id)}`));

const shout = (email: string) => {
  const [local = '', domain = ''] = email.split('@');
  return `${local.charAt(0).toUpperCase()}${local.slice(1)}@${domain.toUpperCase()}`;
};

describe('happy', () => {
  it('export and erasure reach the same rows by address: ignoring case, and only for a verified address', async () => {
    const olga = await signUp(app(), { email: testEmail('addr-owner') });
    const erin = await signUp(app(), { email: testEmail('addr-verified') });
    const fay = await signUp(app(), { email: testEmail('addr-unverified') });
    await verifyEmail(erin);
    const zed = testEmail('addr-nobody');
    await holdMail(erin.email, 'For Erin as stored');
    await holdMail(erin.email.toUpperCase(), 'For Erin in capitals');
    await holdMail(shout(erin.email), 'For Erin mixed');
    await holdMail(shout(fay.email), 'For Fay by address');
    await holdMail(zed, 'For nobody here');
    // An invitation to Erin's address, and its mail (both name no account).
    const ws = await olga.post<{ id: string }>('/api/workspaces', { name: 'Inviting' });
    const inv = await olga.post(`/api/workspaces/${ws.body.id}/invitations`, {
      email: shout(erin.email),
      role: 'member',
    });
    expect(inv.status, inv.text).toBe(201);
    await app().jobs.drain();

    const before = await addressedRows();
    const erinArchive = await exportOf(erin);
    const fayArchive = await exportOf(fay);
    const exported = new Set([...idsIn(erinArchive), ...idsIn(fayArchive)]);
    const heldFor = (a: Archive) =>
      (a.data.email_outbox ?? []).map((r) => r.subject).filter((s) => String(s).startsWith('For '));
    expect(heldFor(erinArchive).sort()).toEqual(['For Erin as stored', 'For Erin in capitals', 'For Erin mixed']);
    expect(heldFor(fayArchive)).toEqual([]);

    for (const c of [erin, fay]) {
      expect((await c.post('/api/me/deletion', { password: c.password })).status).toBe(202);
    }
    app().clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
    await app().jobs.send(ERASURE_JOB, {});
    expect((await app().jobs.drain(ERASURE_JOB)).failed).toBe(0);
    expect(await asOwner('select id from users where id = any($1::text[])', [[erin.userId, fay.userId]])).toEqual([]);

    // What was there before the exports and is gone now is exactly what the exports showed.
    const after = await addressedRows();
    const erased = [...before].filter((id) => !after.has(id)).sort();
    const shown = [...exported].filter((id) => before.has(id)).sort();
    expect(erased).toEqual(shown);
    const subjects = await asOwner<{ subject: string }>(
      `select subject from email_outbox where tag = 'test.by_address' order by subject`,
    );
    // Erin's held mail is gone in every casing; Fay never verified her address, so mail
    // held for it (perhaps someone else's) is neither exported to her nor erased with her.
    expect(subjects.map((s) => s.subject)).toEqual(['For Fay by address', 'For nobody here']);
    expect(exported.size).toBeGreaterThan(5);
    const invitations = await asOwner<{ n: string }>(
      'select count(*)::text as n from invitations where workspace_id = $1',
      [ws.body.id],
    );
    expect(invitations[0]?.n).toBe('0');
  });
});
