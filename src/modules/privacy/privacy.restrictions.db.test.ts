import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { gapBus } from '../../../test/helpers/gap-bus.ts';
import { manualClock } from '../../platform/clock.ts';
import { newId } from '../../platform/ids.ts';
import type { RequestsService } from './privacy.requests.ts';
import { restrictionsRepo } from './privacy.restrictions.repo.ts';
import { RESTRICTIONS_REFRESH_MS, restrictionsService } from './privacy.restrictions.ts';

/**
 * Restriction fails closed: while the restricted users cannot be read (at start, or after a
 * bus gap, when messages may have been lost) every check answers 503
 * `restrictions_unavailable` instead of letting a restricted user's calls through, and the
 * read is retried with backoff until it succeeds. The database is real; its read of the
 * restricted users fails on demand, and the retry timer is driven by hand.
 */

let t: TestDb;
beforeAll(async () => {
  t = await createTestDb();
});
afterAll(async () => {
  await t?.drop();
});

const unused = async () => {
  throw new Error('not used in these tests');
};

function harness() {
  const clock = manualClock(new Date());
  const state = { broken: false, reads: 0 };
  const timers: Array<{ fn: () => void; ms: number; cancelled: boolean }> = [];
  const warnings: string[] = [];
  const { bus, gap } = gapBus();
  const service = restrictionsService({
    db: t.db,
    repo: {
      ...restrictionsRepo,
      activeUserIds: async (tx) => {
        state.reads++;
        if (state.broken) throw new Error('connection terminated');
        return restrictionsRepo.activeUserIds(tx);
      },
    },
    requests: { record: unused } as unknown as Pick<RequestsService, 'record'>,
    audit: { record: unused },
    bus,
    clock,
    logger: { warn: (msg: unknown) => void warnings.push(String(msg)) },
    retry: { firstMs: 100, maxMs: 400 },
    schedule: (fn, ms) => {
      const timer = { fn, ms, cancelled: false };
      timers.push(timer);
      return () => {
        timer.cancelled = true;
      };
    },
  });
  const pending = () => timers.filter((x) => !x.cancelled);
  /** Fires the one pending retry timer and waits for the read it starts. */
  async function fire() {
    const due = pending();
    expect(due).toHaveLength(1);
    const timer = due[0];
    if (!timer) return;
    timer.cancelled = true;
    timer.fn();
    await service.reload();
  }
  return {
    service,
    clock,
    state,
    timers,
    warnings,
    pending,
    fire,
    gap,
  };
}

async function restrict(userId: string) {
  await t.db.system((tx) =>
    restrictionsRepo.insertUnlessActive(tx, {
      id: newId('prs'),
      userId,
      restrictedAt: new Date(),
      liftedAt: null,
    }),
  );
}

async function lift(userId: string) {
  await t.db.system((tx) => restrictionsRepo.lift(tx, userId, new Date()));
}

const unavailable = expect.objectContaining({ code: 'restrictions_unavailable', status: 503 });

describe('errors', () => {
  it('refuses every check with 503 until the first read succeeds, retrying with backoff', async () => {
    const restricted = newId('usr');
    const other = newId('usr');
    await restrict(restricted);
    const h = harness();
    h.state.broken = true;
    const stop = await h.service.start();
    try {
      // Not an empty set answering "allowed": nobody is processed, restricted or not.
      expect(() => h.service.processingAllowed(restricted)).toThrow(unavailable);
      expect(() => h.service.processingAllowed(other)).toThrow(unavailable);
      expect(() => h.service.assertProcessingAllowed(restricted)).toThrow(unavailable);
      // Checks do not hammer the database: only the timer retries.
      const reads = h.state.reads;
      h.clock.advance(RESTRICTIONS_REFRESH_MS * 10);
      expect(() => h.service.processingAllowed(other)).toThrow(unavailable);
      expect(h.state.reads).toBe(reads);

      await h.fire();
      await h.fire();
      await h.fire();
      expect(() => h.service.processingAllowed(other)).toThrow(unavailable);
      // 100, 200, 400, then capped at 400.
      expect(h.timers.map((x) => x.ms)).toEqual([100, 200, 400, 400]);

      h.state.broken = false;
      await h.fire();
      expect(h.service.processingAllowed(restricted)).toBe(false);
      expect(h.service.processingAllowed(other)).toBe(true);
      expect(h.pending()).toHaveLength(0);
      expect(h.warnings.join('\n')).not.toContain(restricted);
    } finally {
      await stop();
    }
  });

  it('refuses while the re-read after a bus gap fails, then answers from the fresh set', async () => {
    const before = newId('usr');
    const during = newId('usr');
    await restrict(before);
    const h = harness();
    const stop = await h.service.start();
    try {
      expect(h.service.processingAllowed(before)).toBe(false);
      expect(h.service.processingAllowed(during)).toBe(true);
      expect(h.pending()).toHaveLength(0);

      // While the bus was disconnected, one user restricted and the other lifted: no message came.
      await restrict(during);
      await lift(before);
      h.state.broken = true;
      h.gap();
      await h.service.reload();
      expect(() => h.service.processingAllowed(during)).toThrow(unavailable);
      expect(() => h.service.processingAllowed(before)).toThrow(unavailable);

      await h.fire();
      expect(() => h.service.processingAllowed(during)).toThrow(unavailable);
      h.state.broken = false;
      await h.fire();
      expect(h.service.processingAllowed(during)).toBe(false);
      expect(h.service.processingAllowed(before)).toBe(true);
      expect(h.timers.map((x) => x.ms)).toEqual([100, 200]);
      expect(h.pending()).toHaveLength(0);
    } finally {
      await lift(during);
      await stop();
    }
  });

  it('keeps the last set when only the minute-old background re-read fails (the bus kept it current)', async () => {
    const u = newId('usr');
    await restrict(u);
    const h = harness();
    const stop = await h.service.start();
    try {
      h.state.broken = true;
      h.clock.advance(RESTRICTIONS_REFRESH_MS + 1);
      expect(h.service.processingAllowed(u)).toBe(false);
      await h.service.reload();
      expect(h.service.processingAllowed(u)).toBe(false);
      // The next background attempt waits for the backoff instead of following every check.
      const reads = h.state.reads;
      expect(h.service.processingAllowed(u)).toBe(false);
      expect(h.state.reads).toBe(reads);
      expect(h.pending()).toHaveLength(0);
    } finally {
      await lift(u);
      await stop();
    }
  });

  it('stops retrying once stopped', async () => {
    const h = harness();
    h.state.broken = true;
    const stop = await h.service.start();
    expect(h.pending()).toHaveLength(1);
    await stop();
    expect(h.pending()).toHaveLength(0);
  });
});
