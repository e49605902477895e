import { and, asc, desc, eq, gt, gte, lt, or, type SQL, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { GENESIS_HASH } from './audit.chain.ts';
import {
  type AuditChainHeadRow,
  type AuditCheckpointRow,
  type AuditEventRow,
  auditChainHeads,
  auditCheckpoints,
  auditEvents,
} from './audit.tables.ts';

export type AuditFilter = {
  from?: Date;
  to?: Date;
  /** A user id (matches the acting user, also behind an API key) or an API key id. */
  actor?: string;
  /** An exact action, or a prefix ending in `.*` ('member.*'). */
  action?: string;
  /** A target id. */
  target?: string;
};

/**
 * Events in the shape Berth wrote before audit events named users by pseudonym: a raw user
 * id as actor, acting user or target, or anywhere in the diff, or the client IP / user
 * agent inline. The same predicate as the partial index `audit_events_legacy_idx`
 * (migrations/0030), so the search for them reads that index, which is empty once every
 * chain is re-sealed.
 */
export const LEGACY_EVENT: SQL = sql.raw(
  `(ip is not null or user_agent is not null
     or actor_id ~ '^usr_[0-9A-HJKMNP-TV-Z]{26}$'
     or actor_user_id ~ '^usr_[0-9A-HJKMNP-TV-Z]{26}$'
     or target_id ~ '^usr_[0-9A-HJKMNP-TV-Z]{26}$'
     or jsonb_path_exists(diff, 'strict $.** ? (@.type() == "string" && @ like_regex "^usr_[0-9A-HJKMNP-TV-Z]{26}$")'))`,
);

function filterSql(chain: string, f: AuditFilter): SQL[] {
  const where: SQL[] = [eq(auditEvents.chain, chain)];
  if (f.from) where.push(gte(auditEvents.occurredAt, f.from));
  if (f.to) where.push(lt(auditEvents.occurredAt, f.to));
  if (f.actor) {
    const actor = or(eq(auditEvents.actorId, f.actor), eq(auditEvents.actorUserId, f.actor));
    if (actor) where.push(actor);
  }
  if (f.action) {
    if (f.action.endsWith('.*')) {
      const prefix = f.action.slice(0, -1);
      where.push(sql`left(${auditEvents.action}, ${prefix.length}) = ${prefix}`);
    } else {
      where.push(eq(auditEvents.action, f.action));
    }
  }
  if (f.target) where.push(eq(auditEvents.targetId, f.target));
  return where;
}

/**
 * Every SQL statement on the audit tables. Reads name the chain in every query; row-level
 * security limits a workspace transaction to its own chain as well.
 */
export const auditRepo = {
  /** Locks the chain's head (creating it at genesis), which serialises appends per chain. */
  async lockHead(tx: Database, chain: string, workspaceId: string | null): Promise<AuditChainHeadRow> {
    await tx
      .insert(auditChainHeads)
      .values({ chain, workspaceId, seq: 0, hash: GENESIS_HASH, anchorSeq: 1, anchorHash: GENESIS_HASH })
      .onConflictDoNothing();
    const rows = await tx.select().from(auditChainHeads).where(eq(auditChainHeads.chain, chain)).for('update');
    const head = rows[0];
    if (!head) throw new Error(`audit chain head ${chain} is not visible to this transaction`);
    return head;
  },

  /** Appends without RETURNING: a workspace transaction may append to the platform chain but not read it. */
  async append(tx: Database, row: AuditEventRow): Promise<void> {
    await tx.insert(auditEvents).values(row);
    await tx.update(auditChainHeads).set({ seq: row.seq, hash: row.hash }).where(eq(auditChainHeads.chain, row.chain));
  },

  async findHead(tx: Database, chain: string): Promise<AuditChainHeadRow | null> {
    const rows = await tx.select().from(auditChainHeads).where(eq(auditChainHeads.chain, chain)).limit(1);
    return rows[0] ?? null;
  },

  async listHeads(tx: Database): Promise<AuditChainHeadRow[]> {
    return tx.select().from(auditChainHeads).orderBy(asc(auditChainHeads.chain));
  },

  /** Newest first; `beforeSeq` is the cursor. */
  async list(tx: Database, chain: string, f: AuditFilter, page: { beforeSeq?: number; limit: number }) {
    const where = filterSql(chain, f);
    if (page.beforeSeq !== undefined) where.push(lt(auditEvents.seq, page.beforeSeq));
    return tx
      .select()
      .from(auditEvents)
      .where(and(...where))
      .orderBy(desc(auditEvents.seq))
      .limit(page.limit);
  },

  /** Oldest first, from `afterSeq` (exclusive): for exports and verification. */
  async listAscending(tx: Database, chain: string, f: AuditFilter, page: { afterSeq: number; limit: number }) {
    return tx
      .select()
      .from(auditEvents)
      .where(and(...filterSql(chain, f), gt(auditEvents.seq, page.afterSeq)))
      .orderBy(asc(auditEvents.seq))
      .limit(page.limit);
  },

  async insertCheckpoint(tx: Database, row: AuditCheckpointRow): Promise<void> {
    await tx.insert(auditCheckpoints).values(row);
  },

  async listCheckpoints(tx: Database, chain: string, minSeq = 0): Promise<AuditCheckpointRow[]> {
    return tx
      .select()
      .from(auditCheckpoints)
      .where(and(eq(auditCheckpoints.chain, chain), gte(auditCheckpoints.seq, minSeq)))
      .orderBy(asc(auditCheckpoints.seq), asc(auditCheckpoints.createdAt));
  },

  async lastCheckpointSeq(tx: Database, chain: string): Promise<number> {
    const rows = await tx
      .select({ seq: auditCheckpoints.seq })
      .from(auditCheckpoints)
      .where(eq(auditCheckpoints.chain, chain))
      .orderBy(desc(auditCheckpoints.seq))
      .limit(1);
    return rows[0]?.seq ?? 0;
  },

  /** The newest checkpoint of a chain (the rate limit of on-demand checkpoints). */
  async lastCheckpoint(tx: Database, chain: string): Promise<AuditCheckpointRow | null> {
    const rows = await tx
      .select()
      .from(auditCheckpoints)
      .where(eq(auditCheckpoints.chain, chain))
      .orderBy(desc(auditCheckpoints.createdAt))
      .limit(1);
    return rows[0] ?? null;
  },

  /** The lowest seq stored for a chain below `belowSeq` (null when none): events the anchor should have removed. */
  async firstSeqBelow(tx: Database, chain: string, belowSeq: number): Promise<number | null> {
    const rows = await tx
      .select({ seq: auditEvents.seq })
      .from(auditEvents)
      .where(and(eq(auditEvents.chain, chain), lt(auditEvents.seq, belowSeq)))
      .orderBy(asc(auditEvents.seq))
      .limit(1);
    return rows[0]?.seq ?? null;
  },

  /** The hash of one event, or null. */
  async hashAt(tx: Database, chain: string, seq: number): Promise<string | null> {
    const rows = await tx
      .select({ hash: auditEvents.hash })
      .from(auditEvents)
      .where(and(eq(auditEvents.chain, chain), eq(auditEvents.seq, seq)))
      .limit(1);
    return rows[0]?.hash ?? null;
  },

  /** Chains that hold events or checkpoints but no head (system work): a removed head. */
  async headlessChains(tx: Database): Promise<string[]> {
    const res = (await tx.execute(
      sql`select chain from (select chain from audit_events union select chain from audit_checkpoints) c
          where not exists (select 1 from audit_chain_heads h where h.chain = c.chain) order by chain`,
    )) as unknown as { rows: Array<{ chain: string }> };
    return res.rows.map((r) => r.chain);
  },

  /** Heads with events no checkpoint covers yet (system work). */
  async headsNeedingCheckpoint(tx: Database): Promise<AuditChainHeadRow[]> {
    return tx
      .select()
      .from(auditChainHeads)
      .where(
        and(
          gte(auditChainHeads.seq, auditChainHeads.anchorSeq),
          sql`${auditChainHeads.seq} > coalesce((select max(c.seq) from audit_checkpoints c where c.chain = ${auditChainHeads.chain}), 0)`,
        ),
      );
  },

  /** Retention: removes the chain's events with seq < `seq` through the one narrow database function. */
  async dropBefore(tx: Database, chain: string, seq: number, retentionDays: number): Promise<number> {
    const res = (await tx.execute(
      sql`select berth_audit_drop_before(${chain}, ${seq}, make_interval(days => ${retentionDays})) as removed`,
    )) as unknown as {
      rows: Array<{ removed: string | number }>;
    };
    return Number(res.rows[0]?.removed ?? 0);
  },

  /** Chains holding old-shape events (system work; reads the partial index of them). */
  async legacyChains(tx: Database): Promise<string[]> {
    const res = (await tx.execute(
      sql`select distinct chain from audit_events where ${LEGACY_EVENT} order by chain`,
    )) as unknown as { rows: Array<{ chain: string }> };
    return res.rows.map((r) => r.chain);
  },

  /**
   * Chains holding `userId` raw (an old-shape event naming the user as actor, acting user,
   * target or inside its diff): what erasure re-seals before it erases the user. The id
   * columns are read through their indexes; diffs only among old-shape events (the partial
   * index of them), since new events never hold a raw user id.
   */
  async legacyChainsNaming(tx: Database, userId: string): Promise<string[]> {
    const res = (await tx.execute(sql`
      select chain from audit_events where actor_id = ${userId} or actor_user_id = ${userId} or target_id = ${userId}
      union
      select chain from audit_events
       where ${LEGACY_EVENT}
         and jsonb_path_exists(diff, 'strict $.** ? (@ == $u)', jsonb_build_object('u', ${userId}::text))
      order by chain`)) as unknown as { rows: Array<{ chain: string }> };
    return res.rows.map((r) => r.chain);
  },

  /** The first old-shape event of a chain at or after `fromSeq`, or null. */
  async firstLegacySeq(tx: Database, chain: string, fromSeq: number): Promise<number | null> {
    const res = (await tx.execute(
      sql`select min(seq)::text as seq from audit_events where chain = ${chain} and seq >= ${fromSeq} and ${LEGACY_EVENT}`,
    )) as unknown as { rows: Array<{ seq: string | null }> };
    const seq = res.rows[0]?.seq;
    return seq === null || seq === undefined ? null : Number(seq);
  },

  /** How many old-shape events a chain holds from `fromSeq` on. */
  async countLegacy(tx: Database, chain: string, fromSeq: number): Promise<number> {
    const res = (await tx.execute(
      sql`select count(*)::text as n from audit_events where chain = ${chain} and seq >= ${fromSeq} and ${LEGACY_EVENT}`,
    )) as unknown as { rows: Array<{ n: string }> };
    return Number(res.rows[0]?.n ?? 0);
  },

  /** Writes re-sealed events through the narrow database function (see audit.reseal.ts). */
  async reseal(tx: Database, chain: string, rows: object[]): Promise<number> {
    const res = (await tx.execute(
      sql`select berth_audit_reseal(${chain}, ${JSON.stringify(rows)}::jsonb)::text as n`,
    )) as unknown as { rows: Array<{ n: string }> };
    return Number(res.rows[0]?.n ?? 0);
  },

  /** Removes a deleted workspace's whole chain through the narrow database function. */
  async dropChain(tx: Database, chain: string): Promise<number> {
    const res = (await tx.execute(sql`select berth_audit_drop_chain(${chain}) as removed`)) as unknown as {
      rows: Array<{ removed: string | number }>;
    };
    return Number(res.rows[0]?.removed ?? 0);
  },
};

export type AuditRepo = typeof auditRepo;
