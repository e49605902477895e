import { sql } from 'drizzle-orm';
import type { Database, Db } from '../../platform/db/db.ts';
import { isId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import { type ChainedEvent, hashEvent } from './audit.chain.ts';
import type { AuditRepo } from './audit.repo.ts';
import { type Pseudonymize, sealEvent } from './audit.subjects.ts';
import type { AuditEventRow } from './audit.tables.ts';

const PAGE = 500;

type Rows<T> = { rows: T[] };

/** One event as the re-seal writes it (what `berth_audit_reseal` accepts). */
type ResealedRow = {
  seq: number;
  actor_id: string;
  actor_user_id: string | null;
  target_id: string;
  diff: Record<string, unknown> | null;
  prev_hash: string;
  hash: string;
};

/**
 * What a re-seal run did: chains re-sealed, events rewritten, and the chains it could not
 * re-seal (left as they were, retried by the next run). With a `userId`, `failed` is every
 * chain still holding that user's raw id afterwards.
 */
export type ResealReport = { chains: number; events: number; failed: string[] };

/** The kind of a failure, for the log: its name and SQLSTATE, never its message (it may quote values). */
function failureKind(err: unknown): string {
  const e = err as { name?: unknown; code?: unknown; cause?: { code?: unknown } } | null;
  const name = typeof e?.name === 'string' ? e.name : 'error';
  const code = e?.cause?.code ?? e?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? `${name} ${code}` : name;
}

/**
 * Re-sealing of audit events written before pseudonyms (an installation upgraded from an
 * older Berth). The hash chain covers the actor, target, diff, IP and user agent, so
 * replacing a raw user id changes the event's hash and therefore every later link: each
 * chain holding such events is re-sealed, in one transaction, from its first old-shape
 * event to its head:
 *
 * 1. the platform chain records `audit.chain_resealed` (the chain, `fromSeq`, and its head
 *    `throughSeq`/`headHash` before), which the database function requires;
 * 2. every event from fromSeq on gets user ids replaced by their pseudonyms and IP / user
 *    agent removed (moved to audit_event_context), and is re-chained from the unchanged
 *    event before fromSeq (or the anchor): the chain verifies from its anchor as before;
 * 3. checkpoints from fromSeq on (which sign the old hashes) are removed and, with a signing
 *    key, the new head is signed.
 *
 * Idempotent (a chain without old-shape events is left alone) and resumable (chain by
 * chain; a stopped run leaves each chain either re-sealed or untouched). A chain that
 * cannot be re-sealed (its transaction rolls back) is logged by id and error kind and
 * skipped: the other chains proceed, and the report names it.
 */
export function auditReseal(deps: {
  db: Pick<Db, 'system'>;
  repo: AuditRepo;
  logger: Pick<Logger, 'info' | 'warn'>;
  pseudonym: Pseudonymize | undefined;
  inChain: <T>(chain: string, fn: (tx: Database) => Promise<T>) => Promise<T>;
  /** Appends the platform chain's record (the service's `record`). */
  recordResealed: (tx: Database, chain: string, diff: Record<string, unknown>) => Promise<unknown>;
  /** Signs the chain's new head when a signing key is configured. */
  signHead: (tx: Database, chain: string) => Promise<unknown>;
  platformChain: string;
}) {
  const { repo } = deps;

  async function existingUsers(tx: Database, ids: string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const res = (await tx.execute(
      sql`select id from users where id = any(${sql.param(ids)}::text[])`,
    )) as unknown as Rows<{ id: string }>;
    return new Set(res.rows.map((r) => r.id));
  }

  /** Writes what an old-shape event held beside the chain: pseudonym mappings and request facts. */
  async function storeBeside(tx: Database, rows: AuditEventRow[], p: Pseudonymize): Promise<void> {
    const named = new Set<string>();
    const sealedById = new Map<string, Map<string, string>>();
    for (const r of rows) {
      const s = sealEvent(p, {
        actorId: r.actorId,
        actorUserId: r.actorUserId,
        targetId: r.targetId,
        diff: r.diff ?? undefined,
      });
      sealedById.set(r.id, s.subjects);
      for (const u of s.subjects.values()) named.add(u);
    }
    // Only users that still exist are mapped (or kept as the context's user): an erased
    // user's id becomes a pseudonym that names nobody.
    const live = await existingUsers(tx, [...named]);
    const mappings = new Map<string, { userId: string; at: Date }>();
    for (const r of rows) {
      for (const [pseudonym, userId] of sealedById.get(r.id) ?? []) {
        if (live.has(userId) && !mappings.has(pseudonym)) mappings.set(pseudonym, { userId, at: r.occurredAt });
      }
      // Request facts are kept only where erasure finds them again (by the context's user):
      // an acting user who no longer exists takes them along (the event loses them).
      const acting = r.actorUserId ?? (isId(r.actorId, 'usr') ? r.actorId : null);
      const userId = acting !== null && live.has(acting) ? acting : null;
      const keepFacts = acting === null || userId !== null;
      const ip = keepFacts ? r.ip : null;
      const userAgent = keepFacts ? r.userAgent : null;
      if (ip === null && userAgent === null && userId === null) continue;
      await tx.execute(sql`
        insert into audit_event_context (event_id, occurred_at, chain, workspace_id, user_id, ip, user_agent)
        values (${r.id}, ${r.occurredAt.toISOString()}::timestamptz, ${r.chain}, ${r.workspaceId}, ${userId},
                ${ip}, ${userAgent})
        on conflict (event_id) do nothing`);
    }
    for (const [pseudonym, m] of mappings) {
      await tx.execute(sql`
        insert into audit_subjects (pseudonym, user_id, created_at)
        values (${pseudonym}, ${m.userId}, ${m.at.toISOString()}::timestamptz)
        on conflict do nothing`);
    }
  }

  /** The event as it is re-sealed: user ids as pseudonyms, no request facts, chained from `prevHash`. */
  function resealed(r: AuditEventRow, prevHash: string, p: Pseudonymize): ResealedRow {
    const s = sealEvent(p, {
      actorId: r.actorId,
      actorUserId: r.actorUserId,
      targetId: r.targetId,
      diff: r.diff ?? undefined,
    });
    const base: ChainedEvent = {
      id: r.id,
      chain: r.chain,
      workspaceId: r.workspaceId,
      seq: r.seq,
      occurredAt: r.occurredAt,
      actorType: r.actorType,
      actorId: s.actorId,
      actorUserId: s.actorUserId,
      ip: null,
      userAgent: null,
      requestId: r.requestId,
      action: r.action,
      targetType: r.targetType,
      targetId: s.targetId,
      outcome: r.outcome,
      diff: s.diff ?? null,
      prevHash,
    };
    return {
      seq: r.seq,
      actor_id: base.actorId,
      actor_user_id: base.actorUserId,
      target_id: base.targetId,
      diff: base.diff,
      prev_hash: prevHash,
      hash: hashEvent(base),
    };
  }

  /** Re-seals one chain (nothing when it has no old-shape events); returns the events it rewrote. */
  async function resealChain(chain: string, p: Pseudonymize): Promise<number> {
    return deps.inChain(chain, async (tx) => {
      // The platform head first, then the chain's: the order retention takes them in.
      await repo.lockHead(tx, deps.platformChain, null);
      const head = await repo.lockHead(tx, chain, chain === deps.platformChain ? null : chain);
      const first = await repo.firstLegacySeq(tx, chain, head.anchorSeq);
      if (first === null) return 0;
      const prevHash = first === head.anchorSeq ? head.anchorHash : await repo.hashAt(tx, chain, first - 1);
      if (prevHash === null) throw new Error(`audit chain ${chain} has no event ${first - 1}: verify it first`);
      const events = await repo.countLegacy(tx, chain, first);
      await deps.recordResealed(tx, chain, {
        fromSeq: first,
        throughSeq: head.seq,
        headHash: head.hash,
        events,
      });
      // The platform chain's own record is part of what it re-seals (it chains from re-sealed events).
      const last = chain === deps.platformChain ? head.seq + 1 : head.seq;
      let prev = prevHash;
      let afterSeq = first - 1;
      let written = 0;
      for (;;) {
        const rows = (await repo.listAscending(tx, chain, {}, { afterSeq, limit: PAGE })).filter((r) => r.seq <= last);
        if (rows.length === 0) break;
        const out: ResealedRow[] = [];
        for (const r of rows) {
          const next = resealed(r, prev, p);
          out.push(next);
          prev = next.hash;
        }
        await storeBeside(tx, rows, p);
        written += await repo.reseal(tx, chain, out);
        const lastRow = rows[rows.length - 1];
        if (!lastRow || lastRow.seq >= last) break;
        afterSeq = lastRow.seq;
      }
      await deps.signHead(tx, chain);
      return written;
    });
  }

  /** Re-seals each chain in its own transaction; a failing chain is logged (id and error kind) and skipped. */
  async function resealEach(chains: string[], p: Pseudonymize): Promise<ResealReport> {
    const report: ResealReport = { chains: 0, events: 0, failed: [] };
    for (const chain of chains) {
      try {
        report.events += await resealChain(chain, p);
        report.chains++;
      } catch (err) {
        report.failed.push(chain);
        deps.logger.warn(
          { chain, err: failureKind(err) },
          'audit: a chain could not be re-sealed; it stays as it was and is retried later',
        );
      }
    }
    return report;
  }

  return {
    /**
     * Re-seals the chains that still hold old-shape events: every such chain (the startup
     * and daily job), or with `userId` only those holding that user's raw id (erasure, before
     * it erases the user). Each chain commits or fails alone; `failed` lists those that did
     * not, and with `userId` every chain still naming the user afterwards, so the caller can
     * refuse to erase while a raw id would stay. Nothing to do is one index read.
     *
     * @example const { chains, events, failed } = await audit.sealLegacyEvents({ userId });
     */
    async sealLegacyEvents(opts: { userId?: string } = {}): Promise<ResealReport> {
      const p = deps.pseudonym;
      if (!p) return { chains: 0, events: 0, failed: [] };
      const { userId } = opts;
      const find = (tx: Database) => (userId ? repo.legacyChainsNaming(tx, userId) : repo.legacyChains(tx));
      const chains = await deps.db.system(find);
      const report = await resealEach(chains, p);
      if (report.chains > 0 || report.failed.length > 0) {
        deps.logger.info(
          { chains: report.chains, events: report.events, failed: report.failed.length },
          'audit: old events re-sealed with pseudonyms',
        );
      }
      if (userId && chains.length > 0) {
        // What still names the user, whatever the reason (a failed chain, an event written meanwhile).
        report.failed = await deps.db.system((tx) => repo.legacyChainsNaming(tx, userId));
      }
      return report;
    },
  };
}
