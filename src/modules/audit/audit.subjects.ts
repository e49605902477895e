import { inArray, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import type { RequestMeta } from '../../platform/http/context.ts';
import { isId } from '../../platform/ids.ts';
import { type AuditEventRow, auditEventContext, auditSubjects } from './audit.tables.ts';

/**
 * Personal data out of the hash chain. An audit event names users only by pseudonym (a
 * keyed hash of the user id, see the vault's `pseudonym`) and keeps the request's IP and
 * user agent beside it (audit_event_context), so the chain covers nothing that erasing a
 * user has to change: erasure deletes the user's audit_subjects row (the pseudonym then
 * names nobody) and their context rows, and `audit verify` still passes.
 *
 * Reads put the user ids and request facts back while the account exists.
 */
export type Pseudonymize = (id: string) => string;

type Sealed = {
  actorId: string;
  actorUserId: string | null;
  targetId: string;
  diff: Record<string, unknown> | undefined;
  /** pseudonym -> user id, for audit_subjects. */
  subjects: Map<string, string>;
};

/** Replaces every user id (actor, target, any string in the diff) with its pseudonym. */
export function sealEvent(
  pseudonym: Pseudonymize,
  e: { actorId: string; actorUserId: string | null; targetId: string; diff: Record<string, unknown> | undefined },
): Sealed {
  const subjects = new Map<string, string>();
  const hide = (v: string): string => {
    if (!isId(v, 'usr')) return v;
    const p = pseudonym(v);
    subjects.set(p, v);
    return p;
  };
  const deep = (v: unknown): unknown => {
    if (typeof v === 'string') return hide(v);
    if (Array.isArray(v)) return v.map(deep);
    if (v && typeof v === 'object' && !(v instanceof Date)) {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, deep(x)]));
    }
    return v;
  };
  return {
    actorId: hide(e.actorId),
    actorUserId: e.actorUserId === null ? null : hide(e.actorUserId),
    targetId: hide(e.targetId),
    diff: e.diff === undefined ? undefined : (deep(e.diff) as Record<string, unknown>),
    subjects,
  };
}

/** Stores what a sealed event needs beside the chain, in the event's transaction. */
export async function storeBeside(
  tx: Database,
  row: Pick<AuditEventRow, 'id' | 'occurredAt' | 'chain' | 'workspaceId'>,
  sealed: Pick<Sealed, 'subjects'>,
  context: { userId: string | null; meta: RequestMeta | undefined },
): Promise<void> {
  const at = row.occurredAt;
  if (sealed.subjects.size > 0) {
    // Only for users that exist: an event naming an erased user's id (a late job, an id typed
    // into a name) must not map the pseudonym back to them.
    const pseudonyms = [...sealed.subjects.keys()];
    const userIds = [...sealed.subjects.values()];
    await tx.execute(sql`
      insert into audit_subjects (pseudonym, user_id, created_at)
      select k.pseudonym, k.user_id, ${at.toISOString()}::timestamptz
        from unnest(${sql.param(pseudonyms)}::text[], ${sql.param(userIds)}::text[]) as k(pseudonym, user_id)
       where exists (select 1 from users u where u.id = k.user_id)
      on conflict do nothing`);
  }
  const ip = context.meta?.ip ?? null;
  const userAgent = context.meta?.userAgent ?? null;
  if (ip === null && userAgent === null && context.userId === null) return;
  await tx.insert(auditEventContext).values({
    eventId: row.id,
    occurredAt: at,
    chain: row.chain,
    workspaceId: row.workspaceId,
    userId: context.userId,
    ip,
    userAgent,
  });
}

function pseudonymsIn(v: unknown, out: Set<string>): void {
  if (typeof v === 'string') {
    if (v.startsWith('anon_')) out.add(v);
  } else if (Array.isArray(v)) {
    for (const x of v) pseudonymsIn(x, out);
  } else if (v && typeof v === 'object') {
    for (const x of Object.values(v)) pseudonymsIn(x, out);
  }
}

/**
 * The rows as readers see them: pseudonyms of existing accounts resolved to their user ids
 * and the request facts put back. An erased user's pseudonym stays as it is.
 */
export async function resolveEvents(tx: Database, rows: AuditEventRow[]): Promise<AuditEventRow[]> {
  if (rows.length === 0) return rows;
  const names = new Set<string>();
  for (const r of rows) pseudonymsIn([r.actorId, r.actorUserId, r.targetId, r.diff], names);
  const known = new Map<string, string>();
  if (names.size > 0) {
    const found = await tx
      .select({ pseudonym: auditSubjects.pseudonym, userId: auditSubjects.userId })
      .from(auditSubjects)
      .where(inArray(auditSubjects.pseudonym, [...names]));
    for (const f of found) known.set(f.pseudonym, f.userId);
  }
  const contexts = new Map(
    (
      await tx
        .select()
        .from(auditEventContext)
        .where(
          inArray(
            auditEventContext.eventId,
            rows.map((r) => r.id),
          ),
        )
    ).map((c) => [c.eventId, c]),
  );
  const show = (v: string) => known.get(v) ?? v;
  const deep = (v: unknown): unknown => {
    if (typeof v === 'string') return show(v);
    if (Array.isArray(v)) return v.map(deep);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, deep(x)]));
    }
    return v;
  };
  return rows.map((r) => {
    const c = contexts.get(r.id);
    return {
      ...r,
      actorId: show(r.actorId),
      actorUserId: r.actorUserId === null ? null : show(r.actorUserId),
      targetId: show(r.targetId),
      diff: r.diff === null ? null : (deep(r.diff) as Record<string, unknown>),
      ip: c ? c.ip : r.ip,
      userAgent: c ? c.userAgent : r.userAgent,
    };
  });
}
