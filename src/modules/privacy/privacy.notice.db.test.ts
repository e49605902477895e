import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { DAY, manualClock } from '../../platform/clock.ts';
import type { Db } from '../../platform/db/db.ts';
import { createLogger } from '../../platform/logger.ts';
import { noticeRepo } from './privacy.notice.repo.ts';
import type { PolicySubprocessor } from './privacy.notice.schemas.ts';
import { noticeService } from './privacy.notice.ts';

/**
 * Viewing the privacy policy is cheap: a replica opens the write transaction (and its
 * advisory lock) only when the rebuilt policy hashes differently from the newest version it
 * knows, and two replicas never store the same content twice, also when both see a change
 * at once.
 */

let t: TestDb;
beforeAll(async () => {
  t = await createTestDb();
});
afterAll(async () => {
  await t?.drop();
});

const clock = manualClock('2026-05-01T00:00:00Z');
const logger = createLogger({ level: 'silent' });
/** What every replica's registry holds (the same database, in real life). */
let registry: PolicySubprocessor[] = [];

/** A replica's notice service; counts the transactions it opens and the versions it writes. */
function replica() {
  const counts = { transactions: 0, inserts: 0 };
  const db: Pick<Db, 'system'> = {
    system: (fn) => {
      counts.transactions++;
      return t.db.system(fn);
    },
  };
  const notice = noticeService({
    db,
    repo: {
      ...noticeRepo,
      insert: (tx, row) => {
        counts.inserts++;
        return noticeRepo.insert(tx, row);
      },
    },
    clock,
    logger,
    controller: { name: 'Acme', contact: 'privacy@acme.test', dpo: null },
    dataMap: () => [],
    subprocessors: async () => registry,
  });
  notice.bindRoutes(() => true);
  return { notice, counts };
}

const stored = () => t.db.system((tx) => noticeRepo.list(tx));

function subprocessor(name: string): PolicySubprocessor {
  return {
    id: `sub_${name}`,
    name,
    purpose: 'Backups',
    dataCategories: ['account'],
    region: 'EU',
    effectiveAt: new Date(clock.now().getTime() + 31 * DAY).toISOString(),
    retiredAt: null,
  };
}

describe('happy', () => {
  it('repeated views open no transaction; a change stores exactly one version across replicas', async () => {
    const a = replica();
    const b = replica();
    const first = await a.notice.current();
    expect(a.counts.inserts).toBe(1);
    // B learns the stored version once, then serves from memory too.
    expect((await b.notice.current()).version).toBe(first.version);
    expect(b.counts.inserts).toBe(0);

    const before = { a: a.counts.transactions, b: b.counts.transactions };
    for (let i = 0; i < 5; i++) {
      expect((await a.notice.current()).version).toBe(first.version);
      expect((await b.notice.current()).contentHash).toBe(first.contentHash);
    }
    expect(a.counts.transactions).toBe(before.a);
    expect(b.counts.transactions).toBe(before.b);

    // A new sub-processor changes the content: B stores the next version first...
    registry = [subprocessor('Backups-Co')];
    clock.advance(DAY);
    const second = await b.notice.current();
    expect(second.version).toBe(first.version + 1);
    expect(b.counts.inserts).toBe(1);
    // ...and A, whose memory still holds the first, follows it without a duplicate.
    expect(await a.notice.current()).toEqual(second);
    expect(a.counts.inserts).toBe(1);
    expect((await stored()).map((v) => v.version)).toEqual([second.version, first.version]);

    // Quiet again on both.
    const quiet = { a: a.counts.transactions, b: b.counts.transactions };
    await a.notice.current();
    await b.notice.current();
    expect([a.counts.transactions, b.counts.transactions]).toEqual([quiet.a, quiet.b]);
  });

  it('two replicas seeing the same change at once store one version', async () => {
    const a = replica();
    const b = replica();
    const base = await a.notice.current();
    await b.notice.current();
    registry = [...registry, subprocessor('Mail-Co')];
    clock.advance(DAY);
    const [fromA, fromB] = await Promise.all([a.notice.current(), b.notice.current()]);
    expect(fromA).toEqual(fromB);
    expect(fromA.version).toBe(base.version + 1);
    expect(a.counts.inserts + b.counts.inserts).toBe(1);
    expect((await stored()).filter((v) => v.contentHash === fromA.contentHash)).toHaveLength(1);
  });
});
