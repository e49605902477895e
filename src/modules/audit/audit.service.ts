import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import type { Logger } from '../../platform/logger.ts';
import { type ChainBreak, chainWalker, GENESIS_HASH, hashEvent, normalizeDiff } from './audit.chain.ts';
import type { AuditFilter, AuditRepo } from './audit.repo.ts';
import { auditReseal } from './audit.reseal.ts';
import type { AuditEventView, CheckpointView, VerifyReport } from './audit.schemas.ts';
import { type AuditSigningKey, type AuditVerifyKey, signCheckpoint, verifyCheckpoint } from './audit.signing.ts';
import { type Pseudonymize, resolveEvents, sealEvent, storeBeside } from './audit.subjects.ts';
import type { AuditCheckpointRow, AuditEventRow } from './audit.tables.ts';

/** What a caller records. `workspaceId: null` writes to the platform chain (operator actions). */
export type AuditInput = {
  workspaceId: string | null;
  actor: Actor;
  /** Dotted `noun.verb`: 'key.created', 'member.role_changed' ... */
  action: string;
  target: { type: string; id: string };
  outcome?: 'success' | 'failure';
  /** Small structured diff; never secrets or content. */
  diff?: Record<string, unknown>;
};

export const PLATFORM_CHAIN = 'platform';

/** One line of an audit export: the event as stored (hashed) and as readers see it. */
export type AuditExportLine = AuditEventView & {
  resolved: Pick<AuditEventView, 'actor' | 'target' | 'diff'>;
};

const PAGE = 500;

type Deps = {
  db: Pick<Db, 'tenant' | 'system'>;
  repo: AuditRepo;
  clock: Clock;
  logger: Logger;
  signingKey: AuditSigningKey | null;
  /** Public keys of rotated-out signing keys (BERTH_AUDIT_RETIRED_PUBLIC_KEYS): their checkpoints still verify. */
  retiredKeys?: AuditVerifyKey[];
  /**
   * Pseudonyms of user ids (the vault's): events then name users only by pseudonym and keep
   * request facts beside the chain (audit.subjects.ts), so erasure never touches the chain.
   * Absent: events store ids and request facts as given.
   */
  pseudonym?: Pseudonymize;
};

/** The shortest audit retention the database accepts (also enforced in SQL). */
export const MIN_AUDIT_RETENTION_DAYS = 30;
/** On-demand checkpoints: at most one per chain in this window. */
const CHECKPOINT_INTERVAL_MS = 60_000;

function actorColumns(actor: Actor) {
  switch (actor.type) {
    case 'user':
      return { actorType: 'user' as const, actorId: actor.userId, actorUserId: actor.userId, meta: actor.meta };
    case 'api_key':
      return { actorType: 'api_key' as const, actorId: actor.keyId, actorUserId: actor.userId, meta: actor.meta };
    case 'system':
      return { actorType: 'system' as const, actorId: actor.name, actorUserId: null, meta: actor.meta };
  }
}

export function toEventView(r: AuditEventRow): AuditEventView {
  return {
    id: r.id,
    chain: r.chain,
    workspaceId: r.workspaceId,
    seq: r.seq,
    occurredAt: r.occurredAt.toISOString(),
    actor: { type: r.actorType, id: r.actorId, userId: r.actorUserId, ip: r.ip, userAgent: r.userAgent },
    requestId: r.requestId,
    action: r.action,
    target: { type: r.targetType, id: r.targetId },
    outcome: r.outcome,
    diff: r.diff,
    prevHash: r.prevHash,
    hash: r.hash,
  };
}

function toCheckpointView(c: AuditCheckpointRow): CheckpointView {
  return {
    chain: c.chain,
    seq: c.seq,
    hash: c.hash,
    createdAt: c.createdAt.toISOString(),
    keyId: c.keyId,
    signature: c.signature,
  };
}

/** Opaque cursors: the seq to continue below, base64url. */
export function encodeCursor(seq: number): string {
  return Buffer.from(`s${seq}`).toString('base64url');
}
export function decodeCursor(cursor: string): number {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const m = /^s([1-9][0-9]{0,15})$/.exec(text);
  if (!m?.[1]) throw new AppError('validation_failed', 'The cursor is not valid.');
  return Number(m[1]);
}

const MESSAGES: Record<ChainBreak['reason'], string> = {
  hash_mismatch: 'the event does not match its hash (it was edited)',
  seq_gap: 'an event is missing (it was deleted)',
  prev_hash_mismatch: 'the event does not chain from the one before (events were reordered or inserted)',
  head_mismatch: 'the chain ends before its recorded head (trailing events were deleted)',
  checkpoint_signature_invalid: 'a checkpoint signature does not verify with the audit public key',
  checkpoint_key_unknown: 'a checkpoint was signed by a key this installation does not know',
  checkpoint_mismatch: 'a signed checkpoint names a hash the chain no longer has at that seq',
  head_missing: 'the chain has events but its head record was removed',
  events_below_anchor: 'events remain below the anchor (the anchor was moved to skip them)',
  chain_missing: 'the workspace has no audit chain at all (its events and head were removed)',
};

/**
 * The audit use cases: append (inside the caller's transaction), query, export, verify,
 * checkpoints and the narrow removal paths (retention prefix, deleted workspace's chain).
 */
export function auditService(deps: Deps) {
  const { db, repo, clock } = deps;
  let warnedNoKey = false;

  /** Runs `fn` in a transaction that may read `chain`: its workspace's, or system work for the platform chain. */
  function inChain<T>(chain: string, fn: (tx: Database) => Promise<T>): Promise<T> {
    return chain === PLATFORM_CHAIN ? db.system(fn) : db.tenant(chain, fn);
  }

  async function record(tx: Database, input: AuditInput): Promise<{ id: string; seq: number }> {
    const chain = input.workspaceId ?? PLATFORM_CHAIN;
    const head = await repo.lockHead(tx, chain, input.workspaceId);
    const now = clock.now();
    const { meta, ...plain } = actorColumns(input.actor);
    const sealed = deps.pseudonym
      ? sealEvent(deps.pseudonym, { ...plain, targetId: input.target.id, diff: input.diff })
      : null;
    const actor = sealed ? { ...plain, actorId: sealed.actorId, actorUserId: sealed.actorUserId } : plain;
    const base = {
      id: newId('aud', now),
      chain,
      workspaceId: input.workspaceId,
      seq: head.seq + 1,
      occurredAt: now,
      ...actor,
      ip: sealed ? null : (meta?.ip ?? null),
      userAgent: sealed ? null : (meta?.userAgent ?? null),
      requestId: meta?.requestId ?? null,
      action: input.action,
      targetType: input.target.type,
      targetId: sealed ? sealed.targetId : input.target.id,
      outcome: input.outcome ?? 'success',
      diff: normalizeDiff(sealed ? sealed.diff : input.diff),
      prevHash: head.hash,
    };
    const row: AuditEventRow = { ...base, hash: hashEvent(base) };
    await repo.append(tx, row);
    if (sealed) await storeBeside(tx, row, sealed, { userId: plain.actorUserId, meta });
    return { id: row.id, seq: row.seq };
  }

  /** A filter naming a user matches the pseudonym events store. */
  function sealedFilter(f: AuditFilter): AuditFilter {
    const p = deps.pseudonym;
    if (!p) return f;
    const hide = (v: string) => (v.startsWith('usr_') ? p(v) : v);
    return { ...f, ...(f.actor ? { actor: hide(f.actor) } : {}), ...(f.target ? { target: hide(f.target) } : {}) };
  }

  async function list(chain: string, filter: AuditFilter, page: { cursor?: string; limit: number }) {
    const beforeSeq = page.cursor ? decodeCursor(page.cursor) : undefined;
    const rows = await inChain(chain, async (tx) =>
      resolveEvents(
        tx,
        await repo.list(tx, chain, sealedFilter(filter), {
          limit: page.limit + 1,
          ...(beforeSeq ? { beforeSeq } : {}),
        }),
      ),
    );
    const data = rows.slice(0, page.limit);
    const last = data[data.length - 1];
    return {
      data: data.map(toEventView),
      nextCursor: rows.length > page.limit && last ? encodeCursor(last.seq) : null,
    };
  }

  /**
   * Every matching event, oldest first, a page at a time (for JSON Lines exports): the
   * stored fields the hash covers, and `resolved` with the user ids, IP and user agent.
   */
  async function* exportEvents(chain: string, filter: AuditFilter): AsyncGenerator<AuditExportLine> {
    let afterSeq = 0;
    for (;;) {
      const rows = await inChain(chain, (tx) =>
        repo.listAscending(tx, chain, sealedFilter(filter), { afterSeq, limit: PAGE }),
      );
      // The hashed fields as stored (pseudonyms), so an auditor can recompute the chain from
      // the export alone, and beside them who and where, while the accounts exist.
      const shown = await inChain(chain, (tx) => resolveEvents(tx, rows));
      for (const [i, r] of rows.entries()) {
        const v = toEventView(shown[i] ?? r);
        yield { ...toEventView(r), resolved: { actor: v.actor, target: v.target, diff: v.diff } };
      }
      const last = rows[rows.length - 1];
      if (!last || rows.length < PAGE) return;
      afterSeq = last.seq;
    }
  }

  const verifyKeys = new Map<string, AuditVerifyKey>();
  for (const k of deps.retiredKeys ?? []) verifyKeys.set(k.keyId, k);
  if (deps.signingKey) verifyKeys.set(deps.signingKey.keyId, deps.signingKey);

  /**
   * Recomputes `chain` from its anchor. `known`: the chain must exist (a workspace that
   * exists always has one), so a missing chain is reported broken; otherwise an unknown
   * workspace chain (a typo, a deleted workspace) answers not_found rather than "ok".
   */
  async function verify(chain: string, opts: { known?: boolean } = {}): Promise<VerifyReport> {
    return inChain(chain, async (tx) => {
      const head = await repo.findHead(tx, chain);
      const anchor = { seq: head?.anchorSeq ?? 1, hash: head?.anchorHash ?? GENESIS_HASH };
      const checkpoints = await repo.listCheckpoints(tx, chain);
      const covered = checkpoints.filter((c) => c.seq >= anchor.seq);
      const walker = chainWalker(anchor, new Set(covered.map((c) => c.seq)));
      let afterSeq = anchor.seq - 1;
      for (;;) {
        const rows = await repo.listAscending(tx, chain, {}, { afterSeq, limit: PAGE });
        let go = true;
        for (const r of rows) {
          go = walker.push(r);
          if (!go) break;
        }
        const last = rows[rows.length - 1];
        if (!go || !last || rows.length < PAGE) break;
        afterSeq = last.seq;
      }
      const result = walker.finish(head ? { seq: head.seq, hash: head.hash } : null);
      const breaks: ChainBreak[] = result.broken ? [result.broken] : [];
      if (!head) {
        const firstEvent = await repo.firstSeqBelow(tx, chain, Number.MAX_SAFE_INTEGER);
        const firstCheckpoint = checkpoints[0]?.seq ?? null;
        if (firstEvent !== null || firstCheckpoint !== null) {
          breaks.push({ seq: firstEvent ?? firstCheckpoint ?? 1, reason: 'head_missing' });
        } else if (opts.known) {
          breaks.push({ seq: 1, reason: 'chain_missing' });
        } else if (chain !== PLATFORM_CHAIN) {
          throw new AppError('not_found', `No audit chain ${chain}: no such workspace, or it was deleted.`);
        }
      } else if (anchor.seq > 1) {
        const below = await repo.firstSeqBelow(tx, chain, anchor.seq);
        if (below !== null) breaks.push({ seq: below, reason: 'events_below_anchor' });
      }
      for (const c of checkpoints) {
        if (verifyKeys.size > 0) {
          const key = verifyKeys.get(c.keyId);
          if (!key) breaks.push({ seq: c.seq, reason: 'checkpoint_key_unknown' });
          else if (!verifyCheckpoint(key, c)) breaks.push({ seq: c.seq, reason: 'checkpoint_signature_invalid' });
        }
        if (c.seq < anchor.seq - 1) continue; // before the kept range: its signature is all there is to check
        const seen = c.seq === anchor.seq - 1 ? anchor.hash : walker.hashAt(c.seq);
        // A checkpoint past a break cannot be compared; the break is reported already.
        if (!(result.broken && c.seq >= result.broken.seq) && seen !== c.hash) {
          breaks.push({ seq: c.seq, reason: 'checkpoint_mismatch' });
        }
      }
      breaks.sort((a, b) => a.seq - b.seq);
      const first = breaks[0] ?? null;
      const latest = checkpoints.reduce<AuditCheckpointRow | undefined>(
        (a, c) => (!a || c.seq > a.seq || (c.seq === a.seq && c.createdAt > a.createdAt) ? c : a),
        undefined,
      );
      const key = deps.signingKey;
      return {
        ok: first === null,
        chain,
        checked: result.checked,
        firstBrokenSeq: first?.seq ?? null,
        reason: first?.reason ?? null,
        message: first
          ? `Chain ${chain} is broken at seq ${first.seq}: ${MESSAGES[first.reason]}.`
          : `Chain ${chain} verifies: ${result.checked} events from seq ${anchor.seq}, ${checkpoints.length} checkpoints.`,
        anchor,
        head: { seq: head?.seq ?? 0, hash: head?.hash ?? GENESIS_HASH },
        checkpoints: {
          checked: checkpoints.length,
          signaturesChecked: verifyKeys.size > 0,
          latest: latest ? toCheckpointView(latest) : null,
        },
        publicKey: key ? { keyId: key.keyId, raw: key.publicKeyRaw } : null,
      };
    });
  }

  /** A missing key is the installation's configuration, not a server fault: 409, not 5xx. */
  function requireKey(): AuditSigningKey {
    if (!deps.signingKey) {
      throw new AppError(
        'conflict',
        'Audit checkpoints need a signing key: set BERTH_AUDIT_SIGNING_KEY or BERTH_AUDIT_SIGNING_KEY_FILE (the same on every replica).',
      );
    }
    return deps.signingKey;
  }

  async function checkpointIn(tx: Database, chain: string, key: AuditSigningKey): Promise<CheckpointView | null> {
    const head = await repo.findHead(tx, chain);
    if (!head || head.seq < head.anchorSeq) return null;
    const createdAt = clock.now();
    const row: AuditCheckpointRow = {
      id: newId('ack', createdAt),
      chain,
      workspaceId: chain === PLATFORM_CHAIN ? null : chain,
      seq: head.seq,
      hash: head.hash,
      createdAt,
      keyId: key.keyId,
      signature: signCheckpoint(key, { chain, seq: head.seq, hash: head.hash, createdAt }),
    };
    await repo.insertCheckpoint(tx, row);
    return toCheckpointView(row);
  }

  const reseal = auditReseal({
    db,
    repo,
    logger: deps.logger,
    pseudonym: deps.pseudonym,
    inChain,
    platformChain: PLATFORM_CHAIN,
    recordResealed: (tx, chain, diff) =>
      record(tx, {
        workspaceId: null,
        actor: { type: 'system', name: 'audit-reseal' },
        action: 'audit.chain_resealed',
        target: { type: 'audit_chain', id: chain },
        diff,
      }),
    signHead: async (tx, chain) => (deps.signingKey ? checkpointIn(tx, chain, deps.signingKey) : null),
  });

  return {
    /**
     * Appends one event to its chain inside the caller's transaction, so the event commits
     * (or rolls back) with the change it records.
     *
     * @example await audit.record(tx, { workspaceId, actor: scope.actor, action: 'key.created', target: { type: 'key', id } });
     */
    record,

    /** A page of a chain's events, newest first, filtered. */
    list,

    exportEvents,

    /** Recomputes a chain from its anchor and checks its checkpoints; names the first broken seq. */
    verify,

    /** Verifies every chain (the platform chain first). */
    async verifyAll(): Promise<VerifyReport[]> {
      const { heads, headless } = await db.system(async (tx) => ({
        heads: await repo.listHeads(tx),
        headless: await repo.headlessChains(tx),
      }));
      const chains = new Set([PLATFORM_CHAIN, ...heads.map((h) => h.chain), ...headless]);
      const out: VerifyReport[] = [];
      for (const c of chains) out.push(await verify(c, { known: true }));
      return out;
    },

    /**
     * Signs a checkpoint of the chain's current head now (on demand): only when the head
     * moved since the last checkpoint, and at most one a minute per chain.
     */
    async createCheckpoint(chain: string): Promise<CheckpointView> {
      const key = requireKey();
      return inChain(chain, async (tx) => {
        // Locking the head serialises concurrent requests, so the limits below hold.
        const head = await repo.lockHead(tx, chain, chain === PLATFORM_CHAIN ? null : chain);
        if (head.seq < head.anchorSeq) throw new AppError('conflict', 'The audit log has no events to checkpoint yet.');
        const last = await repo.lastCheckpoint(tx, chain);
        if (last && last.seq >= head.seq) {
          throw new AppError('conflict', 'The latest checkpoint already covers the head of this chain.');
        }
        if (last && clock.now().getTime() - last.createdAt.getTime() < CHECKPOINT_INTERVAL_MS) {
          throw new AppError('rate_limited', 'At most one checkpoint a minute per chain: try again shortly.');
        }
        const made = await checkpointIn(tx, chain, key);
        if (!made) throw new AppError('conflict', 'The audit log has no events to checkpoint yet.');
        return made;
      });
    },

    /** The periodic job: a checkpoint for every chain with events no checkpoint covers yet. */
    async checkpointAll(): Promise<number> {
      const key = deps.signingKey;
      if (!key) {
        if (!warnedNoKey) deps.logger.warn('Audit checkpoints skipped: no signing key is configured.');
        warnedNoKey = true;
        return 0;
      }
      return db.system(async (tx) => {
        const heads = await repo.headsNeedingCheckpoint(tx);
        for (const h of heads) await checkpointIn(tx, h.chain, key);
        return heads.length;
      });
    },

    /**
     * Retention (the privacy module's job): removes a whole expired prefix of a chain, the
     * events with seq < `beforeSeq`, and moves the chain's anchor so it still verifies. The
     * removal is first recorded in the platform chain (`audit.retention_applied`, with the
     * range and the new anchor), which the database function requires; the database also
     * refuses unless every removed event is older than `retentionDays` (at least 30) by its
     * own clock, and keeps at least the head event.
     *
     * @example await audit.dropBefore(workspaceId, 120, { retentionDays: 365 });
     */
    async dropBefore(chain: string, beforeSeq: number, opts: { retentionDays: number }): Promise<number> {
      const { retentionDays } = opts;
      if (!Number.isInteger(retentionDays) || retentionDays < MIN_AUDIT_RETENTION_DAYS) {
        throw new AppError('validation_failed', `Audit retention is at least ${MIN_AUDIT_RETENTION_DAYS} days.`);
      }
      return inChain(chain, async (tx) => {
        const head = await repo.findHead(tx, chain);
        if (!head || beforeSeq <= head.anchorSeq) return 0;
        const anchorHash = await repo.hashAt(tx, chain, beforeSeq - 1);
        if (!anchorHash) throw new AppError('conflict', `Audit chain ${chain} has no event ${beforeSeq - 1}.`);
        await record(tx, {
          workspaceId: null,
          actor: { type: 'system', name: 'audit-retention' },
          action: 'audit.retention_applied',
          target: { type: 'audit_chain', id: chain },
          diff: { beforeSeq, anchorHash, fromSeq: head.anchorSeq, retentionDays },
        });
        return repo.dropBefore(tx, chain, beforeSeq, retentionDays);
      });
    },

    /**
     * Re-seals the events written before users were named by pseudonym (audit.reseal.ts):
     * every chain (the startup job), or with `userId` the chains holding that user's raw id
     * (erasure, first). Chain by chain: one that fails is skipped and listed in `failed`.
     */
    sealLegacyEvents: reseal.sealLegacyEvents,

    /** The current head of a chain, read in the caller's transaction. */
    async headOf(tx: Database, chain: string): Promise<{ seq: number; hash: string }> {
      const head = await repo.findHead(tx, chain);
      return { seq: head?.seq ?? 0, hash: head?.hash ?? GENESIS_HASH };
    },

    /**
     * Removes a deleted workspace's whole chain inside the deleting transaction (record the
     * deletion in the platform chain first). Returns the number of events removed.
     */
    async dropWorkspaceChain(tx: Database, workspaceId: string): Promise<number> {
      return repo.dropChain(tx, workspaceId);
    },

    async findHead(chain: string) {
      return inChain(chain, (tx) => repo.findHead(tx, chain));
    },

    publicKey() {
      if (!deps.signingKey) throw new AppError('not_found', 'No audit signing key is configured on this installation.');
      const key = deps.signingKey;
      return { keyId: key.keyId, publicKeyRaw: key.publicKeyRaw, publicKeyPem: key.publicKeyPem };
    },
  };
}

export type AuditCore = ReturnType<typeof auditService>;
