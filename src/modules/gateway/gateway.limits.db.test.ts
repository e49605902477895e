import { randomBytes } from 'node:crypto';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../../../test/fakes/openai-upstream.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { onServerPostgres } from '../../../test/helpers/db.ts';
import { gatewayWorkspace, listen, openAiClient } from '../../../test/helpers/gateway.ts';
import { manualClock } from '../../platform/clock.ts';
import { memoryRateLimiter, redisRateLimiter } from './gateway.limits.ts';

describe('happy', () => {
  it('counts per minute window: within the limit, refused beyond it, fresh in the next minute', async () => {
    const clock = manualClock('2026-05-01T10:00:30Z');
    const limiter = memoryRateLimiter(clock);
    expect((await limiter.consume('k', 3, 5)).ok).toBe(true);
    const second = await limiter.consume('k', 3, 5);
    expect(second).toMatchObject({ ok: false, used: 3, remaining: 2 });
    expect(second.resetMs).toBe(30_000);
    expect((await limiter.consume('k', 2, 5)).ok).toBe(true);
    await limiter.add('k', 10);
    expect((await limiter.peek('k', 5)).ok).toBe(false);
    clock.advance(30_000);
    expect(await limiter.peek('k', 5)).toMatchObject({ ok: true, used: 0 });
  });
});

const redisUrl = inject('redisUrl');

/**
 * Replicas share limits through Redis: N replicas enforce a key's limit once, not N times.
 * Run once, in the server Postgres project, when TEST_REDIS_URL is set.
 */
describe.skipIf(!onServerPostgres() || !redisUrl)(
  'security (Redis; skipped without TEST_DATABASE_URL and TEST_REDIS_URL)',
  () => {
    it('40 parallel decisions on two limiters, limit 10: exactly 10 pass', async () => {
      const clock = manualClock(new Date());
      const prefix = `berth:test:${randomBytes(6).toString('hex')}:`;
      const a = redisRateLimiter({ url: redisUrl ?? '', clock, prefix });
      const b = redisRateLimiter({ url: redisUrl ?? '', clock, prefix });
      try {
        const decisions = await Promise.all(
          Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).consume('key', 1, 10)),
        );
        expect(decisions.filter((d) => d.ok)).toHaveLength(10);
        expect(Math.max(...decisions.map((d) => d.used))).toBe(10);
      } finally {
        await a.close();
        await b.close();
      }
    });

    describe('two gateway replicas', () => {
      let fake: FakeOpenAi;
      let a: TestApp;
      let b: TestApp;
      beforeAll(async () => {
        fake = await startFakeOpenAi();
        const config = { BERTH_EGRESS_ALLOW: '127.0.0.1', REDIS_URL: redisUrl ?? '' };
        a = await createTestApp({ config });
        b = await createTestApp({ config, testDb: a.testDb, clock: a.clock });
      });
      afterAll(async () => {
        await b?.close();
        await a?.close();
        await fake?.close();
      });

      it("enforce a key's requests per minute once across both", async () => {
        const w = await gatewayWorkspace(a, {
          providers: [{ name: 'fake', baseUrl: fake.baseUrl, models: ['gpt-4o'] }],
          key: { rateLimitRpm: 6 },
        });
        const clients = [w.openai, openAiClient(await listen(b), w.secret)];
        const results = await Promise.all(
          Array.from({ length: 16 }, (_, i) =>
            (clients[i % 2] as OpenAI).chat.completions
              .create({ model: 'gpt-4o', messages: [{ role: 'user', content: `n${i}` }] })
              .then(() => 200)
              .catch((e: { status?: number }) => e.status ?? 0),
          ),
        );
        expect(results.filter((s) => s === 200)).toHaveLength(6);
        expect(results.filter((s) => s === 429)).toHaveLength(10);
      });
    });
  },
);
