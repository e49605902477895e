import { and, asc, desc, eq, gt, inArray, isNull, lt, or, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import {
  type AgentRunEventRow,
  type AgentRunRow,
  type AgentRunStepRow,
  agentRunEvents,
  agentRunSteps,
  agentRuns,
  type RunStatus,
} from './agents.runs.tables.ts';

/** A run's columns a caller may set when it changes the run (the lease columns are the repo's). */
export type RunPatch = Partial<
  Pick<
    AgentRunRow,
    | 'status'
    | 'stopReason'
    | 'lastErrorCode'
    | 'lastErrorMessage'
    | 'context'
    | 'output'
    | 'pending'
    | 'modelSteps'
    | 'toolSteps'
    | 'toolFailures'
    | 'inputTokens'
    | 'outputTokens'
    | 'costMicros'
    | 'cancelRequestedAt'
    | 'actionExpiresAt'
    | 'deadlineAt'
    | 'startedAt'
    | 'completedAt'
    | 'leaseOwner'
    | 'leaseUntil'
  >
>;

/** No worker holds the run: its lease ran out, or its worker gave it back (no owner). */
const leaseFree = (now: Date) => or(isNull(agentRuns.leaseOwner), lt(agentRuns.leaseUntil, now));

/** An event to append: its type and its data's ciphertext. */
export type NewEvent = { type: string; data: Buffer };

/**
 * Every SQL statement on the run tables. Each runs on the transaction it is given and names
 * the workspace in every query; the lease-holding writes also name the lease owner, so a
 * worker whose lease another took over changes nothing (fencing).
 */
export const runsRepo = {
  async insertRun(tx: Database, row: AgentRunRow): Promise<void> {
    await tx.insert(agentRuns).values(row);
  },

  async findRun(tx: Database, workspaceId: string, id: string, opts: { lock?: boolean } = {}) {
    const q = tx
      .select()
      .from(agentRuns)
      .where(and(eq(agentRuns.workspaceId, workspaceId), eq(agentRuns.id, id)))
      .limit(1);
    const rows = opts.lock ? await q.for('update') : await q;
    return rows[0] ?? null;
  },

  async listRuns(
    tx: Database,
    workspaceId: string,
    f: { limit: number; agentId?: string; status?: RunStatus; before?: { createdAt: Date; id: string } },
  ) {
    return tx
      .select()
      .from(agentRuns)
      .where(
        and(
          eq(agentRuns.workspaceId, workspaceId),
          f.agentId ? eq(agentRuns.agentId, f.agentId) : undefined,
          f.status ? eq(agentRuns.status, f.status) : undefined,
          f.before
            ? or(
                lt(agentRuns.createdAt, f.before.createdAt),
                and(eq(agentRuns.createdAt, f.before.createdAt), lt(agentRuns.id, f.before.id)),
              )
            : undefined,
        ),
      )
      .orderBy(desc(agentRuns.createdAt), desc(agentRuns.id))
      .limit(f.limit);
  },

  /**
   * Takes the run for `owner` until `leaseUntil`: a queued run, or one in progress whose
   * lease ran out (its worker died) or was given back (its worker shut down). Null when
   * another holds it or it is in any other status. Counts the takeover of a dead worker's run.
   */
  async claim(tx: Database, workspaceId: string, id: string, owner: string, now: Date, leaseUntil: Date) {
    const rows = await tx
      .update(agentRuns)
      .set({
        status: 'in_progress',
        leaseOwner: owner,
        leaseUntil,
        // Attempts count takeovers of a dead worker's run, not resumptions after an approval or a shutdown.
        attempts: sql`${agentRuns.attempts} + case when ${agentRuns.status} = 'in_progress' and ${agentRuns.leaseOwner} is not null then 1 else 0 end`,
        startedAt: sql`coalesce(${agentRuns.startedAt}, ${now.toISOString()}::timestamptz)`,
        updatedAt: now,
      })
      .where(
        and(
          eq(agentRuns.workspaceId, workspaceId),
          eq(agentRuns.id, id),
          or(eq(agentRuns.status, 'queued'), and(eq(agentRuns.status, 'in_progress'), leaseFree(now))),
        ),
      )
      .returning();
    return rows[0] ?? null;
  },

  /** Renews the lease; false when `owner` no longer holds it. Returns whether a cancel was asked for. */
  async heartbeat(tx: Database, workspaceId: string, id: string, owner: string, now: Date, leaseUntil: Date) {
    const rows = await tx
      .update(agentRuns)
      .set({ leaseUntil, updatedAt: now })
      .where(
        and(
          eq(agentRuns.workspaceId, workspaceId),
          eq(agentRuns.id, id),
          eq(agentRuns.leaseOwner, owner),
          eq(agentRuns.status, 'in_progress'),
        ),
      )
      .returning({ cancelRequestedAt: agentRuns.cancelRequestedAt });
    const row = rows[0];
    return row
      ? { held: true, cancelRequested: row.cancelRequestedAt !== null }
      : { held: false, cancelRequested: false };
  },

  /** Changes the run while `owner` holds its lease (null owner: no lease needed); false when it does not. */
  async update(tx: Database, workspaceId: string, id: string, owner: string | null, now: Date, patch: RunPatch) {
    const rows = await tx
      .update(agentRuns)
      .set({ ...patch, updatedAt: now })
      .where(
        and(
          eq(agentRuns.workspaceId, workspaceId),
          eq(agentRuns.id, id),
          owner === null ? undefined : eq(agentRuns.leaseOwner, owner),
          owner === null ? undefined : eq(agentRuns.status, 'in_progress'),
        ),
      )
      .returning({ id: agentRuns.id });
    return rows.length > 0;
  },

  /** Appends events after the run's last one (the run row is the sequence: its update serialises appends). */
  async appendEvents(
    tx: Database,
    run: Pick<AgentRunRow, 'workspaceId' | 'id' | 'createdAt'>,
    events: NewEvent[],
    now: Date,
  ) {
    if (events.length === 0) return [];
    const [row] = await tx
      .update(agentRuns)
      .set({ eventSeq: sql`${agentRuns.eventSeq} + ${events.length}` })
      .where(and(eq(agentRuns.workspaceId, run.workspaceId), eq(agentRuns.id, run.id)))
      .returning({ eventSeq: agentRuns.eventSeq });
    if (!row) return [];
    const first = row.eventSeq - events.length + 1;
    const rows: AgentRunEventRow[] = events.map((e, i) => ({
      runId: run.id,
      workspaceId: run.workspaceId,
      runCreatedAt: run.createdAt,
      seq: first + i,
      type: e.type,
      data: e.data,
      createdAt: now,
    }));
    await tx.insert(agentRunEvents).values(rows);
    return rows;
  },

  async events(tx: Database, workspaceId: string, runId: string, after: number, limit: number) {
    return tx
      .select()
      .from(agentRunEvents)
      .where(
        and(
          eq(agentRunEvents.workspaceId, workspaceId),
          eq(agentRunEvents.runId, runId),
          gt(agentRunEvents.seq, after),
        ),
      )
      .orderBy(asc(agentRunEvents.seq))
      .limit(limit);
  },

  async insertStep(tx: Database, row: AgentRunStepRow): Promise<void> {
    await tx.insert(agentRunSteps).values(row);
  },

  async updateStep(
    tx: Database,
    workspaceId: string,
    runId: string,
    seq: number,
    patch: Partial<Pick<AgentRunStepRow, 'status' | 'errorCode' | 'content' | 'latencyMs' | 'completedAt'>>,
  ) {
    await tx
      .update(agentRunSteps)
      .set(patch)
      .where(
        and(eq(agentRunSteps.workspaceId, workspaceId), eq(agentRunSteps.runId, runId), eq(agentRunSteps.seq, seq)),
      );
  },

  async steps(tx: Database, workspaceId: string, runId: string) {
    return tx
      .select()
      .from(agentRunSteps)
      .where(and(eq(agentRunSteps.workspaceId, workspaceId), eq(agentRunSteps.runId, runId)))
      .orderBy(asc(agentRunSteps.seq));
  },

  /** Live runs that need the sweeper: leases that ran out, approvals that expired. */
  async stale(tx: Database, now: Date, limit: number) {
    return tx
      .select({ id: agentRuns.id, workspaceId: agentRuns.workspaceId, status: agentRuns.status })
      .from(agentRuns)
      .where(
        or(
          and(eq(agentRuns.status, 'in_progress'), leaseFree(now)),
          and(eq(agentRuns.status, 'requires_action'), lt(agentRuns.actionExpiresAt, now)),
        ),
      )
      .limit(limit);
  },

  /** Deletes every run of the workspace with its steps and events (cascade); returns how many runs. */
  async deleteWorkspaceRuns(tx: Database, workspaceId: string): Promise<number> {
    const rows = await tx
      .delete(agentRuns)
      .where(eq(agentRuns.workspaceId, workspaceId))
      .returning({ id: agentRuns.id });
    return rows.length;
  },

  /** Each agent's runs held (runs are kept 90 days): count, tokens and cost. */
  async agentTotals(tx: Database, workspaceId: string, agentIds: string[], since: Date) {
    if (agentIds.length === 0) return [];
    return tx
      .select({
        agentId: agentRuns.agentId,
        runs: sql<number>`count(*)::int`,
        inputTokens: sql<number>`coalesce(sum(${agentRuns.inputTokens}), 0)::bigint`.mapWith(Number),
        outputTokens: sql<number>`coalesce(sum(${agentRuns.outputTokens}), 0)::bigint`.mapWith(Number),
        costMicros: sql<number>`coalesce(sum(${agentRuns.costMicros}), 0)::bigint`.mapWith(Number),
      })
      .from(agentRuns)
      .where(
        and(
          eq(agentRuns.workspaceId, workspaceId),
          inArray(agentRuns.agentId, agentIds),
          sql`${agentRuns.createdAt} >= ${since.toISOString()}::timestamptz`,
        ),
      )
      .groupBy(agentRuns.agentId);
  },
};
