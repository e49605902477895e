import { sql } from 'drizzle-orm';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { TEST_KEYRING, useTestApp } from '../../../test/helpers/app.ts';
import { onServerPostgres } from '../../../test/helpers/db.ts';
import { makeOperator, signUp, testEmail } from '../../../test/helpers/identity.ts';
import { DAY, MINUTE } from '../../platform/clock.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import { createLogger } from '../../platform/logger.ts';
import { DELETION_GRACE_DAYS, ERASURE_JOB } from '../privacy/index.ts';
import { pseudonymizer } from '../vault/index.ts';
import { auditRepo } from './audit.repo.ts';
import { auditService } from './audit.service.ts';
import { AUDIT_RESEAL_JOB, generateAuditSigningKey, PLATFORM_CHAIN, parseAuditSigningKey } from './index.ts';

/**
 * Audit events written before pseudonyms (an installation upgraded from an older Berth):
 * raw user ids in actor / target / diff and IP and user agent inline, written here by an
 * audit service without a pseudonym key (what older Berth did), then re-sealed.
 */
const signingKey = generateAuditSigningKey();
const app = useTestApp({
  config: { BERTH_AUDIT_SIGNING_KEY: signingKey, BERTH_SIGNUP_IP_MAX: 10_000, BERTH_EMAIL_IP_MAX: 10_000 },
});
const pseudonym = pseudonymizer(TEST_KEYRING);

/** The audit service of an older Berth: no pseudonyms, request facts inline. */
function oldAudit() {
  return auditService({
    db: app().db,
    repo: auditRepo,
    clock: app().clock,
    logger: createLogger({ level: 'silent' }),
    signingKey: parseAuditSigningKey(signingKey),
  });
}

/** Raw SQL as the table owner: PGlite's only role, or the owner URL on server Postgres. */
async function asOwner<T extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
  if (!app().testDb.url) return app().db.query<T>(text, params);
  const client = new pg.Client({ connectionString: app().testDb.url ?? '' });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end();
  }
}

/** Audit rows (events, context, subjects) whose text holds `needle`, per table. */
async function auditRowsHolding(needle: string) {
  const count = async (table: string) =>
    Number(
      (
        await asOwner<{ n: string }>(`select count(*)::text as n from ${table} t where t::text like $1`, [
          `%${needle}%`,
        ])
      )[0]?.n,
    );
  return {
    events: await count('audit_events'),
    context: await count('audit_event_context'),
    subjects: await count('audit_subjects'),
  };
}

async function oldShapeEvents(workspaceId: string, alice: string, gone: string) {
  const old = oldAudit();
  const actor: Actor = {
    type: 'user',
    userId: alice,
    meta: { ip: '198.51.100.7', userAgent: 'old-berth/1.0', requestId: 'req_old' },
  };
  await app().db.tenant(workspaceId, async (tx) => {
    await old.record(tx, {
      workspaceId,
      actor,
      action: 'member.role_changed',
      target: { type: 'user', id: gone },
      diff: { by: alice, nested: { people: [gone, 'not-a-user'] }, count: 2 },
    });
    await old.record(tx, { workspaceId, actor, action: 'key.created', target: { type: 'key', id: 'key_x' } });
  });
  await app().db.system((tx) =>
    old.record(tx, {
      workspaceId: null,
      actor: { type: 'system', name: 'old-job', meta: { ip: '192.0.2.1', userAgent: null, requestId: 'req_old_job' } },
      action: 'operator.added',
      target: { type: 'user', id: alice },
    }),
  );
}

describe('happy', () => {
  it('re-seals old-shape events with pseudonyms, moves IP and user agent beside the chain, and the chains verify', async () => {
    const a = await signUp(app(), { email: testEmail('reseal') });
    const gone = newId('usr'); // a user erased before the upgrade: no account any more
    const ws = await a.post<{ id: string }>('/api/workspaces', { name: 'Old' });
    const workspaceId = ws.body.id;
    await oldShapeEvents(workspaceId, a.userId, gone);
    // A new-shape event after the old ones, and a signed checkpoint over the old hashes.
    await app().db.tenant(workspaceId, (tx) =>
      app().modules.audit.service.record(tx, {
        workspaceId,
        actor: { type: 'user', userId: a.userId },
        action: 'test.after',
        target: { type: 'thing', id: 't1' },
      }),
    );
    const audit = app().modules.audit.service;
    app().clock.advance(2 * MINUTE);
    await audit.createCheckpoint(workspaceId);
    const before = await audit.findHead(workspaceId);
    const platformBefore = await audit.findHead(PLATFORM_CHAIN);
    expect((await auditRowsHolding(a.userId)).events).toBeGreaterThan(0);
    expect((await auditRowsHolding(gone)).events).toBeGreaterThan(0);
    expect((await audit.verifyAll()).every((r) => r.ok)).toBe(true);

    await app().jobs.send(AUDIT_RESEAL_JOB, {});
    expect((await app().jobs.drain(AUDIT_RESEAL_JOB)).failed).toBe(0);

    // No audit row holds the erased user's id; Alice's only where erasure removes it.
    expect(await auditRowsHolding(gone)).toEqual({ events: 0, context: 0, subjects: 0 });
    const alice = await auditRowsHolding(a.userId);
    expect(alice.events).toBe(0);
    expect(alice.subjects).toBe(1);
    expect(alice.context).toBeGreaterThan(0);
    const inline = await asOwner<{ n: string }>(
      `select count(*)::text as n from audit_events where ip is not null or user_agent is not null`,
    );
    expect(inline[0]?.n).toBe('0');
    const stored = await asOwner<{ actor_id: string; target_id: string; diff: unknown }>(
      `select actor_id, target_id, diff from audit_events where chain = $1 and action = 'member.role_changed'`,
      [workspaceId],
    );
    expect(stored[0]).toEqual({
      actor_id: pseudonym(a.userId),
      target_id: pseudonym(gone),
      diff: { by: pseudonym(a.userId), nested: { people: [pseudonym(gone), 'not-a-user'] }, count: 2 },
    });

    // Every chain verifies, from its unchanged anchor; the workspace chain's new head is signed.
    const reports = await audit.verifyAll();
    expect(reports.filter((r) => !r.ok)).toEqual([]);
    const after = await audit.findHead(workspaceId);
    expect(after?.seq).toBe(before?.seq);
    expect(after?.hash).not.toBe(before?.hash);
    expect(after?.anchorHash).toBe(before?.anchorHash);
    const ws1 = reports.find((r) => r.chain === workspaceId);
    expect(ws1?.checkpoints.latest?.hash).toBe(after?.hash);

    // The platform chain records each re-seal, naming the head it replaced.
    const records = await audit.list(PLATFORM_CHAIN, { action: 'audit.chain_resealed' }, { limit: 10 });
    const forWs = records.data.find((e) => e.target.id === workspaceId);
    const firstOld = await asOwner<{ seq: string }>(
      `select min(seq)::text as seq from audit_events where chain = $1 and action = 'member.role_changed'`,
      [workspaceId],
    );
    expect(forWs?.diff).toMatchObject({
      fromSeq: Number(firstOld[0]?.seq),
      throughSeq: before?.seq,
      headHash: before?.hash,
      events: 2,
    });
    const forPlatform = records.data.find((e) => e.target.id === PLATFORM_CHAIN);
    expect(forPlatform?.diff).toMatchObject({ throughSeq: platformBefore?.seq, headHash: platformBefore?.hash });

    // Readers see the user ids and request facts again while the account exists.
    const shown = await audit.list(workspaceId, { action: 'member.role_changed' }, { limit: 1 });
    expect(shown.data[0]?.actor).toMatchObject({ id: a.userId, ip: '198.51.100.7', userAgent: 'old-berth/1.0' });
    expect(shown.data[0]?.target.id).toBe(pseudonym(gone));
    // And filtering by Alice finds her old events through her pseudonym.
    const byAlice = await audit.list(workspaceId, { actor: a.userId }, { limit: 10 });
    expect(byAlice.data.map((e) => e.action)).toContain('member.role_changed');

    // Idempotent: a second run finds nothing and changes nothing.
    expect(await audit.sealLegacyEvents()).toEqual({ chains: 0, events: 0, failed: [] });
    expect((await audit.findHead(workspaceId))?.hash).toBe(after?.hash);
  });

  it('erasure re-seals old-shape events first: no audit row keeps the erased user id', async () => {
    const b = await signUp(app(), { email: testEmail('reseal-erase') });
    const ws = await b.post<{ id: string }>('/api/workspaces', { name: 'Old B' });
    await oldShapeEvents(ws.body.id, b.userId, newId('usr'));
    expect((await auditRowsHolding(b.userId)).events).toBeGreaterThan(0);
    const del = await b.post('/api/me/deletion', { password: b.password });
    expect(del.status, del.text).toBe(202);
    app().clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
    await app().jobs.send(ERASURE_JOB, {});
    expect((await app().jobs.drain(ERASURE_JOB)).failed).toBe(0);
    expect(await auditRowsHolding(b.userId)).toEqual({ events: 0, context: 0, subjects: 0 });
    expect((await app().modules.audit.service.verifyAll()).filter((r) => !r.ok)).toEqual([]);
  });
});

/** Makes every re-seal of `chain` fail in the database (as a damaged chain would); returns the undo. */
async function blockReseal(chain: string): Promise<() => Promise<void>> {
  const fn = `reseal_block_${chain.slice(-12).toLowerCase()}`;
  await asOwner(`create function ${fn}() returns trigger language plpgsql as $$
    begin raise exception 'blocked by the test'; end $$`);
  await asOwner(
    `create trigger ${fn} before update on audit_events for each row when (old.chain = '${chain}') execute function ${fn}()`,
  );
  return async () => {
    await asOwner(`drop trigger if exists ${fn} on audit_events`);
    await asOwner(`drop function if exists ${fn}()`);
  };
}

/** Old-shape events still in `chain`. */
async function legacyIn(chain: string): Promise<number> {
  const rows = await asOwner<{ n: string }>(
    `select count(*)::text as n from audit_events where chain = $1 and (ip is not null or actor_id like 'usr\\_%' or target_id like 'usr\\_%')`,
    [chain],
  );
  return Number(rows[0]?.n);
}

describe('errors', () => {
  it('an acting user who no longer exists takes the IP and user agent along: nothing erasure cannot reach stays', async () => {
    const e = await signUp(app(), { email: testEmail('reseal-gone-actor') });
    const ws = await e.post<{ id: string }>('/api/workspaces', { name: 'Gone actor' });
    const workspaceId = ws.body.id;
    const gone = newId('usr');
    const old = oldAudit();
    await app().db.tenant(workspaceId, async (tx) => {
      await old.record(tx, {
        workspaceId,
        actor: {
          type: 'user',
          userId: gone,
          meta: { ip: '203.0.113.77', userAgent: 'gone-agent/2.0', requestId: 'req_old' },
        },
        action: 'key.created',
        target: { type: 'key', id: 'key_gone' },
      });
      await old.record(tx, {
        workspaceId,
        actor: {
          type: 'user',
          userId: e.userId,
          meta: { ip: '203.0.113.78', userAgent: 'live-agent/2.0', requestId: 'req_old' },
        },
        action: 'key.created',
        target: { type: 'key', id: 'key_live' },
      });
    });
    expect((await auditRowsHolding('203.0.113.77')).events).toBe(1);
    const report = await app().modules.audit.service.sealLegacyEvents();
    expect(report.failed).toEqual([]);
    // Erasure finds request facts by the context's user: with no user, they would stay for good.
    expect(await auditRowsHolding('203.0.113.77')).toEqual({ events: 0, context: 0, subjects: 0 });
    expect(await auditRowsHolding('gone-agent/2.0')).toEqual({ events: 0, context: 0, subjects: 0 });
    expect(await auditRowsHolding(gone)).toEqual({ events: 0, context: 0, subjects: 0 });
    // A live actor's facts move beside the chain under their account, where erasure reaches them.
    const live = await asOwner<{ user_id: string | null; ip: string | null }>(
      `select user_id, ip from audit_event_context where ip = '203.0.113.78'`,
    );
    expect(live).toEqual([{ user_id: e.userId, ip: '203.0.113.78' }]);
    expect((await app().modules.audit.service.verify(workspaceId)).ok).toBe(true);
  });

  it('a chain that cannot be re-sealed is skipped and reported; the other chains are re-sealed', async () => {
    const f = await signUp(app(), { email: testEmail('reseal-broken') });
    const g = await signUp(app(), { email: testEmail('reseal-fine') });
    const broken = (await f.post<{ id: string }>('/api/workspaces', { name: 'Broken' })).body.id;
    const fine = (await g.post<{ id: string }>('/api/workspaces', { name: 'Fine' })).body.id;
    await oldShapeEvents(broken, f.userId, newId('usr'));
    await oldShapeEvents(fine, g.userId, newId('usr'));
    const brokenHead = await app().modules.audit.service.findHead(broken);
    const unblock = await blockReseal(broken);
    const logsBefore = app().logs.length;
    try {
      const report = await app().modules.audit.service.sealLegacyEvents();
      expect(report.failed).toEqual([broken]);
      expect(report.chains).toBeGreaterThanOrEqual(2); // the fine workspace and the platform chain
      expect(await legacyIn(fine)).toBe(0);
      expect((await auditRowsHolding(g.userId)).events).toBe(0);
      expect(await legacyIn(PLATFORM_CHAIN)).toBe(0);
      // The broken chain is as it was, and still verifies; nothing of its attempt stayed.
      expect(await legacyIn(broken)).toBeGreaterThan(0);
      expect((await app().modules.audit.service.findHead(broken))?.hash).toBe(brokenHead?.hash);
      const records = await app().modules.audit.service.list(
        PLATFORM_CHAIN,
        { action: 'audit.chain_resealed', target: broken },
        { limit: 10 },
      );
      expect(records.data).toEqual([]);
      // The job does not fail for it; the log names the chain and the error's kind, no content.
      await app().jobs.send(AUDIT_RESEAL_JOB, {});
      expect((await app().jobs.drain(AUDIT_RESEAL_JOB)).failed).toBe(0);
      const logs = app().logs.slice(logsBefore);
      const warnings = logs.filter((l) => l.includes('could not be re-sealed'));
      expect(warnings.length).toBe(2);
      for (const w of warnings) expect(w).toContain(broken);
      for (const secret of [f.userId, f.email, '198.51.100.7', 'old-berth/1.0', 'blocked by the test']) {
        expect(logs.join('\n')).not.toContain(secret);
      }
    } finally {
      await unblock();
    }
    // Once the cause is gone, the next run re-seals it.
    expect(await app().modules.audit.service.sealLegacyEvents()).toMatchObject({ failed: [] });
    expect(await legacyIn(broken)).toBe(0);
    expect((await app().modules.audit.service.verifyAll()).filter((r) => !r.ok)).toEqual([]);
  });

  it("with a user, re-seals the chains naming that user's raw id, also only inside a diff, and no other", async () => {
    const h = await signUp(app(), { email: testEmail('reseal-diff-owner') });
    const x = await signUp(app(), { email: testEmail('reseal-diff-named') });
    const named = (await h.post<{ id: string }>('/api/workspaces', { name: 'Named in diff' })).body.id;
    const unrelated = (await h.post<{ id: string }>('/api/workspaces', { name: 'Unrelated' })).body.id;
    const old = oldAudit();
    const actor: Actor = { type: 'user', userId: h.userId };
    await app().db.tenant(named, (tx) =>
      old.record(tx, {
        workspaceId: named,
        actor,
        action: 'member.invited',
        target: { type: 'invitation', id: 'inv_x' },
        diff: { members: [{ id: x.userId }] },
      }),
    );
    await app().db.tenant(unrelated, (tx) =>
      old.record(tx, { workspaceId: unrelated, actor, action: 'key.created', target: { type: 'key', id: 'key_u' } }),
    );
    const report = await app().modules.audit.service.sealLegacyEvents({ userId: x.userId });
    expect(report).toMatchObject({ chains: 1, failed: [] });
    expect((await auditRowsHolding(x.userId)).events).toBe(0);
    expect(await legacyIn(named)).toBe(0);
    expect(await legacyIn(unrelated)).toBeGreaterThan(0);
    // Nothing naming the user: one index read, nothing re-sealed.
    expect(await app().modules.audit.service.sealLegacyEvents({ userId: x.userId })).toEqual({
      chains: 0,
      events: 0,
      failed: [],
    });
  });

  it("erasure re-seals only the user's chains; while one fails that user's erasure is refused and retried, others proceed", async () => {
    const op = await signUp(app(), { email: testEmail('reseal-operator') });
    await makeOperator(app(), op.userId);
    const u = await signUp(app(), { email: testEmail('reseal-stuck') });
    const v = await signUp(app(), { email: testEmail('reseal-free') });
    const w = await signUp(app(), { email: testEmail('reseal-bystander') });
    const stuckWs = (await u.post<{ id: string }>('/api/workspaces', { name: 'Stuck' })).body.id;
    const freeWs = (await v.post<{ id: string }>('/api/workspaces', { name: 'Free' })).body.id;
    const otherWs = (await w.post<{ id: string }>('/api/workspaces', { name: 'Bystander' })).body.id;
    await oldShapeEvents(stuckWs, u.userId, newId('usr'));
    await oldShapeEvents(freeWs, v.userId, newId('usr'));
    await oldShapeEvents(otherWs, w.userId, newId('usr'));
    const stuck = await u.post<{ deletion: { id: string } }>('/api/me/deletion', { password: u.password });
    expect(stuck.status, stuck.text).toBe(202);
    expect((await v.post('/api/me/deletion', { password: v.password })).status).toBe(202);
    const unblock = await blockReseal(stuckWs);
    try {
      app().clock.advance(DELETION_GRACE_DAYS * DAY + MINUTE);
      await app().jobs.send(ERASURE_JOB, {});
      expect((await app().jobs.drain(ERASURE_JOB)).failed).toBe(0);
      // V is erased: no audit row keeps V's id.
      expect(await asOwner('select id from users where id = $1', [v.userId])).toEqual([]);
      expect(await auditRowsHolding(v.userId)).toEqual({ events: 0, context: 0, subjects: 0 });
      // Only chains naming V were re-sealed: the bystander's workspace chain still waits for the job.
      expect(await legacyIn(otherWs)).toBeGreaterThan(0);
      // U's erasure is refused, not carried out half: the account stays closed, the deletion
      // scheduled and counted for its retry, and the operators are told why.
      expect(await asOwner('select status from users where id = $1', [u.userId])).toEqual([{ status: 'closing' }]);
      const [row] = await asOwner<{ status: string; attempts: number }>(
        'select status, attempts from account_deletions where id = $1',
        [stuck.body.deletion.id],
      );
      expect(row).toMatchObject({ status: 'scheduled', attempts: 1 });
      const mails = await app().modules.notifications.service.listOutbox({ limit: 1000 });
      const alert = mails.find((m) => m.tag === 'privacy.erasure_failed' && m.text.includes(stuck.body.deletion.id));
      expect(alert?.to).toBe(op.email);
      expect(alert?.text).toContain(stuckWs);
      expect(alert?.text).toMatch(/could not be re-sealed/);
      expect(alert?.text).not.toContain(u.userId);
      expect(alert?.text).not.toContain(u.email);
    } finally {
      await unblock();
    }
    // After its backoff the retry re-seals U's chain and erases U: no raw id anywhere in the audit log.
    app().clock.advance(61 * MINUTE);
    await app().jobs.send(ERASURE_JOB, {});
    expect((await app().jobs.drain(ERASURE_JOB)).failed).toBe(0);
    expect(await asOwner('select id from users where id = $1', [u.userId])).toEqual([]);
    expect(await auditRowsHolding(u.userId)).toEqual({ events: 0, context: 0, subjects: 0 });
    expect((await app().modules.audit.service.verifyAll()).filter((r) => !r.ok)).toEqual([]);
  });
});

describe('security', () => {
  it('the database refuses a re-seal that was not recorded, or that changes more than user ids', async () => {
    const c = await signUp(app(), { email: testEmail('reseal-sec') });
    const ws = await c.post<{ id: string }>('/api/workspaces', { name: 'Guarded' });
    const workspaceId = ws.body.id;
    await oldShapeEvents(workspaceId, c.userId, newId('usr'));
    const [row] = await asOwner<{ seq: string; prev_hash: string; hash: string; target_id: string }>(
      `select seq::text, prev_hash, hash, target_id from audit_events where chain = $1 and action = 'key.created'`,
      [workspaceId],
    );
    if (!row) throw new Error('no event');
    const rewrite = (patch: Record<string, unknown>) =>
      JSON.stringify([
        {
          seq: Number(row.seq),
          actor_id: pseudonym(c.userId),
          actor_user_id: pseudonym(c.userId),
          target_id: row.target_id,
          diff: null,
          prev_hash: row.prev_hash,
          hash: 'f'.repeat(64),
          ...patch,
        },
      ]);
    const attempt = (rows: string, recorded: boolean) =>
      app().db.tenant(workspaceId, async (tx) => {
        if (recorded) {
          await app().modules.audit.service.record(tx, {
            workspaceId: null,
            actor: { type: 'system', name: 'audit-reseal' },
            action: 'audit.chain_resealed',
            target: { type: 'audit_chain', id: workspaceId },
            diff: { fromSeq: 1 },
          });
        }
        await tx.execute(sql`select berth_audit_reseal(${workspaceId}, ${rows}::jsonb)`);
      });
    const refusal = (p: Promise<unknown>) =>
      p.then(
        () => 'accepted',
        (err: { cause?: { message?: string } }) => err.cause?.message ?? String(err),
      );
    expect(await refusal(attempt(rewrite({}), false))).toMatch(/record audit.chain_resealed/);
    expect(await refusal(attempt(rewrite({ target_id: 'key_other' }), true))).toMatch(/more than user ids/);
    expect(await refusal(attempt(rewrite({ diff: { added: 1 } }), true))).toMatch(/more than user ids/);
    expect(await refusal(attempt(rewrite({ prev_hash: '0'.repeat(64) }), true))).toMatch(/does not chain/);
    // Nothing changed: the chain still verifies as it was written.
    expect((await app().modules.audit.service.verify(workspaceId)).ok).toBe(true);
  });

  // On PGlite the application is the tables' owner (one role): the role check needs server Postgres.
  it.runIf(onServerPostgres())(
    'the application role cannot update audit events by setting the switch itself',
    async () => {
      const d = await signUp(app(), { email: testEmail('reseal-role') });
      const ws = await d.post<{ id: string }>('/api/workspaces', { name: 'Role' });
      const workspaceId = ws.body.id;
      await oldShapeEvents(workspaceId, d.userId, newId('usr'));
      await expect(
        app().db.tenant(workspaceId, async (tx) => {
          await tx.execute(sql`select set_config('berth.audit_reseal', 'on', true)`);
          await tx.execute(sql`update audit_events set ip = null where chain = ${workspaceId}`);
        }),
      ).rejects.toThrow();
      expect((await app().modules.audit.service.verify(workspaceId)).ok).toBe(true);
    },
  );
});
