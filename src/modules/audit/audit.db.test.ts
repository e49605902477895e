import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { onServerPostgres } from '../../../test/helpers/db.ts';
import { TEST_APP_ROLE } from '../../../test/helpers/global-setup.ts';
import { testEmail, testPassword } from '../../../test/helpers/identity.ts';
import { DAY } from '../../platform/clock.ts';
import type { Actor } from '../../platform/http/context.ts';
import { createLogger } from '../../platform/logger.ts';
import { auditRepo } from './audit.repo.ts';
import { auditService } from './audit.service.ts';
import {
  AUDIT_CHECKPOINT_JOB,
  type AuditService,
  generateAuditSigningKey,
  PLATFORM_CHAIN,
  parseAuditSigningKey,
  parseRetiredPublicKeys,
} from './index.ts';

let app: TestApp;
let audit: AuditService;

/** Runs SQL as the table owner (a superuser here): PGlite's only role, or the owner URL on server Postgres. */
async function asOwner<T extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
  if (!app.testDb.url) return app.db.query<T>(text, params);
  const client = new pg.Client({ connectionString: app.testDb.url });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end();
  }
}

/** Tampering as a superuser who switches the triggers off for the statement (what an attacker with the database could do). */
async function tamper(text: string) {
  const script = `begin; set local session_replication_role = replica; ${text}; commit;`;
  try {
    if (!app.testDb.url) await app.db.exec(script);
    else await asOwner(script);
  } catch (err) {
    if (!app.testDb.url) await app.db.exec('rollback');
    throw err;
  }
}

/** Runs `fn` with the clock `days` in the past, so what it records is that old (the database's clock is real). */
async function inThePast<T>(days: number, fn: () => Promise<T>): Promise<T> {
  app.clock.set(new Date(Date.now() - days * DAY));
  try {
    return await fn();
  } finally {
    app.clock.set(new Date());
  }
}

/** One raw statement inside a workspace transaction (what a compromised application could send). */
async function inTenant(workspaceId: string, text: string) {
  return app.db.tenant(workspaceId, (tx) => tx.execute(sql.raw(text)));
}

const actor: Actor = {
  type: 'user',
  userId: 'usr_test',
  meta: { ip: '203.0.113.9', userAgent: 'vitest', requestId: 'req_1' },
};

async function newWorkspace(): Promise<string> {
  const user = await app.modules.identity.service.createUser({ email: testEmail('audit'), password: testPassword() });
  return (await app.modules.workspaces.service.createWorkspace({ ownerUserId: user.id, name: 'Audited' })).id;
}

async function append(workspaceId: string, n: number, action = 'test.done') {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const { seq } = await app.db.tenant(workspaceId, (tx) =>
      audit.record(tx, { workspaceId, actor, action, target: { type: 'thing', id: `t${i}` }, diff: { i } }),
    );
    out.push(seq);
  }
  return out;
}

beforeAll(async () => {
  app = await createTestApp({ config: { BERTH_AUDIT_SIGNING_KEY: generateAuditSigningKey() } });
  audit = app.modules.audit.service;
});
afterAll(async () => {
  await app.close();
});

describe('happy', () => {
  it('appends consecutive events from seq 1 (workspace.created first) and the chain verifies', async () => {
    const ws = await newWorkspace();
    expect(await append(ws, 3)).toEqual([2, 3, 4]);
    const report = await audit.verify(ws);
    expect(report).toMatchObject({ ok: true, chain: ws, checked: 4, firstBrokenSeq: null, reason: null });
    // The request facts are kept beside the chain (audit_event_context), not in the hashed row.
    const rows = await asOwner<{ seq: string; ip: string | null; context_ip: string | null; action: string }>(
      `select e.seq, e.ip, c.ip as context_ip, e.action from audit_events e
         left join audit_event_context c on c.event_id = e.id where e.chain = $1 order by e.seq`,
      [ws],
    );
    expect(rows.map((r) => r.action)).toEqual(['workspace.created', 'test.done', 'test.done', 'test.done']);
    expect(rows[1]?.ip).toBeNull();
    expect(rows[1]?.context_ip).toBe('203.0.113.9');
  });

  it('the event rolls back with the change it records', async () => {
    const ws = await newWorkspace();
    await expect(
      app.db.tenant(ws, async (tx) => {
        await audit.record(tx, { workspaceId: ws, actor, action: 'test.rolled_back', target: { type: 't', id: '1' } });
        throw new Error('the change failed');
      }),
    ).rejects.toThrow('the change failed');
    expect((await audit.list(ws, { action: 'test.rolled_back' }, { limit: 10 })).data).toHaveLength(0);
    expect(await append(ws, 1)).toEqual([2]);
  });

  it('20 concurrent appends to one chain get distinct consecutive seqs', async () => {
    const ws = await newWorkspace();
    const seqs = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        app.db.tenant(ws, (tx) =>
          audit.record(tx, { workspaceId: ws, actor, action: 'test.parallel', target: { type: 't', id: `p${i}` } }),
        ),
      ),
    );
    expect(seqs.map((s) => s.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 2));
    expect((await audit.verify(ws)).ok).toBe(true);
  });

  it('a workspace transaction records platform events (deletion) without seeing the platform chain', async () => {
    const ws = await newWorkspace();
    const before = (await audit.findHead(PLATFORM_CHAIN))?.seq ?? 0;
    await app.db.tenant(ws, (tx) =>
      audit.record(tx, { workspaceId: null, actor, action: 'test.platform', target: { type: 't', id: ws } }),
    );
    expect((await audit.findHead(PLATFORM_CHAIN))?.seq).toBe(before + 1);
    expect((await audit.verify(PLATFORM_CHAIN)).ok).toBe(true);
  });

  it('signed checkpoints: on demand, by the periodic job, and checked by verify', async () => {
    const ws = await newWorkspace();
    await append(ws, 2);
    const cp = await audit.createCheckpoint(ws);
    expect(cp).toMatchObject({ chain: ws, seq: 3 });
    await append(ws, 1);
    await app.jobs.send(AUDIT_CHECKPOINT_JOB, {});
    await app.jobs.drain(AUDIT_CHECKPOINT_JOB);
    const report = await audit.verify(ws);
    expect(report.ok).toBe(true);
    expect(report.checkpoints).toMatchObject({ checked: 2, signaturesChecked: true, latest: { seq: 4 } });
    // Nothing new: the job signs nothing for this chain.
    expect(await audit.checkpointAll()).toBe(0);
  });

  it('retention drops a whole expired prefix through the narrow function, recorded in the platform chain; the chain still verifies from its anchor', async () => {
    const ws = await inThePast(100, async () => {
      const id = await newWorkspace();
      await append(id, 5);
      return id;
    });
    await audit.createCheckpoint(ws);
    const sixth = await asOwner<{ prev_hash: string }>(
      'select prev_hash from audit_events where chain = $1 and seq = 4',
      [ws],
    );
    expect(await audit.dropBefore(ws, 4, { retentionDays: 90 })).toBe(3);
    const report = await audit.verify(ws);
    expect(report).toMatchObject({ ok: true, checked: 3, anchor: { seq: 4, hash: sixth[0]?.prev_hash } });
    const recorded = await audit.list(PLATFORM_CHAIN, { action: 'audit.retention_applied', target: ws }, { limit: 5 });
    expect(recorded.data.map((e) => e.diff)).toEqual([
      { beforeSeq: 4, anchorHash: sixth[0]?.prev_hash, fromSeq: 1, retentionDays: 90 },
    ]);
    expect(recorded.data[0]?.actor).toMatchObject({ type: 'system', id: 'audit-retention' });
    expect((await audit.verify(PLATFORM_CHAIN)).ok).toBe(true);
    const left = await asOwner<{ seq: string }>('select seq from audit_events where chain = $1 order by seq', [ws]);
    expect(left.map((r) => Number(r.seq))).toEqual([4, 5, 6]);
    expect(await append(ws, 1)).toEqual([7]);
    expect((await audit.verify(ws)).ok).toBe(true);
  });

  it("deleting a workspace records it in the platform chain and removes the workspace's chain", async () => {
    const user = await app.modules.identity.service.createUser({ email: testEmail('del'), password: testPassword() });
    const ws = (await app.modules.workspaces.service.createWorkspace({ ownerUserId: user.id, name: 'Doomed' })).id;
    await append(ws, 2);
    const head = await audit.findHead(ws);
    await app.modules.workspaces.service.deleteWorkspace({
      scope: { workspaceId: ws, actor: { type: 'user', userId: user.id }, role: 'owner' },
      confirmName: 'Doomed',
    });
    const left = await asOwner<{ n: string }>(
      'select (select count(*) from audit_events where chain = $1) + (select count(*) from audit_chain_heads where chain = $1) as n',
      [ws],
    );
    expect(Number(left[0]?.n)).toBe(0);
    const platform = await audit.list(PLATFORM_CHAIN, { action: 'workspace.deleted', target: ws }, { limit: 5 });
    expect(platform.data).toHaveLength(1);
    expect(platform.data[0]?.diff).toEqual({ chainSeq: head?.seq, chainHash: head?.hash });
    expect((await audit.verify(PLATFORM_CHAIN)).ok).toBe(true);
  });
});

describe('errors', () => {
  it('a checkpoint of an empty chain is refused; without a signing key checkpoints are refused, the job skips', async () => {
    await expect(audit.createCheckpoint('ws_00000000000000000000000000')).rejects.toMatchObject({ code: 'conflict' });
    const keyless = await createTestApp();
    try {
      const ws = (
        await keyless.modules.workspaces.service.createWorkspace({
          ownerUserId: (
            await keyless.modules.identity.service.createUser({ email: testEmail('k'), password: testPassword() })
          ).id,
          name: 'No key',
        })
      ).id;
      await expect(keyless.modules.audit.service.createCheckpoint(ws)).rejects.toMatchObject({ code: 'conflict' });
      expect(await keyless.modules.audit.service.checkpointAll()).toBe(0);
      const report = await keyless.modules.audit.service.verify(ws);
      expect(report).toMatchObject({ ok: true, publicKey: null, checkpoints: { signaturesChecked: false } });
    } finally {
      await keyless.close();
    }
  });

  it('retention cannot drop the head, events younger than the retention, nor use a retention under 30 days', async () => {
    const ws = await inThePast(100, async () => {
      const id = await newWorkspace();
      await append(id, 2);
      return id;
    });
    await append(ws, 2);
    // Keeps at least the head event (before: head + 1 emptied the chain and verify said ok).
    await expect(audit.dropBefore(ws, 6, { retentionDays: 30 })).rejects.toThrow();
    // Events 4 and 5 are from today.
    await expect(audit.dropBefore(ws, 5, { retentionDays: 30 })).rejects.toThrow();
    await expect(audit.dropBefore(ws, 3, { retentionDays: 29 })).rejects.toMatchObject({ code: 'validation_failed' });
    // The database enforces the floor itself, whatever the caller passes.
    await expect(
      app.db.tenant(ws, (tx) => tx.execute(sql`select berth_audit_drop_before(${ws}, 3, interval '1 day')`)),
    ).rejects.toThrow();
    expect((await audit.verify(ws)).checked).toBe(5);
    expect(await audit.dropBefore(ws, 4, { retentionDays: 30 })).toBe(3);
    expect((await audit.verify(ws)).ok).toBe(true);
    await expect(app.db.system((tx) => audit.dropWorkspaceChain(tx, PLATFORM_CHAIN))).rejects.toThrow();
  });

  it('verifying a chain that does not exist is not_found; an existing workspace without a chain is broken', async () => {
    await expect(audit.verify('ws_00000000000000000000000000')).rejects.toMatchObject({ code: 'not_found' });
    expect(await audit.verify('ws_00000000000000000000000000', { known: true })).toMatchObject({
      ok: false,
      reason: 'chain_missing',
    });
  });

  it('on-demand checkpoints: refused when the head did not move, at most one a minute per chain', async () => {
    const ws = await newWorkspace();
    await append(ws, 1);
    await audit.createCheckpoint(ws);
    await expect(audit.createCheckpoint(ws)).rejects.toMatchObject({ code: 'conflict' });
    await append(ws, 1);
    await expect(audit.createCheckpoint(ws)).rejects.toMatchObject({ code: 'rate_limited' });
    app.clock.advance(61_000);
    try {
      expect(await audit.createCheckpoint(ws)).toMatchObject({ seq: 3 });
    } finally {
      app.clock.set(new Date());
    }
  });

  it('retention also refuses when not recorded in the platform chain first', async () => {
    const ws = await inThePast(100, async () => {
      const id = await newWorkspace();
      await append(id, 3);
      return id;
    });
    await expect(
      app.db.tenant(ws, (tx) => tx.execute(sql`select berth_audit_drop_before(${ws}, 3, interval '30 days')`)),
    ).rejects.toThrow();
    expect((await audit.verify(ws)).checked).toBe(4);
    await expect(app.db.system((tx) => audit.dropWorkspaceChain(tx, PLATFORM_CHAIN))).rejects.toThrow();
    expect((await audit.verify(ws)).ok).toBe(true);
  });
});

describe('security', () => {
  it('chain heads only advance by one appended event: anchors, rewinds, skips and removals are refused', async () => {
    const ws = await newWorkspace();
    await append(ws, 3);
    for (const stmt of [
      `update audit_chain_heads set anchor_seq = 3 where chain = '${ws}'`,
      `update audit_chain_heads set anchor_hash = repeat('1', 64) where chain = '${ws}'`,
      `update audit_chain_heads set seq = 1 where chain = '${ws}'`,
      `update audit_chain_heads set seq = seq + 1, hash = repeat('1', 64) where chain = '${ws}'`,
      `delete from audit_chain_heads where chain = '${ws}'`,
      `insert into audit_chain_heads (chain, workspace_id, seq, hash) values ('ws_forged', 'ws_forged', 5, repeat('1', 64))`,
    ]) {
      await expect(inTenant(ws, stmt), stmt).rejects.toMatchObject({ cause: { code: '42501' } });
    }
    // The switch the removal functions use is not enough for anyone else.
    await expect(
      inTenant(
        ws,
        `select set_config('berth.audit_retention', 'on', true), set_config('berth.bypass_rls', 'on', true); update audit_chain_heads set anchor_seq = 3 where chain = '${ws}'`,
      ),
    ).rejects.toThrow();
    expect(await audit.verify(ws)).toMatchObject({ ok: true, checked: 4 });
  });

  it('a chain is dropped only with its workspace and a platform record naming its head: forged settings and records fail', async () => {
    const a = await newWorkspace();
    const b = await newWorkspace();
    await append(b, 2);
    // No record: refused.
    await expect(app.db.system((tx) => audit.dropWorkspaceChain(tx, b))).rejects.toThrow();
    // From A's transaction, forging B's settings and B's deletion record: B still exists, refused at commit.
    const head = await audit.findHead(b);
    await expect(
      app.db.tenant(a, async (tx) => {
        await tx.execute(sql`select set_config('berth.workspace_id', ${b}, true)`);
        await audit.record(tx, {
          workspaceId: null,
          actor,
          action: 'workspace.deleted',
          target: { type: 'workspace', id: b },
          diff: { chainSeq: head?.seq, chainHash: head?.hash },
        });
        await audit.dropWorkspaceChain(tx, b);
      }),
    ).rejects.toThrow();
    expect(await audit.verify(b)).toMatchObject({ ok: true, checked: 3 });
  });

  it('verify fails when events exist below the anchor or the head is missing', async () => {
    const ws = await newWorkspace();
    await append(ws, 3);
    await tamper(`update audit_chain_heads set anchor_seq = 3,
      anchor_hash = (select hash from audit_events where chain = '${ws}' and seq = 2) where chain = '${ws}'`);
    expect(await audit.verify(ws)).toMatchObject({ ok: false, firstBrokenSeq: 1, reason: 'events_below_anchor' });
    await tamper(`delete from audit_chain_heads where chain = '${ws}'`);
    expect(await audit.verify(ws)).toMatchObject({ ok: false, reason: 'head_missing' });
    const all = await audit.verifyAll();
    expect(all.find((r) => r.chain === ws)).toMatchObject({ ok: false, reason: 'head_missing' });
  });

  it('a rotated signing key: old checkpoints verify with the retired public key, and are unknown without it', async () => {
    const ws = await newWorkspace();
    await append(ws, 1);
    await audit.createCheckpoint(ws);
    const old = audit.publicKey();
    const next = parseAuditSigningKey(generateAuditSigningKey());
    const rotated = (retired: string | undefined) =>
      auditService({
        db: app.db,
        repo: auditRepo,
        clock: app.clock,
        logger: createLogger({ level: 'silent' }),
        signingKey: next,
        retiredKeys: parseRetiredPublicKeys(retired),
      });
    expect(await rotated(undefined).verify(ws)).toMatchObject({ ok: false, reason: 'checkpoint_key_unknown' });
    expect(await rotated(old.publicKeyRaw).verify(ws)).toMatchObject({ ok: true, checkpoints: { checked: 1 } });
    expect(() => parseRetiredPublicKeys('not-a-key')).toThrow(/BERTH_AUDIT_RETIRED_PUBLIC_KEYS/);
  });

  it.skipIf(!onServerPostgres())(
    'the application role cannot call the removal functions outside their rules, nor delete with the switch on',
    async () => {
      const ws = await newWorkspace();
      await append(ws, 2);
      for (const stmt of [
        `select berth_audit_drop_before('${ws}', 3, interval '30 days')`,
        `select berth_audit_drop_before('${ws}', 4, interval '3650 days')`,
        `select berth_audit_drop_chain('${ws}')`,
      ]) {
        await expect(inTenant(ws, stmt), stmt).rejects.toThrow();
      }
      // Another role of the cluster may not call them at all.
      const perms = await asOwner<{ pub: boolean; app: boolean }>(
        `select has_function_privilege('public', 'berth_audit_drop_chain(text)', 'execute') as pub,
              has_function_privilege($1, 'berth_audit_drop_chain(text)', 'execute') as app`,
        [TEST_APP_ROLE],
      );
      expect(perms[0]).toEqual({ pub: false, app: true });
      // Even a role granted DELETE (not the owner) cannot delete with the retention switch on.
      await asOwner(`grant delete on audit_events to ${TEST_APP_ROLE}`);
      try {
        await expect(
          inTenant(
            ws,
            `select set_config('berth.audit_retention', 'on', true); delete from audit_events where chain = '${ws}'`,
          ),
        ).rejects.toThrow();
      } finally {
        await asOwner(`revoke delete on audit_events from ${TEST_APP_ROLE}`);
      }
      expect(await audit.verify(ws)).toMatchObject({ ok: true, checked: 3 });
    },
  );

  it('the trigger refuses UPDATE, DELETE and TRUNCATE of events and checkpoints, even for the owner', async () => {
    const ws = await newWorkspace();
    await audit.createCheckpoint(ws);
    for (const stmt of [
      `update audit_events set action = 'x' where chain = '${ws}'`,
      `delete from audit_events where chain = '${ws}'`,
      'truncate audit_events',
      `update audit_checkpoints set seq = 9 where chain = '${ws}'`,
      `delete from audit_checkpoints where chain = '${ws}'`,
      'truncate audit_checkpoints',
    ]) {
      await expect(asOwner(stmt), stmt).rejects.toThrow(/append-only/);
    }
    expect((await audit.verify(ws)).ok).toBe(true);
  });

  it.skipIf(!onServerPostgres())('the application role may not UPDATE or DELETE audit rows at all', async () => {
    const ws = await newWorkspace();
    for (const stmt of [
      'update audit_events set action = $1 where chain = $2',
      'update audit_checkpoints set hash = $1 where chain = $2',
    ]) {
      await expect(app.db.query(stmt, ['x', ws])).rejects.toThrow(/permission denied/);
    }
    for (const stmt of [
      'delete from audit_events where chain = $1',
      'delete from audit_checkpoints where chain = $1',
    ]) {
      await expect(app.db.query(stmt, [ws])).rejects.toThrow(/permission denied/);
    }
    await expect(app.db.query('truncate audit_events')).rejects.toThrow(/permission denied/);
  });

  it.skipIf(!onServerPostgres())('a workspace transaction cannot read or prune another chain', async () => {
    const a = await newWorkspace();
    const b = await newWorkspace();
    const visible = await app.db.tenant(a, async (tx) => {
      const res = (await tx.execute(
        sql`select (select count(*) from audit_events) as events, (select count(*) from audit_checkpoints where chain <> ${a}) as others`,
      )) as unknown as { rows: Array<{ events: string; others: string }> };
      return res.rows[0];
    });
    // Unfiltered: only A's own workspace.created event, no platform or B rows.
    expect(visible).toEqual({ events: '1', others: '0' });
    await expect(app.db.tenant(a, (tx) => audit.dropWorkspaceChain(tx, b))).rejects.toMatchObject({
      cause: { code: '42501' },
    });
    expect((await audit.verify(b)).checked).toBe(1);
  });

  describe('tamper detection names the exact seq', () => {
    it('an edited row: hash_mismatch at its seq', async () => {
      const ws = await newWorkspace();
      await append(ws, 5);
      await tamper(`update audit_events set action = 'test.innocent' where chain = '${ws}' and seq = 3`);
      expect(await audit.verify(ws)).toMatchObject({ ok: false, firstBrokenSeq: 3, reason: 'hash_mismatch' });
    });

    it('a deleted row: seq_gap at its seq', async () => {
      const ws = await newWorkspace();
      await append(ws, 5);
      await tamper(`delete from audit_events where chain = '${ws}' and seq = 4`);
      expect(await audit.verify(ws)).toMatchObject({ ok: false, firstBrokenSeq: 4, reason: 'seq_gap' });
    });

    it('the last rows deleted: head_mismatch after the last one left', async () => {
      const ws = await newWorkspace();
      await append(ws, 5);
      await tamper(`delete from audit_events where chain = '${ws}' and seq >= 5`);
      expect(await audit.verify(ws)).toMatchObject({ ok: false, firstBrokenSeq: 5, reason: 'head_mismatch' });
    });

    it('two rows reordered (seqs swapped): prev_hash_mismatch at the first of them', async () => {
      const ws = await newWorkspace();
      await append(ws, 5);
      await tamper(
        `update audit_events set seq = 999999 where chain = '${ws}' and seq = 3;
         update audit_events set seq = 3 where chain = '${ws}' and seq = 4;
         update audit_events set seq = 4 where chain = '${ws}' and seq = 999999`,
      );
      expect(await audit.verify(ws)).toMatchObject({ ok: false, firstBrokenSeq: 3, reason: 'prev_hash_mismatch' });
    });

    it('a forged checkpoint signature: checkpoint_signature_invalid', async () => {
      const ws = await newWorkspace();
      await append(ws, 2);
      const cp = await audit.createCheckpoint(ws);
      const forged = Buffer.from(cp.signature, 'base64url');
      forged[0] = (forged[0] ?? 0) ^ 1;
      await tamper(`update audit_checkpoints set signature = '${forged.toString('base64url')}' where chain = '${ws}'`);
      expect(await audit.verify(ws)).toMatchObject({
        ok: false,
        firstBrokenSeq: 3,
        reason: 'checkpoint_signature_invalid',
      });
    });

    it('a chain rewritten with recomputed hashes still contradicts its signed checkpoint', async () => {
      const ws = await newWorkspace();
      await append(ws, 3);
      await audit.createCheckpoint(ws);
      // The attacker removes event 4 and rewrites the head so the hash chain itself is consistent.
      await tamper(`delete from audit_events where chain = '${ws}' and seq = 4;
        update audit_chain_heads set seq = 3, hash = (select hash from audit_events where chain = '${ws}' and seq = 3) where chain = '${ws}'`);
      expect(await audit.verify(ws)).toMatchObject({ ok: false, firstBrokenSeq: 4, reason: 'checkpoint_mismatch' });
    });
  });
});
