import { z } from 'zod';
import type { HttpServer } from '../../platform/http/server.ts';
import { operatorActor, operatorRequired } from '../identity/index.ts';
import { RESULT_RULES, RUN_STATUSES, RUN_TRIGGERS } from './privacy.retention.tables.ts';
import type { RetentionService, RunView } from './privacy.retention.ts';

export const RunRetentionBody = z.strictObject({
  dryRun: z.boolean().default(false).describe('Count what would be removed, change nothing'),
  asOf: z.iso
    .datetime({ offset: true })
    .optional()
    .describe('Apply the windows as of this time (default now); a future time only with dryRun'),
});

const RetentionResultView = z.object({
  retentionClass: z.string(),
  table: z.string(),
  rule: z.enum(RESULT_RULES).describe('expired | older_than | rollup | audit | with_events | kept (no time rule)'),
  rowsDeleted: z.number().int(),
  rowsRolledUp: z.number().int().describe('Per-call usage events moved into daily totals'),
  partitionsDropped: z.number().int(),
  cutoff: z.string().nullable().describe('Rows older than this expired (null for expiry-based classes)'),
});

export const RetentionRunView = z.object({
  id: z.string(),
  asOf: z.string(),
  dryRun: z.boolean(),
  trigger: z.enum(RUN_TRIGGERS),
  startedBy: z.string().nullable(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  status: z.enum(RUN_STATUSES),
  errorCode: z.string().nullable(),
  results: z.array(RetentionResultView),
});

const RunsQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(100).default(20) });

function view(r: RunView): z.infer<typeof RetentionRunView> {
  return {
    id: r.id,
    asOf: r.asOf.toISOString(),
    dryRun: r.dryRun,
    trigger: r.trigger,
    startedBy: r.startedBy,
    startedAt: r.startedAt.toISOString(),
    finishedAt: r.finishedAt?.toISOString() ?? null,
    status: r.status,
    errorCode: r.errorCode,
    results: r.results.map((x) => ({
      retentionClass: x.retentionClass,
      table: x.tableName,
      rule: x.rule,
      rowsDeleted: x.rowsDeleted,
      rowsRolledUp: x.rowsRolledUp,
      partitionsDropped: x.partitionsDropped,
      cutoff: x.cutoff?.toISOString() ?? null,
    })),
  };
}

const tags = ['operator', 'privacy'];
const security = [{ session: [], csrf: [] }];

/** Retention runs: platform operators only. */
export function registerRetentionRoutes(app: HttpServer, { retention }: { retention: RetentionService }) {
  app.post(
    '/api/operator/retention/run',
    {
      schema: {
        tags,
        security,
        summary:
          'Run retention now over every data class (or, with dryRun, count what would be removed, optionally as of a future date)',
        body: RunRetentionBody,
        response: { 200: RetentionRunView },
      },
      preHandler: operatorRequired,
    },
    async (req) =>
      view(
        await retention.run({
          dryRun: req.body.dryRun,
          asOf: req.body.asOf ? new Date(req.body.asOf) : undefined,
          trigger: 'operator',
          actor: operatorActor(req),
        }),
      ),
  );

  app.get(
    '/api/operator/retention/runs',
    {
      schema: {
        tags,
        security,
        summary: 'The latest retention runs, newest first, with what each removed per data class and table',
        querystring: RunsQuery,
        response: { 200: z.object({ data: z.array(RetentionRunView) }) },
      },
      preHandler: operatorRequired,
    },
    async (req) => ({ data: (await retention.listRuns(req.query.limit)).map(view) }),
  );
}
