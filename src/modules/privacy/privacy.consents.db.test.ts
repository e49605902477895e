import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { gapBus } from '../../../test/helpers/gap-bus.ts';
import { manualClock } from '../../platform/clock.ts';
import { newId } from '../../platform/ids.ts';
import { consentsRepo } from './privacy.consents.repo.ts';
import { consentsService, OBJECTIONS_REFRESH_MS } from './privacy.consents.ts';
import type { RequestsService } from './privacy.requests.ts';

/**
 * Objections fail closed and an outage costs no query per request: until the objections
 * were read, and while the re-read after a bus gap fails, every user counts as objecting;
 * failed reads back off (one warning per outage). The database is real; its read of the
 * objections fails on demand.
 */

let t: TestDb;
beforeAll(async () => {
  t = await createTestDb();
});
afterAll(async () => {
  await t?.drop();
});

const objector = newId('usr');
const other = newId('usr');

function harness() {
  const clock = manualClock(new Date());
  const state = { broken: false, reads: 0 };
  const warnings: string[] = [];
  const { bus, gap } = gapBus();
  const service = consentsService({
    db: t.db,
    repo: {
      ...consentsRepo,
      currentObjections: async (tx) => {
        state.reads++;
        if (state.broken) throw new Error('connection terminated');
        return consentsRepo.currentObjections(tx);
      },
    },
    requests: {
      record: async () => {
        throw new Error('not used in these tests');
      },
    } as unknown as Pick<RequestsService, 'record'>,
    clock,
    bus,
    logger: { warn: (msg: unknown) => void warnings.push(String(msg)) },
    retry: { firstMs: 100, maxMs: 400 },
  });
  /** Lets a read started by a check finish. */
  const settle = () => service.reload();
  return { service, clock, state, warnings, gap, settle };
}

describe('objections, when they cannot be read', () => {
  beforeAll(async () => {
    await t.db.system((tx) =>
      consentsRepo.insertObjection(tx, {
        id: newId('pob'),
        userId: objector,
        purpose: 'product_analytics',
        objected: true,
        at: new Date(),
      }),
    );
  });

  it('count everyone as objecting until the first read succeeds, retrying with backoff', async () => {
    const h = harness();
    h.state.broken = true;
    await h.service.start();
    expect(h.service.objecting(other, 'product_analytics')).toBe(true);
    const reads = h.state.reads;
    // Within the backoff, checks start no read and log nothing more.
    for (let i = 0; i < 50; i++) h.service.objecting(other, 'product_analytics');
    expect(h.state.reads).toBe(reads);
    expect(h.warnings).toHaveLength(1);

    h.state.broken = false;
    h.clock.advance(100);
    h.service.objecting(other, 'product_analytics');
    await h.settle();
    expect(h.service.objecting(other, 'product_analytics')).toBe(false);
    expect(h.service.objecting(objector, 'product_analytics')).toBe(true);
  });

  it('keep the last set when only the background re-read fails, and fail closed after a bus gap', async () => {
    const h = harness();
    await h.service.start();
    expect(h.service.objecting(other, 'product_analytics')).toBe(false);

    h.state.broken = true;
    h.clock.advance(OBJECTIONS_REFRESH_MS + 1);
    h.service.objecting(other, 'product_analytics');
    await h.settle();
    // A stale but bus-kept set still answers.
    expect(h.service.objecting(other, 'product_analytics')).toBe(false);
    expect(h.service.objecting(objector, 'product_analytics')).toBe(true);

    // A gap may have lost messages: until a read succeeds, nobody is processed.
    h.gap();
    await h.settle();
    expect(h.service.objecting(other, 'product_analytics')).toBe(true);

    h.state.broken = false;
    h.clock.advance(1_000);
    h.service.objecting(other, 'product_analytics');
    await h.settle();
    expect(h.service.objecting(other, 'product_analytics')).toBe(false);
  });
});
