import { createHash } from 'node:crypto';

/**
 * The audit hash chain, as pure functions an auditor can reimplement offline:
 *
 *   hash = hex(SHA-256(prev_hash || canonical(event)))
 *
 * where `prev_hash` is the previous event's hash (64 zeros for the first event of a chain,
 * or the chain's anchor after retention removed older events) and `canonical(event)` is
 * the JSON of every stored field except `hash`, keys sorted at every depth, no whitespace,
 * timestamps as ISO 8601 UTC with milliseconds, absent values as explicit nulls.
 */
export const GENESIS_HASH = '0'.repeat(64);

/** The stored fields of an event that its hash covers (every column except `hash`). */
export type ChainedEvent = {
  id: string;
  chain: string;
  workspaceId: string | null;
  seq: number;
  occurredAt: Date;
  actorType: string;
  actorId: string;
  actorUserId: string | null;
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  action: string;
  targetType: string;
  targetId: string;
  outcome: string;
  diff: Record<string, unknown> | null;
  prevHash: string;
};

/** Stable JSON: sorted keys at every depth, no whitespace; rejects values JSON cannot hold exactly. */
export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new Error('canonical JSON holds finite numbers only');
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
      const entries = Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
    }
    default:
      throw new Error(`canonical JSON cannot hold a ${typeof value}`);
  }
}

/** The canonical serialisation of an event, with the database's column names. */
export function canonicalEvent(e: ChainedEvent): string {
  return canonicalJson({
    id: e.id,
    chain: e.chain,
    workspace_id: e.workspaceId,
    seq: e.seq,
    occurred_at: e.occurredAt,
    actor_type: e.actorType,
    actor_id: e.actorId,
    actor_user_id: e.actorUserId,
    ip: e.ip,
    user_agent: e.userAgent,
    request_id: e.requestId,
    action: e.action,
    target_type: e.targetType,
    target_id: e.targetId,
    outcome: e.outcome,
    diff: e.diff,
    prev_hash: e.prevHash,
  });
}

/** hash = SHA-256(prev_hash || canonical(event)), hex. */
export function hashEvent(e: ChainedEvent): string {
  return createHash('sha256').update(e.prevHash).update(canonicalEvent(e)).digest('hex');
}

/**
 * Normalises a diff to what jsonb stores and gives back (no undefined, no Dates, no
 * functions), so the hash computed at append equals the one recomputed from the row.
 */
export function normalizeDiff(diff: Record<string, unknown> | undefined): Record<string, unknown> | null {
  if (!diff) return null;
  const normal = JSON.parse(JSON.stringify(diff)) as Record<string, unknown>;
  canonicalJson(normal);
  return Object.keys(normal).length === 0 ? null : normal;
}

export type BreakReason =
  /** The row's content does not match its hash: an edited row. */
  | 'hash_mismatch'
  /** A seq is missing: a deleted row. */
  | 'seq_gap'
  /** The row does not chain from the previous one: reordered or inserted rows. */
  | 'prev_hash_mismatch'
  /** The chain ends before (or differs from) its recorded head: trailing rows deleted. */
  | 'head_mismatch'
  /** A checkpoint's signature does not verify with the audit public key. */
  | 'checkpoint_signature_invalid'
  /** A checkpoint was signed by a key Berth does not know. */
  | 'checkpoint_key_unknown'
  /** A signed checkpoint names a hash the chain no longer has at that seq. */
  | 'checkpoint_mismatch'
  /** The chain has events (or checkpoints) but no head: the head was removed. */
  | 'head_missing'
  /** Events remain below the anchor: the anchor was moved to skip them. */
  | 'events_below_anchor'
  /** A chain that must exist (an existing workspace's) has nothing at all. */
  | 'chain_missing';

export type ChainBreak = { seq: number; reason: BreakReason };

/**
 * Walks a chain in seq order from its anchor, one page at a time, and returns the first
 * break. Feed it every event (ordered by seq); call `finish` with the recorded head.
 */
export function chainWalker(anchor: { seq: number; hash: string }, watch: ReadonlySet<number> = new Set()) {
  let expectedSeq = anchor.seq;
  let prev = anchor.hash;
  let checked = 0;
  let broken: ChainBreak | null = null;
  const hashes = new Map<number, string>();
  return {
    /** Checks the next event; returns false once the chain is broken (stop feeding). */
    push(e: ChainedEvent & { hash: string }): boolean {
      if (broken) return false;
      if (e.seq !== expectedSeq) {
        broken = { seq: expectedSeq, reason: e.seq > expectedSeq ? 'seq_gap' : 'prev_hash_mismatch' };
        return false;
      }
      if (e.prevHash !== prev) {
        broken = { seq: e.seq, reason: 'prev_hash_mismatch' };
        return false;
      }
      if (hashEvent(e) !== e.hash) {
        broken = { seq: e.seq, reason: 'hash_mismatch' };
        return false;
      }
      checked++;
      if (watch.has(e.seq)) hashes.set(e.seq, e.hash);
      prev = e.hash;
      expectedSeq++;
      return true;
    },
    /** The hash the walk saw at a watched `seq` (for checkpoint comparison), if it got there. */
    hashAt(seq: number): string | undefined {
      return hashes.get(seq);
    },
    finish(head: { seq: number; hash: string } | null): { checked: number; broken: ChainBreak | null } {
      if (!broken && head && (head.seq !== expectedSeq - 1 || head.hash !== prev)) {
        broken = { seq: expectedSeq, reason: 'head_mismatch' };
      }
      return { checked, broken };
    },
    get lastSeq() {
      return expectedSeq - 1;
    },
  };
}
