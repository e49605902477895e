import { sha256Hex } from '../../platform/crypto.ts';
import type { Actor } from '../../platform/http/context.ts';
import { newId } from '../../platform/ids.ts';
import { canonicalJson } from '../audit/index.ts';
import type { PostingRow, TransactionKind, TransactionRow } from './billing.tables.ts';

/**
 * What every ledger movement is made of, whichever path writes it (one transaction per
 * movement in billing.ledger.ts, or a group-committed batch in billing.reservations.ts):
 * the same request hash, transaction row and postings, so a replayed key answers the same
 * way on both.
 */

/** The counter-account of each kind of movement (the workspace's own accounts are `available` and `held`). */
export const PLATFORM_ACCOUNT: Record<TransactionKind, string | null> = {
  grant: 'platform:grants',
  expire: 'platform:grants',
  topup: 'platform:payments',
  refund: 'platform:payments',
  settle: 'platform:usage',
  adjust: 'platform:adjustments',
  reserve: null,
  release: null,
  // Carries every account's expired postings at once (billing.retention.ts), never through postingsOf.
  carry_forward: null,
};

/** What a movement was asked to do: a replayed key with other parameters is refused. */
export const movementHash = (kind: TransactionKind, params: Record<string, unknown>) =>
  sha256Hex(canonicalJson({ kind, ...params }));

export function ledgerActor(actor: Actor): { type: 'user' | 'api_key' | 'system'; id: string } {
  if (actor.type === 'user') return { type: 'user', id: actor.userId };
  if (actor.type === 'api_key') return { type: 'api_key', id: actor.keyId };
  return { type: 'system', id: actor.name };
}

export function transactionRow(m: {
  workspaceId: string;
  kind: TransactionKind;
  idempotencyKey: string;
  requestHash: string;
  amountMicros: number;
  reservationId: string | null;
  after: { availableMicros: number; heldMicros: number };
  actor: Actor;
  memo: string | null;
  now: Date;
}): TransactionRow {
  const who = ledgerActor(m.actor);
  return {
    id: newId('ltx', m.now),
    workspaceId: m.workspaceId,
    kind: m.kind,
    idempotencyKey: m.idempotencyKey,
    requestHash: m.requestHash,
    amountMicros: m.amountMicros,
    reservationId: m.reservationId,
    availableAfterMicros: m.after.availableMicros,
    heldAfterMicros: m.after.heldMicros,
    actorType: who.type,
    actorId: who.id,
    memo: m.memo,
    createdAt: m.now,
  };
}

/**
 * The postings of a transaction that moves the workspace's accounts by `available` and
 * `held`: the kind's platform account takes the opposite, so they sum to zero (a kind with
 * no platform account may only move between the workspace's own two).
 */
export function postingsOf(row: TransactionRow, d: { available: number; held: number }): PostingRow[] {
  const postings: PostingRow[] = [];
  const post = (account: string, amountMicros: number) => {
    if (amountMicros !== 0) {
      postings.push({ transactionId: row.id, workspaceId: row.workspaceId, account, amountMicros });
    }
  };
  post('available', d.available);
  post('held', d.held);
  const platform = PLATFORM_ACCOUNT[row.kind];
  if (platform) post(platform, -(d.available + d.held));
  else if (d.available + d.held !== 0) throw new Error(`a ${row.kind} must not change the workspace's total`);
  return postings;
}
