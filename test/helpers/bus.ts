import { inject } from 'vitest';
import { type Bus, memoryBus, memoryHub, postgresBus, redisBus } from '../../src/platform/bus/index.ts';
import { createLogger } from '../../src/platform/logger.ts';
import type { TestDb } from './db.ts';

const logger = createLogger({ level: 'silent' });

/**
 * Two buses of one installation, as two replicas have: `memory` joins two in-process buses
 * by one hub (each hears only what is published); `postgres` gives each its own LISTEN/NOTIFY
 * connection to the test database; `redis` each its own connection to TEST_REDIS_URL.
 */
export function busPair(kind: 'memory' | 'postgres' | 'redis', testDb: TestDb): [Bus, Bus] {
  if (kind === 'memory') {
    const hub = memoryHub();
    return [memoryBus({ hub }), memoryBus({ hub })];
  }
  if (kind === 'postgres') {
    const url = testDb.url;
    if (!url) throw new Error('server Postgres expected');
    return [postgresBus({ url, logger }), postgresBus({ url, logger })];
  }
  const url = inject('redisUrl');
  if (!url) throw new Error('Redis expected');
  return [redisBus({ url, logger }), redisBus({ url, logger })];
}
