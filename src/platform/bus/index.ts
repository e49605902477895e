import type { Config } from '../../config.ts';
import type { Logger } from '../logger.ts';
import { type Bus, type MemoryHub, memoryBus, memoryHub } from './bus.ts';
import { postgresBus } from './postgres.ts';
import { redisBus } from './redis.ts';

export type { Bus, BusHandler } from './bus.ts';
export { type MemoryHub, memoryBus, memoryHub, postgresBus, redisBus };

/**
 * The bus for this installation: Redis pub/sub when REDIS_URL is set, else Postgres
 * LISTEN/NOTIFY on server Postgres, else in-process (embedded PGlite runs one process).
 * Connections open on first use.
 */
export function createBus(config: Pick<Config, 'REDIS_URL' | 'DATABASE_URL'>, logger: Logger): Bus {
  if (config.REDIS_URL) return redisBus({ url: config.REDIS_URL, logger });
  if (config.DATABASE_URL) return postgresBus({ url: config.DATABASE_URL, logger });
  return memoryBus();
}
