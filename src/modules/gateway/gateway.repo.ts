import { and, asc, desc, eq, gte, lt, sql } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { usageDaily } from './gateway.rollups.ts';
import {
  gatewayModelPrices,
  gatewayProviders,
  gatewayRoutes,
  type PlatformProviderRow,
  type PriceRow,
  type ProviderRow,
  platformProviders,
  type RouteRow,
  type UsageEventRow,
  usageEvents,
} from './gateway.tables.ts';

export type UsageGroup = 'day' | 'model' | 'key' | 'provider';

export type UsageAggregate = {
  group: string;
  requests: number;
  errors: number;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  reasoningTokens: number;
  costMicros: number;
};

const GROUP_EXPR: Record<UsageGroup, ReturnType<typeof sql>> = {
  day: sql`to_char(${usageEvents.createdAt} at time zone 'UTC', 'YYYY-MM-DD')`,
  model: sql`${usageEvents.model}`,
  key: sql`coalesce(${usageEvents.keyId}, '')`,
  provider: sql`coalesce(${usageEvents.provider}, '')`,
};

/** The same groups over the daily aggregates (which name no key). */
const DAILY_GROUP_EXPR: Record<UsageGroup, ReturnType<typeof sql>> = {
  day: sql`to_char(${usageDaily.day}, 'YYYY-MM-DD')`,
  model: sql`${usageDaily.model}`,
  key: sql`''`,
  provider: sql`${usageDaily.provider}`,
};

/** Every SQL statement on the gateway's tables. Tenant queries name their workspace. */
export const gatewayRepo = {
  async insertProvider(tx: Database, row: ProviderRow) {
    await tx.insert(gatewayProviders).values(row);
  },

  async listProviders(tx: Database, workspaceId: string): Promise<ProviderRow[]> {
    return tx
      .select()
      .from(gatewayProviders)
      .where(eq(gatewayProviders.workspaceId, workspaceId))
      .orderBy(asc(gatewayProviders.name));
  },

  async findProvider(tx: Database, workspaceId: string, id: string): Promise<ProviderRow | undefined> {
    const rows = await tx
      .select()
      .from(gatewayProviders)
      .where(and(eq(gatewayProviders.workspaceId, workspaceId), eq(gatewayProviders.id, id)));
    return rows[0];
  },

  async findProviderByName(tx: Database, workspaceId: string, name: string): Promise<ProviderRow | undefined> {
    const rows = await tx
      .select()
      .from(gatewayProviders)
      .where(and(eq(gatewayProviders.workspaceId, workspaceId), eq(gatewayProviders.name, name)));
    return rows[0];
  },

  async deleteProvider(tx: Database, workspaceId: string, id: string): Promise<boolean> {
    const rows = await tx
      .delete(gatewayProviders)
      .where(and(eq(gatewayProviders.workspaceId, workspaceId), eq(gatewayProviders.id, id)))
      .returning({ id: gatewayProviders.id });
    return rows.length > 0;
  },

  async insertPlatformProvider(tx: Database, row: PlatformProviderRow) {
    await tx.insert(platformProviders).values(row);
  },

  async listPlatformProviders(tx: Database): Promise<PlatformProviderRow[]> {
    return tx.select().from(platformProviders).orderBy(asc(platformProviders.name));
  },

  async findPlatformProviderByName(tx: Database, name: string): Promise<PlatformProviderRow | undefined> {
    return (await tx.select().from(platformProviders).where(eq(platformProviders.name, name)))[0];
  },

  async deletePlatformProvider(tx: Database, id: string): Promise<PlatformProviderRow | undefined> {
    return (await tx.delete(platformProviders).where(eq(platformProviders.id, id)).returning())[0];
  },

  async upsertPrice(tx: Database, row: PriceRow) {
    await tx
      .insert(gatewayModelPrices)
      .values(row)
      .onConflictDoUpdate({
        target: [gatewayModelPrices.workspaceId, gatewayModelPrices.model],
        set: {
          inputMicrosPerMtok: row.inputMicrosPerMtok,
          outputMicrosPerMtok: row.outputMicrosPerMtok,
          cachedInputMicrosPerMtok: row.cachedInputMicrosPerMtok,
          contextWindow: row.contextWindow,
          updatedAt: row.updatedAt,
        },
      });
  },

  async listPrices(tx: Database, workspaceId: string): Promise<PriceRow[]> {
    return tx
      .select()
      .from(gatewayModelPrices)
      .where(eq(gatewayModelPrices.workspaceId, workspaceId))
      .orderBy(asc(gatewayModelPrices.model));
  },

  async deletePrice(tx: Database, workspaceId: string, model: string): Promise<boolean> {
    const rows = await tx
      .delete(gatewayModelPrices)
      .where(and(eq(gatewayModelPrices.workspaceId, workspaceId), eq(gatewayModelPrices.model, model)))
      .returning({ model: gatewayModelPrices.model });
    return rows.length > 0;
  },

  async upsertRoute(tx: Database, row: RouteRow) {
    await tx
      .insert(gatewayRoutes)
      .values(row)
      .onConflictDoUpdate({
        target: [gatewayRoutes.workspaceId, gatewayRoutes.alias],
        set: { strategy: row.strategy, targets: row.targets, updatedAt: row.updatedAt },
      });
  },

  async listRoutes(tx: Database, workspaceId: string): Promise<RouteRow[]> {
    return tx
      .select()
      .from(gatewayRoutes)
      .where(eq(gatewayRoutes.workspaceId, workspaceId))
      .orderBy(asc(gatewayRoutes.alias));
  },

  async deleteRoute(tx: Database, workspaceId: string, alias: string): Promise<boolean> {
    const rows = await tx
      .delete(gatewayRoutes)
      .where(and(eq(gatewayRoutes.workspaceId, workspaceId), eq(gatewayRoutes.alias, alias)))
      .returning({ alias: gatewayRoutes.alias });
    return rows.length > 0;
  },

  /**
   * Inserts usage events; an event already recorded (a journal replay) is skipped, and so
   * are events of workspaces deleted meanwhile. One statement with one array parameter per
   * column (unnest), whatever the batch size: a multi-row VALUES list would bind (and
   * type-check) rows x 21 parameters. Each workspace named is locked once (FOR KEY SHARE,
   * what a foreign key check takes per row), so a deletion waits for the insert or the
   * insert sees the workspace gone. The table is partitioned by month on created_at, so its
   * key is (id, created_at): a replay carries both from the journal line.
   */
  async insertUsage(tx: Database, rows: UsageEventRow[]): Promise<number> {
    if (rows.length === 0) return 0;
    const col = <K extends keyof UsageEventRow>(k: K) => rows.map((r) => r[k]);
    const workspaceIds = [...new Set(rows.map((r) => r.workspaceId))];
    const res = await tx.execute(sql`
      with live as (select id from workspaces where id = any(${sql.param(workspaceIds)}::text[]) for key share)
      insert into usage_events (id, workspace_id, key_id, user_id, request_id, endpoint, provider, model, status,
        error_code, stream, latency_ms, ttft_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens,
        estimated, cost_micros, attempts, created_at, credit_lease_id)
      select t.* from unnest(
        ${sql.param(col('id'))}::text[], ${sql.param(col('workspaceId'))}::text[], ${sql.param(col('keyId'))}::text[], ${sql.param(col('userId'))}::text[],
        ${sql.param(col('requestId'))}::text[], ${sql.param(col('endpoint'))}::text[], ${sql.param(col('provider'))}::text[], ${sql.param(col('model'))}::text[],
        ${sql.param(col('status'))}::int[], ${sql.param(col('errorCode'))}::text[], ${sql.param(col('stream'))}::boolean[], ${sql.param(col('latencyMs'))}::int[],
        ${sql.param(col('ttftMs'))}::int[], ${sql.param(col('inputTokens'))}::int[], ${sql.param(col('outputTokens'))}::int[],
        ${sql.param(col('cachedTokens'))}::int[], ${sql.param(col('reasoningTokens'))}::int[], ${sql.param(col('estimated'))}::boolean[],
        ${sql.param(col('costMicros'))}::bigint[], ${sql.param(col('attempts'))}::int[],
        ${sql.param(rows.map((r) => r.createdAt.toISOString()))}::timestamptz[],
        ${sql.param(rows.map((r) => r.creditLeaseId ?? null))}::text[])
        as t(id, workspace_id)
      where t.workspace_id in (select id from live)
      on conflict (id, created_at) do nothing
      returning id`);
    return (res as unknown as { rows: unknown[] }).rows.length;
  },

  /** What the calls held against one credit lease cost, by their usage events (recorded since the lease began). */
  async leaseCost(tx: Database, workspaceId: string, leaseId: string, since: Date): Promise<number> {
    const [row] = await tx
      .select({ cost: sql<string>`coalesce(sum(${usageEvents.costMicros}), 0)::text` })
      .from(usageEvents)
      .where(
        and(
          eq(usageEvents.workspaceId, workspaceId),
          gte(usageEvents.createdAt, since),
          eq(usageEvents.creditLeaseId, leaseId),
        ),
      );
    return Number(row?.cost ?? 0);
  },

  /** Every usage event of a workspace (it is being deleted). */
  async deleteWorkspaceUsage(tx: Database, workspaceId: string): Promise<void> {
    await tx.delete(usageEvents).where(eq(usageEvents.workspaceId, workspaceId));
  },

  async listUsage(
    tx: Database,
    workspaceId: string,
    f: { since: Date; until: Date; after?: string; limit: number; keyId?: string; model?: string },
  ): Promise<UsageEventRow[]> {
    const conds = [
      eq(usageEvents.workspaceId, workspaceId),
      gte(usageEvents.createdAt, f.since),
      lt(usageEvents.createdAt, f.until),
    ];
    if (f.after) conds.push(lt(usageEvents.id, f.after));
    if (f.keyId) conds.push(eq(usageEvents.keyId, f.keyId));
    if (f.model) conds.push(eq(usageEvents.model, f.model));
    return tx
      .select()
      .from(usageEvents)
      .where(and(...conds))
      .orderBy(desc(usageEvents.id))
      .limit(f.limit);
  },

  /**
   * Usage summed per group over [since, until): the per-call events plus the daily
   * aggregates retention rolled them up into after 90 days (whole UTC days whose start falls
   * in the range; they carry no key, so grouped by key they count under '').
   */
  async aggregateUsage(
    tx: Database,
    workspaceId: string,
    f: { since: Date; until: Date; groupBy: UsageGroup },
  ): Promise<UsageAggregate[]> {
    const group = GROUP_EXPR[f.groupBy];
    const dailyGroup = DAILY_GROUP_EXPR[f.groupBy];
    const since = f.since.toISOString();
    const until = f.until.toISOString();
    const res = await tx.execute(sql`
      select grp as "group", sum(requests)::text as requests, sum(errors)::text as errors,
        sum(input_tokens)::text as input_tokens, sum(output_tokens)::text as output_tokens,
        sum(cached_tokens)::text as cached_tokens, sum(reasoning_tokens)::text as reasoning_tokens,
        sum(cost_micros)::text as cost_micros
      from (
        select ${group} as grp, count(*) as requests, count(*) filter (where ${usageEvents.status} >= 400) as errors,
          sum(${usageEvents.inputTokens}) as input_tokens, sum(${usageEvents.outputTokens}) as output_tokens,
          sum(${usageEvents.cachedTokens}) as cached_tokens, sum(${usageEvents.reasoningTokens}) as reasoning_tokens,
          sum(${usageEvents.costMicros}) as cost_micros
        from ${usageEvents}
        where ${usageEvents.workspaceId} = ${workspaceId}
          and ${usageEvents.createdAt} >= ${since}::timestamptz and ${usageEvents.createdAt} < ${until}::timestamptz
        group by 1
        union all
        select ${dailyGroup}, sum(${usageDaily.requests}),
          coalesce(sum(${usageDaily.requests}) filter (where ${usageDaily.status} >= 400), 0),
          sum(${usageDaily.inputTokens}), sum(${usageDaily.outputTokens}), sum(${usageDaily.cachedTokens}),
          sum(${usageDaily.reasoningTokens}), sum(${usageDaily.costMicros})
        from ${usageDaily}
        where ${usageDaily.workspaceId} = ${workspaceId}
          and (${usageDaily.day}::timestamp at time zone 'UTC') >= ${since}::timestamptz
          and (${usageDaily.day}::timestamp at time zone 'UTC') < ${until}::timestamptz
        group by 1
      ) u
      group by grp
      order by grp`);
    const rows = (
      res as unknown as {
        rows: Array<{
          group: string;
          requests: string;
          errors: string;
          input_tokens: string;
          output_tokens: string;
          cached_tokens: string;
          reasoning_tokens: string;
          cost_micros: string;
        }>;
      }
    ).rows;
    return rows.map((r) => ({
      group: r.group,
      requests: Number(r.requests),
      errors: Number(r.errors),
      inputTokens: Number(r.input_tokens),
      outputTokens: Number(r.output_tokens),
      cachedTokens: Number(r.cached_tokens),
      reasoningTokens: Number(r.reasoning_tokens),
      costMicros: Number(r.cost_micros),
    }));
  },
};

export type GatewayRepo = typeof gatewayRepo;
