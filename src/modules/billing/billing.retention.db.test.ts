import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { signUp } from '../../../test/helpers/identity.ts';
import { DAY, manualClock } from '../../platform/clock.ts';
import type { Actor, Scope } from '../../platform/http/context.ts';
import { windowStart } from '../privacy/privacy.retention.ts';
import { periodOf } from './billing.calendar.ts';
import { promotionRemainders } from './billing.promotions.ts';
import { billingRepo } from './billing.repo.ts';
import { ledgerRetentionRepo } from './billing.retention.repo.ts';
import { ledgerRetention } from './billing.retention.ts';

/**
 * Billing records expire 7 years after they are made. The clock is set back to write billing
 * data one day past and one day inside the window, the statements job closes every month,
 * then a retention run as of now: what is one day past is gone, what is one day inside stays,
 * the ledger's expired transactions are replaced by one carried-forward balance per workspace,
 * and every balance, every account's sum, the latest statement and the live promotions read
 * exactly as before. A dry run counts the same and changes nothing; a second run changes
 * nothing more; a run that stops halfway leaves each workspace done or untouched.
 */

const USD = 1_000_000;
const NOW = new Date();
const CUTOFF = windowStart(NOW, { months: 84 });
const PAST = new Date(CUTOFF.getTime() - DAY);
const INSIDE = new Date(CUTOFF.getTime() + DAY);
const START = new Date(CUTOFF.getTime() - 40 * DAY);
const operator: Actor = { type: 'system', name: 'test-operator' };

const clock = manualClock(START);
let app: TestApp;
let wa: string; // everything old has expired
let wb: string; // a promotion granted before the cut-off is still live: its ledger is kept from its grant
let seq = 0;
let livePromotion: string;

const billing = () => app.modules.billing;
const retention = () => app.modules.privacy.service.retention;
const scopeOf = (workspaceId: string): Scope => ({ workspaceId, actor: operator, role: 'owner' });

async function rows<T>(query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await app.db.system((tx) => tx.execute(query))) as unknown as { rows: T[] }).rows;
}
async function count(query: ReturnType<typeof sql>): Promise<number> {
  return Number((await rows<{ n: string | number }>(query))[0]?.n ?? 0);
}

async function workspace(name: string): Promise<string> {
  const owner = await signUp(app);
  const ws = await owner.post<{ id: string }>('/api/workspaces', { name });
  if (ws.status !== 201) throw new Error(`workspace: ${ws.status} ${ws.text}`);
  return ws.body.id;
}

async function grant(workspaceId: string, micros: number, expiresAt?: Date) {
  return billing().promotions.grant({
    actor: operator,
    workspaceId,
    amountMicros: micros,
    idempotencyKey: `grant-${++seq}`,
    ...(expiresAt ? { expiresAt } : {}),
  });
}

async function spend(workspaceId: string, micros: number) {
  const r = await billing().ledger.reserve({
    workspaceId,
    keyId: null,
    requestId: `req-${++seq}`,
    amountMicros: micros,
  });
  await billing().ledger.settle(workspaceId, r.id, micros);
}

/** A paid payment (with its top-up), its processor event and an auto top-up, all at the clock's time. */
async function payAt(workspaceId: string, micros: number, tag: string) {
  const now = clock.now();
  const topup = await billing().ledger.topUp({
    workspaceId,
    amountMicros: micros,
    idempotencyKey: `topup-${tag}`,
    actor: operator,
  });
  await app.db.tenant(workspaceId, (tx) =>
    billingRepo.insertPayment(tx, {
      id: `pay_${tag}`,
      workspaceId,
      processor: 'stripe',
      checkoutId: `cs_${tag}`,
      amountMicros: micros,
      currency: 'usd',
      status: 'paid',
      cardBrand: 'visa',
      cardLast4: '4242',
      postalCode: null,
      transactionId: topup.id,
      createdBy: null,
      createdAt: now,
      paidAt: now,
    }),
  );
  await app.db.system(async (tx) => {
    await billingRepo.notePaymentEvent(tx, {
      id: `evt_${tag}`,
      processor: 'stripe',
      type: 'checkout.session.completed',
      workspaceId,
      receivedAt: now,
    });
    await tx.execute(sql`
      insert into auto_topups (id, workspace_id, payment_intent_id, processor_customer_id,
        processor_payment_method_id, amount_micros, currency, status, transaction_id, created_at, resolved_at)
      values (${`atu_${tag}`}, ${workspaceId}, ${`pi_${tag}`}, 'cus_1', 'pm_1', ${micros}, 'usd', 'failed', null,
        ${now.toISOString()}::timestamptz, ${now.toISOString()}::timestamptz)`);
    await tx.execute(sql`
      insert into budget_periods (budget_id, workspace_id, period_start, spent_micros, held_micros, reached_pct, notified_pct)
      values (${`bud_${tag}`}, ${workspaceId}, ${now.toISOString()}::timestamptz, 0, 0, 0, 0)`);
  });
}

/** Everything retention must leave as it was: balances, each account's sum, verification, statements, promotions. */
async function books() {
  const sums = await rows<{ workspace_id: string; account: string; sum: string }>(sql`
    select workspace_id, account, sum(amount_micros)::text as sum from ledger_postings
    where workspace_id in (${wa}, ${wb}) group by 1, 2 having sum(amount_micros) <> 0 order by 1, 2`);
  const lastMonth = periodOf(new Date(Date.UTC(NOW.getUTCFullYear(), NOW.getUTCMonth() - 1, 1)));
  const out: Record<string, unknown> = { sums };
  for (const w of [wa, wb]) {
    out[w] = {
      balance: await billing().ledger.balance(w),
      verify: await billing().ledger.verify(w),
      latest: await billing().statements.statement(scopeOf(w), lastMonth),
      draft: await billing().statements.statement(scopeOf(w), periodOf(NOW)),
      // The statement of the first month after the cut-off's month, closed before retention.
      afterCutoff: await billing().statements.statement(
        scopeOf(w),
        periodOf(new Date(Date.UTC(CUTOFF.getUTCFullYear(), CUTOFF.getUTCMonth() + 1, 1))),
      ),
      // Live promotions (a processed one older than 7 years goes with its grant).
      promotions: (await billing().promotions.list(w)).filter((p) => p.expiredMicros === null),
    };
  }
  return out;
}

/** Row counts of every billing table (what a dry run must leave alone). */
async function tableCounts() {
  const out: Record<string, number> = {};
  for (const t of [
    'ledger_transactions',
    'ledger_postings',
    'credit_reservations',
    'promotional_credits',
    'payments',
    'payment_events',
    'auto_topups',
    'budget_periods',
    'billing_statements',
    'workspace_plans',
    'credit_balances',
  ]) {
    out[t] = await count(sql`select count(*) as n from ${sql.identifier(t)}`);
  }
  return out;
}

type Result = { tableName: string; rule: string; rowsDeleted: number; rowsRolledUp: number };
function result(results: Result[], table: string): Result {
  const r = results.find((x) => x.tableName === table);
  if (!r) throw new Error(`no result for ${table}`);
  return r;
}

beforeAll(async () => {
  app = await createTestApp({ clock, config: { BERTH_FREE_CREDITS_USD: '0' } });
  wa = await workspace('Old books');
  wb = await workspace('Live promotion');
  await grant(wa, 100 * USD);
  await grant(wb, 50 * USD);

  // One day past the window.
  clock.set(PAST);
  await spend(wa, 30 * USD);
  await payAt(wa, 20 * USD, 'past');
  // A promotion that expired and was processed before the cut-off, and one still live.
  const expired = await grant(wa, 5 * USD, new Date(PAST.getTime() + 1000));
  livePromotion = (await grant(wb, 40 * USD, new Date(NOW.getTime() + 30 * DAY))).id;
  await spend(wb, 10 * USD);
  // A call still open from long ago (its reservation stays open, its credits held).
  await billing().ledger.reserve({ workspaceId: wa, keyId: null, requestId: 'req-open', amountMicros: 2 * USD });
  await billing().service.setPlan({ actor: operator, workspaceId: wa, plan: 'scale' });
  clock.set(new Date(PAST.getTime() + 2000));
  expect(await billing().promotions.expireDue()).toBe(1);
  expect((await billing().promotions.list(wa)).find((p) => p.grantTransactionId === expired.id)).toMatchObject({
    expiredMicros: 5 * USD,
  });

  // One day inside it.
  clock.set(INSIDE);
  await spend(wa, 7 * USD);
  await payAt(wa, 3 * USD, 'inside');
  await spend(wb, 4 * USD);
  await billing().service.setPlan({ actor: operator, workspaceId: wa, plan: 'free' });

  clock.set(NOW);
  await spend(wa, 1 * USD);
  expect(await billing().statements.closeDue()).toBeGreaterThan(150);
}, 120_000);

afterAll(async () => {
  await app?.close();
});

describe('happy', () => {
  let before: Awaited<ReturnType<typeof books>>;
  let dry: Result[];

  it('a dry run counts what would go and changes nothing', async () => {
    before = await books();
    const counts = await tableCounts();
    const run = await retention().run({ dryRun: true, trigger: 'operator' });
    dry = run.results;
    expect(result(dry, 'ledger_transactions')).toMatchObject({ rule: 'rollup', rowsRolledUp: 2 });
    expect(result(dry, 'ledger_transactions').rowsDeleted).toBeGreaterThanOrEqual(8);
    expect(result(dry, 'ledger_postings').rowsDeleted).toBeGreaterThan(result(dry, 'ledger_transactions').rowsDeleted);
    expect(result(dry, 'payments')).toMatchObject({ rule: 'older_than', rowsDeleted: 1 });
    expect(result(dry, 'payment_events')).toMatchObject({ rule: 'older_than', rowsDeleted: 1 });
    expect(result(dry, 'auto_topups')).toMatchObject({ rule: 'older_than', rowsDeleted: 1 });
    expect(result(dry, 'budget_periods')).toMatchObject({ rule: 'older_than', rowsDeleted: 1 });
    expect(result(dry, 'promotional_credits')).toMatchObject({ rule: 'older_than', rowsDeleted: 1 });
    expect(result(dry, 'credit_reservations').rowsDeleted).toBeGreaterThanOrEqual(1);
    expect(result(dry, 'billing_statements').rowsDeleted).toBeGreaterThanOrEqual(2);
    expect(result(dry, 'workspace_plans')).toMatchObject({ rule: 'older_than', rowsDeleted: 1 });
    for (const kept of ['credit_balances', 'budgets', 'auto_topup_settings', 'credit_standing']) {
      expect(result(dry, kept).rule, kept).toBe('kept');
    }
    expect(await tableCounts()).toEqual(counts);
    expect(await books()).toEqual(before);
  });

  it('removes what is one day past 7 years, keeps what is one day inside, and the books read the same', async () => {
    const run = await retention().run({ dryRun: false, trigger: 'operator' });
    for (const t of [
      'ledger_transactions',
      'ledger_postings',
      'credit_reservations',
      'promotional_credits',
      'payments',
    ]) {
      expect(result(run.results, t), t).toEqual(result(dry, t));
    }
    expect(await books()).toEqual(before);

    // Payments, their events, auto top-ups and budget periods: by their own time.
    expect((await rows<{ id: string }>(sql`select id from payments order by id`)).map((r) => r.id)).toEqual([
      'pay_inside',
    ]);
    expect((await rows<{ id: string }>(sql`select id from payment_events order by id`)).map((r) => r.id)).toEqual([
      'evt_inside',
    ]);
    expect((await rows<{ id: string }>(sql`select id from auto_topups order by id`)).map((r) => r.id)).toEqual([
      'atu_inside',
    ]);
    expect(await count(sql`select count(*) as n from budget_periods`)).toBe(1);
    // Statements: the months ended before the cut-off went, the rest stay.
    expect(
      await count(
        sql`select count(*) as n from billing_statements where period_end < ${CUTOFF.toISOString()}::timestamptz`,
      ),
    ).toBe(0);
    expect(
      await count(
        sql`select count(*) as n from billing_statements where period_end >= ${CUTOFF.toISOString()}::timestamptz`,
      ),
    ).toBeGreaterThan(150);
    // Plans: the one ended a day past the window went; the one ended a day inside and the current one stay.
    const plans = await rows<{ plan: string; ended: boolean }>(
      sql`select plan, ended_at is not null as ended from workspace_plans where workspace_id = ${wa} order by started_at`,
    );
    expect(plans).toEqual([
      { plan: 'scale', ended: true },
      { plan: 'free', ended: false },
    ]);

    // The ledger of the first workspace: one carried-forward balance at the cut-off, then what is inside.
    const entries = await billing().ledger.entries(wa, { limit: 100 });
    const oldest = entries[entries.length - 1];
    expect(oldest).toMatchObject({
      kind: 'carry_forward',
      createdAt: CUTOFF.toISOString(),
      actor: { type: 'system', id: 'retention' },
    });
    expect(entries.filter((e) => e.kind === 'carry_forward')).toHaveLength(1);
    expect(entries.every((e) => e === oldest || new Date(e.createdAt) >= INSIDE)).toBe(true);
    // The carried balances are those right before the cut-off (2 USD still held by the open call).
    expect(oldest).toMatchObject({ availableAfterMicros: (100 - 30 + 20 + 5 - 5 - 2) * USD, heldAfterMicros: 2 * USD });
    expect(
      await count(
        sql`select count(*) as n from ledger_transactions where created_at < ${CUTOFF.toISOString()}::timestamptz and workspace_id = ${wa}`,
      ),
    ).toBe(0);
    // The open reservation is kept (it still holds its credits); the resolved old ones went.
    expect(
      await count(sql`select count(*) as n from credit_reservations where request_id = 'req-open' and status = 'open'`),
    ).toBe(1);
    expect(
      await count(
        sql`select count(*) as n from credit_reservations where workspace_id = ${wa} and status <> 'open' and resolved_at < ${CUTOFF.toISOString()}::timestamptz`,
      ),
    ).toBe(0);
    // The processed old promotion went with its grant; nothing names a deleted transaction.
    expect(await count(sql`select count(*) as n from promotional_credits where workspace_id = ${wa}`)).toBe(0);
    expect(
      await count(sql`
        select count(*) as n from payments p where p.transaction_id is not null
          and not exists (select 1 from ledger_transactions t where t.id = p.transaction_id)`),
    ).toBe(0);
    expect(
      await count(sql`
        select count(*) as n from promotional_credits p
        where not exists (select 1 from ledger_transactions t where t.id = p.grant_transaction_id)
          or (p.expired_transaction_id is not null
            and not exists (select 1 from ledger_transactions t where t.id = p.expired_transaction_id))`),
    ).toBe(0);
    expect(
      await count(sql`
        select count(*) as n from ledger_transactions t where t.reservation_id is not null
          and not exists (select 1 from credit_reservations r where r.id = t.reservation_id)`),
    ).toBe(0);

    // The second workspace's live promotion keeps its ledger from its grant on (only older went).
    const b = await billing().ledger.entries(wb, { limit: 100 });
    expect(b.find((e) => e.id === livePromotion)).toBeDefined();
    expect(b.filter((e) => e.kind === 'carry_forward')).toHaveLength(1);
    expect(b.find((e) => e.kind === 'carry_forward')?.createdAt).toBe(PAST.toISOString());
  });

  it('a second run finds nothing more', async () => {
    const counts = await tableCounts();
    const run = await retention().run({ dryRun: false, trigger: 'operator' });
    for (const r of run.results.filter((x) => x.retentionClass === 'billing_7_years')) {
      expect(r.rowsDeleted, r.tableName).toBe(0);
      expect(r.rowsRolledUp, r.tableName).toBe(0);
    }
    expect(await tableCounts()).toEqual(counts);
    expect(await books()).toEqual(before);
  });

  it('the statements job makes no statement for months past retention, and they answer 404', async () => {
    expect(await billing().statements.closeDue()).toBe(0);
    const gone = periodOf(START);
    await expect(billing().statements.statement(scopeOf(wa), gone)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('a live promotion expires at its time with what is left of it, then its old ledger goes too', async () => {
    const remaining = (await billing().promotions.list(wb)).find((p) => p.grantTransactionId === livePromotion);
    // Spending takes promotional credits first: 40 - 10 - 4.
    expect(remaining?.remainingMicros).toBe(26 * USD);
    clock.set(new Date(NOW.getTime() + 31 * DAY));
    expect(await billing().promotions.expireDue()).toBe(1);
    expect((await billing().promotions.list(wb))[0]).toMatchObject({ expiredMicros: 26 * USD });
    const sumsBefore = (await books()).sums;
    const run = await retention().run({ dryRun: false, trigger: 'operator' });
    expect(result(run.results, 'ledger_transactions').rowsDeleted).toBeGreaterThanOrEqual(2);
    expect((await books()).sums).toEqual(sumsBefore);
    const b = await billing().ledger.entries(wb, { limit: 100 });
    expect(b.find((e) => e.id === livePromotion)).toBeUndefined();
    expect(b.filter((e) => e.kind === 'carry_forward')).toHaveLength(1);
    const [report] = await billing().ledger.verify(wb);
    expect(report).toMatchObject({ ok: true, unbalancedTransactions: 0 });
  });
});

describe('errors', () => {
  it('a run that stops halfway leaves each workspace done or untouched, and a rerun finishes', async () => {
    // Two workspaces with old ledgers; the second one's deletion fails.
    clock.set(START);
    const w1 = await workspace('Interrupted one');
    const w2 = await workspace('Interrupted two');
    for (const w of [w1, w2]) {
      await grant(w, 10 * USD);
      await spend(w, 3 * USD);
    }
    clock.set(new Date(NOW.getTime() + 31 * DAY));
    const sums = () =>
      rows<{ workspace_id: string; account: string; sum: string }>(sql`
        select workspace_id, account, sum(amount_micros)::text as sum from ledger_postings
        where workspace_id in (${w1}, ${w2}) group by 1, 2 having sum(amount_micros) <> 0 order by 1, 2`);
    const txCount = (w: string) => count(sql`select count(*) as n from ledger_transactions where workspace_id = ${w}`);
    const sumsBefore = await sums();
    const [first, second] = [w1, w2].sort();
    const failing = ledgerRetention({
      db: app.db,
      ledger: billingRepo,
      repo: {
        ...ledgerRetentionRepo,
        async deleteTransactions(tx, workspaceId, ids) {
          if (workspaceId === second) throw new Error('stopped');
          return ledgerRetentionRepo.deleteTransactions(tx, workspaceId, ids);
        },
      },
    });
    const cutoff = windowStart(clock.now(), { months: 84 });
    const secondBefore = await txCount(second as string);
    await expect(failing.expire(cutoff, false)).rejects.toThrow();
    // The first workspace was carried forward; the second is untouched (no carry-forward, nothing deleted).
    expect(await txCount(first as string)).toBe(1);
    expect(await txCount(second as string)).toBe(secondBefore);
    expect(await sums()).toEqual(sumsBefore);
    for (const w of [w1, w2]) {
      const [report] = await billing().ledger.verify(w);
      expect(report).toMatchObject({ ok: true, unbalancedTransactions: 0 });
    }
    // A rerun finishes the second one.
    const done = await billing().ledgerRetention.expire(cutoff, false);
    expect(done.find((r) => r.table === 'ledger_transactions')?.rowsRolledUp).toBeGreaterThanOrEqual(1);
    expect(await txCount(second as string)).toBe(1);
    expect(await sums()).toEqual(sumsBefore);

    // Never closed before: the statements job starts after the carried month, from the carried balance.
    await billing().statements.closeDue();
    const periods = await rows<{ period: string; opening: string }>(sql`
      select period, opening_micros::text as opening from billing_statements where workspace_id = ${w1} order by period`);
    expect(periods[0]).toEqual({
      period: periodOf(new Date(Date.UTC(cutoff.getUTCFullYear(), cutoff.getUTCMonth() + 1, 1))),
      opening: String(7 * USD),
    });
  });
});

/*
 * The cases below run after the ones above, on their own workspaces, each with explicit
 * cut-offs a few days before the last cut-off applied above (so every older workspace has
 * nothing left to fold before them).
 */
const LATEST = windowStart(new Date(NOW.getTime() + 31 * DAY), { months: 84 });
const K = new Date(LATEST.getTime() - 3 * DAY);
const at = (days: number) => new Date(K.getTime() + days * DAY);

/** Every row of the ledger's tables, as text (what "changes no row" compares). */
async function ledgerRows() {
  const out: Record<string, string[]> = {};
  for (const [t, order] of [
    ['ledger_transactions', 'id'],
    ['ledger_postings', 'transaction_id, account'],
    ['credit_reservations', 'id'],
    ['promotional_credits', 'grant_transaction_id'],
    ['credit_balances', 'workspace_id'],
  ] as const) {
    out[t] = (
      await rows<{ r: string }>(sql`select x::text as r from ${sql.identifier(t)} x order by ${sql.raw(order)}`)
    ).map((r) => r.r);
  }
  return out;
}

const accountSums = (w: string) =>
  rows<{ account: string; sum: string }>(sql`
    select account, sum(amount_micros)::text as sum from ledger_postings where workspace_id = ${w}
    group by 1 having sum(amount_micros) <> 0 order by 1`);
const txCountOf = (w: string) => count(sql`select count(*) as n from ledger_transactions where workspace_id = ${w}`);
const dangling = (w: string) =>
  count(sql`
    select count(*) as n from ledger_transactions t where t.workspace_id = ${w} and t.reservation_id is not null
      and not exists (select 1 from credit_reservations r where r.id = t.reservation_id)`);

describe('happy: a daily run with nothing new', () => {
  it('leaves a workspace whose only old transaction is its carry-forward as it is: no row changes', async () => {
    clock.set(at(-5));
    const w = await workspace('Quiet books');
    await grant(w, 10 * USD);
    await spend(w, 2 * USD);
    const first = await billing().ledgerRetention.expire(K, false);
    expect(first.find((r) => r.table === 'ledger_transactions')?.rowsRolledUp).toBeGreaterThanOrEqual(1);
    expect(await txCountOf(w)).toBe(1);

    const before = await ledgerRows();
    for (const dryRun of [true, false]) {
      const next = await billing().ledgerRetention.expire(at(1), dryRun);
      for (const r of next)
        expect({ table: r.table, deleted: r.rowsDeleted, rolledUp: r.rowsRolledUp }).toEqual({
          table: r.table,
          deleted: 0,
          rolledUp: 0,
        });
    }
    expect(await ledgerRows()).toEqual(before);
  });
});

describe('happy: batches', () => {
  it('folds a workspace in bounded batches; a run stopped between them leaves balances exact and the next finishes', async () => {
    clock.set(at(-10));
    const w = await workspace('Busy books');
    await grant(w, 100 * USD);
    for (let i = 0; i < 6; i++) await spend(w, USD); // 13 transactions before the cut-off
    clock.set(at(1));
    await spend(w, USD);
    const sumsBefore = await accountSums(w);
    const balanceBefore = await billing().ledger.balance(w);
    const expired = () =>
      count(
        sql`select count(*) as n from ledger_transactions where workspace_id = ${w} and created_at < ${K.toISOString()}::timestamptz`,
      );
    expect(await expired()).toBe(13);

    let batches = 0;
    let balanceRowFree: boolean | null = null;
    const stopping = ledgerRetention({
      db: app.db,
      repo: ledgerRetentionRepo,
      batchSize: 4,
      ledger: {
        async insertTransaction(tx, row, postings) {
          batches++;
          if (batches === 1 && app.testDb.url) {
            // Mid-batch, another connection can still lock the balance row: gateway calls never wait.
            const other = new pg.Client({ connectionString: app.testDb.url });
            await other.connect();
            try {
              await other.query('begin');
              await other.query('select 1 from credit_balances where workspace_id = $1 for update nowait', [w]);
              balanceRowFree = true;
            } catch {
              balanceRowFree = false;
            } finally {
              await other.query('rollback').catch(() => undefined);
              await other.end();
            }
          }
          if (batches === 3) throw new Error('stopped');
          return billingRepo.insertTransaction(tx, row, postings);
        },
      },
    });
    await expect(stopping.expire(K, false)).rejects.toThrow('stopped');
    if (app.testDb.url) expect(balanceRowFree).toBe(true);

    // Two batches of 4 went (the third rolled back); one carry-forward holds them; nothing moved.
    expect(await expired()).toBe(5);
    const carried = await rows<{ id: string }>(
      sql`select id from ledger_transactions where workspace_id = ${w} and kind = 'carry_forward'`,
    );
    expect(carried).toHaveLength(1);
    expect(await accountSums(w)).toEqual(sumsBefore);
    expect(await billing().ledger.balance(w)).toEqual(balanceBefore);
    expect((await billing().ledger.verify(w))[0]).toMatchObject({ ok: true, unbalancedTransactions: 0 });
    expect(await dangling(w)).toBe(0);

    // The next run continues (in batches too) and ends with the same books.
    const next = ledgerRetention({ db: app.db, repo: ledgerRetentionRepo, ledger: billingRepo, batchSize: 4 });
    await next.expire(K, false);
    expect(await expired()).toBe(0);
    const entries = await billing().ledger.entries(w, { limit: 100 });
    expect(entries.map((e) => e.kind)).toEqual(['settle', 'reserve', 'carry_forward']);
    expect(entries[2]).toMatchObject({
      createdAt: K.toISOString(),
      availableAfterMicros: 94 * USD,
      heldAfterMicros: 0,
    });
    expect(await accountSums(w)).toEqual(sumsBefore);
    expect(await billing().ledger.balance(w)).toEqual(balanceBefore);
    expect((await billing().ledger.verify(w))[0]).toMatchObject({ ok: true, unbalancedTransactions: 0 });
    expect(await count(sql`select count(*) as n from credit_reservations where workspace_id = ${w}`)).toBe(1);
    expect(await dangling(w)).toBe(0);
  });
});

describe('happy: promotions across the cut-off', () => {
  it('an expiry the replay cannot match to a promotion spends nothing', () => {
    const t = (d: number) => new Date(K.getTime() + d * DAY);
    const states = promotionRemainders(
      [{ grantTransactionId: 'ltx_c', amountMicros: 20 * USD, expiresAt: t(60) }],
      [
        { id: 'ltx_c', kind: 'grant', idempotencyKey: 'g', createdAt: t(0), deltaMicros: BigInt(20 * USD) },
        { id: 'ltx_s', kind: 'settle', idempotencyKey: 's', createdAt: t(1), deltaMicros: BigInt(-6 * USD) },
        // A promotion removed by an earlier version: its expiry took its own credits back.
        { id: 'ltx_e', kind: 'expire', idempotencyKey: 'expire:ltx_a', createdAt: t(2), deltaMicros: BigInt(-4 * USD) },
      ],
      BigInt(100 * USD),
    );
    expect(states.get('ltx_c')?.remainingMicros).toBe(BigInt(14 * USD));
  });

  it('a promotion granted before the cut-off and expired after another was granted: what is left of the other, and what its expiry takes, do not change', async () => {
    clock.set(at(-40));
    const w = await workspace('Overlapping promotions');
    await grant(w, 100 * USD);
    await spend(w, 10 * USD);
    clock.set(at(-30));
    const a = await grant(w, 10 * USD, at(10));
    clock.set(at(-20));
    const c = await grant(w, 20 * USD, at(60));
    clock.set(at(-19));
    await spend(w, 6 * USD); // from A first (it expires sooner): A 4 left, C 20
    clock.set(new Date(at(10).getTime() + 1000));
    expect(await billing().promotions.expireDue()).toBe(1);
    clock.set(at(20));
    await spend(w, 3 * USD); // from C: 17 left
    const remaining = async () =>
      (await billing().promotions.list(w)).find((p) => p.grantTransactionId === c.id)?.remainingMicros;
    expect(await remaining()).toBe(17 * USD);
    const sumsBefore = await accountSums(w);

    await billing().ledgerRetention.expire(K, false);
    expect(await remaining()).toBe(17 * USD);
    // What was before A's grant went (C's replay needs A's from its grant on)...
    const entries = await billing().ledger.entries(w, { limit: 100 });
    expect(entries.filter((e) => e.kind === 'carry_forward')).toHaveLength(1);
    expect(entries.find((e) => e.kind === 'carry_forward')?.createdAt).toBe(at(-30).toISOString());
    expect(entries.find((e) => e.id === a.id)).toBeDefined();
    expect(await accountSums(w)).toEqual(sumsBefore);
    // ...so C reads the same, and its expiry takes back exactly that.
    clock.set(new Date(at(60).getTime() + 1000));
    expect(await billing().promotions.expireDue()).toBe(1);
    expect((await billing().promotions.list(w)).find((p) => p.grantTransactionId === c.id)).toMatchObject({
      expiredMicros: 17 * USD,
    });

    // Once both expiries are older than the cut-off, both promotions go with their ledger.
    const sumsAfterExpiry = await accountSums(w);
    await billing().ledgerRetention.expire(at(61), false);
    expect(await count(sql`select count(*) as n from promotional_credits where workspace_id = ${w}`)).toBe(0);
    expect(await txCountOf(w)).toBe(1);
    expect(await accountSums(w)).toEqual(sumsAfterExpiry);
    expect((await billing().ledger.verify(w))[0]).toMatchObject({ ok: true, unbalancedTransactions: 0 });
  });
});

describe('security: no kept transaction names a deleted reservation', () => {
  it('a reservation reserved before the cut-off and settled after it stays with its settlement, then goes with it', async () => {
    clock.set(at(-30));
    const w = await workspace('Straddling reservation');
    await grant(w, 100 * USD);
    const r = await billing().ledger.reserve({
      workspaceId: w,
      keyId: null,
      requestId: 'req-straddle',
      amountMicros: 5 * USD,
    });
    clock.set(at(-20));
    await grant(w, 10 * USD, at(100)); // live at the run: the ledger is kept from here
    clock.set(at(-10));
    await billing().ledger.settle(w, r.id, 4 * USD);
    // Another one whose recorded resolution is older than its settlement (as data restored or
    // written by an earlier version can be): its settlement still names it, so it stays too.
    clock.set(at(-30));
    const r2 = await billing().ledger.reserve({
      workspaceId: w,
      keyId: null,
      requestId: 'req-skewed',
      amountMicros: USD,
    });
    clock.set(at(-10));
    await billing().ledger.settle(w, r2.id, USD);
    await app.db.system((tx) =>
      tx.execute(
        sql`update credit_reservations set resolved_at = ${at(-25).toISOString()}::timestamptz where id = ${r2.id}`,
      ),
    );
    const reservation = () => count(sql`select count(*) as n from credit_reservations where id in (${r.id}, ${r2.id})`);

    await billing().ledgerRetention.expire(K, false);
    expect(await reservation()).toBe(2);
    expect(
      await count(sql`select count(*) as n from ledger_transactions where reservation_id in (${r.id}, ${r2.id})`),
    ).toBe(2);
    expect(await dangling(w)).toBe(0);

    // Once its settlement expires too, it goes.
    clock.set(new Date(at(100).getTime() + 1000));
    expect(await billing().promotions.expireDue()).toBe(1);
    await billing().ledgerRetention.expire(at(1), false);
    expect(
      await count(sql`select count(*) as n from ledger_transactions where reservation_id in (${r.id}, ${r2.id})`),
    ).toBe(0);
    expect(await reservation()).toBe(0);
    expect(await dangling(w)).toBe(0);
  });
});
