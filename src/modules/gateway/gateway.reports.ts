import type { Clock } from '../../platform/clock.ts';
import { DAY } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Scope } from '../../platform/http/context.ts';
import type { GatewayRepo, UsageAggregate, UsageGroup } from './gateway.repo.ts';
import type { UsageEventRow } from './gateway.tables.ts';

export type UsageQueryInput = {
  since?: string | undefined;
  until?: string | undefined;
  groupBy?: UsageGroup | undefined;
  keyId?: string | undefined;
  model?: string | undefined;
  cursor?: string | undefined;
  limit?: number | undefined;
};

function eventView(r: UsageEventRow) {
  return { ...r, createdAt: r.createdAt.toISOString() };
}

/** Usage reports of a workspace: aggregates per day/model/key/provider, or the events, newest first. */
export function usageReports(deps: {
  db: Pick<Db, 'tenant'>;
  repo: GatewayRepo;
  clock: Clock;
  flush(): Promise<void>;
}) {
  return {
    async queryUsage({ scope, query }: { scope: Scope; query: UsageQueryInput }) {
      const now = deps.clock.now();
      const until = query.until ? new Date(query.until) : new Date(now.getTime() + 1);
      const since = query.since ? new Date(query.since) : new Date(now.getTime() - 30 * DAY);
      if (since.getTime() >= until.getTime()) throw new AppError('bad_request', 'since must be before until.');
      // What this replica recorded is readable at once (read-your-writes for the caller).
      await deps.flush();
      return deps.db.tenant(scope.workspaceId, async (tx) => {
        if (query.groupBy) {
          const data: UsageAggregate[] = await deps.repo.aggregateUsage(tx, scope.workspaceId, {
            since,
            until,
            groupBy: query.groupBy,
          });
          return { data, nextCursor: null };
        }
        const limit = query.limit ?? 100;
        const rows = await deps.repo.listUsage(tx, scope.workspaceId, {
          since,
          until,
          limit: limit + 1,
          ...(query.cursor ? { after: query.cursor } : {}),
          ...(query.keyId ? { keyId: query.keyId } : {}),
          ...(query.model ? { model: query.model } : {}),
        });
        const page = rows.slice(0, limit);
        return {
          data: page.map(eventView),
          nextCursor: rows.length > limit ? (page[page.length - 1]?.id ?? null) : null,
        };
      });
    },
  };
}

export type UsageReports = ReturnType<typeof usageReports>;
