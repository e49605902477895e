import { loadavg } from 'node:os';
import pg from 'pg';
import { budgetsRepo } from '../src/modules/billing/billing.budgets.repo.ts';
import { ledgerService } from '../src/modules/billing/billing.ledger.ts';
import { billingRepo } from '../src/modules/billing/billing.repo.ts';
import { systemClock } from '../src/platform/clock.ts';
import { openPostgres } from '../src/platform/db/db.ts';
import { migratePostgres } from '../src/platform/db/migrate.ts';
import { newId } from '../src/platform/ids.ts';
import { benchDatabase } from './postgres.ts';

const env = process.env;
const QUICK = env.BENCH_QUICK === '1';
const CLIENTS = Number(env.BENCH_CLIENTS ?? 50);
const OPS = Number(env.BENCH_LEDGER_OPS ?? (QUICK ? 1_000 : 10_000));
const ROUNDS = Number(env.BENCH_ROUNDS ?? (QUICK ? 1 : 3));
const GOAL_HOT = 2_000;

/** Runs `ops` calls of `fn` over `clients` concurrent workers; calls per second. */
async function throughput(ops: number, clients: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < ops) {
        const i = next++;
        await fn(i);
      }
    }),
  );
  return (ops / (performance.now() - started)) * 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

async function main() {
  const db0 = await benchDatabase();
  if (!db0) {
    console.log('bench:ledger needs server Postgres: set BENCH_DATABASE_URL or TEST_DATABASE_URL. Skipped.');
    return;
  }
  console.log(
    `Ledger benchmark ${new Date().toISOString()}  Node ${process.version}  ${CLIENTS} clients, ${OPS} operations x ${ROUNDS} round(s); load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  try {
    await migratePostgres(db0.url, { appRole: 'berth_app' });
    const db = await openPostgres({ url: db0.url, appRole: 'berth_app', max: CLIENTS });
    const ledger = ledgerService({
      db,
      repo: billingRepo,
      clock: systemClock,
      settings: { reservationTtlMs: 15 * 60_000, maxInFlight: Number(env.BENCH_LEDGER_IN_FLIGHT ?? 1) },
    });
    // The baseline runs on the same pool (as the same role), so both hold at most CLIENTS connections.
    const setup = new pg.Client({ connectionString: db0.url });
    await setup.connect();
    await setup.query('create table bench_counters (id int primary key, n bigint not null)');
    await setup.query('insert into bench_counters select g, 0 from generate_series(1, 100) g');
    await setup.query('grant select, update on bench_counters to berth_app');
    await setup.end();
    const owner = db.pool as pg.Pool;
    const actor = { type: 'system', name: 'bench' } as const;
    const hot = newId('ws');
    const budgeted = newId('ws');
    const many = Array.from({ length: 100 }, () => newId('ws'));
    for (const w of [hot, budgeted, ...many]) {
      await ledger.grant({ workspaceId: w, amountMicros: 10 ** 14, idempotencyKey: `fund-${w}`, actor });
    }
    // A hot workspace with a monthly budget of its own: every call also moves a budget period.
    await db.tenant(budgeted, async (tx) => {
      const now = new Date();
      await budgetsRepo.lockBalance(tx, budgeted, now);
      await budgetsRepo.addToCount(tx, budgeted, 1);
      await budgetsRepo.insert(tx, {
        id: newId('bud'),
        workspaceId: budgeted,
        keyId: null,
        period: 'month',
        limitMicros: 10 ** 14,
        createdBy: null,
        createdAt: now,
        updatedAt: now,
      });
    });
    const call = async (workspaceId: string) => {
      const r = await ledger.reserve({ workspaceId, keyId: null, requestId: newId('req'), amountMicros: 5_000 });
      await ledger.settle(workspaceId, r.id, 1_234);
    };
    const rows = {
      baselineHot: [] as number[],
      hot: [] as number[],
      budgeted: [] as number[],
      baselineMany: [] as number[],
      many: [] as number[],
    };
    for (let round = 0; round < ROUNDS; round++) {
      rows.baselineHot.push(
        await throughput(OPS, CLIENTS, () => owner.query('update bench_counters set n = n + 1 where id = 1')),
      );
      rows.hot.push(await throughput(OPS, CLIENTS, () => call(hot)));
      rows.budgeted.push(await throughput(OPS, CLIENTS, () => call(budgeted)));
      rows.baselineMany.push(
        await throughput(OPS, CLIENTS, (i) =>
          owner.query('update bench_counters set n = n + 1 where id = $1', [(i % 100) + 1]),
        ),
      );
      rows.many.push(await throughput(OPS, CLIENTS, (i) => call(many[i % 100] as string)));
    }
    const hotRate = median(rows.hot);
    const manyRate = median(rows.many);
    const budgetedRate = median(rows.budgeted);
    console.log('\nthroughput (operations/s, median of rounds)');
    console.log(`plain update, one row          ${median(rows.baselineHot).toFixed(0).padStart(8)}`);
    console.log(
      `reserve+settle, one workspace  ${hotRate.toFixed(0).padStart(8)}   ${(hotRate / median(rows.baselineHot)).toFixed(2)}x the plain update`,
    );
    console.log(
      `  with a budget                ${budgetedRate.toFixed(0).padStart(8)}   ${(budgetedRate / median(rows.baselineHot)).toFixed(2)}x the plain update`,
    );
    console.log(`plain update, 100 rows         ${median(rows.baselineMany).toFixed(0).padStart(8)}`);
    console.log(
      `reserve+settle, 100 workspaces ${manyRate.toFixed(0).padStart(8)}   ${(manyRate / median(rows.baselineMany)).toFixed(2)}x the plain update`,
    );
    const reports = await ledger.verify();
    const ok = reports.every((r) => r.ok);
    console.log(`\nverify: ${reports.length} balances, ${ok ? 'all equal to their postings' : 'MISMATCH'}`);
    console.log(
      `${hotRate >= GOAL_HOT ? 'PASS' : 'FAIL'}  one hot workspace: ${hotRate.toFixed(0)} settled requests/s (goal >= ${GOAL_HOT})`,
    );
    await db.close();
    if (!ok) process.exitCode = 1;
  } finally {
    await db0.drop();
  }
}

await main();
