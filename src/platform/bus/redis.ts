import { Redis } from 'ioredis';
import type { Logger } from '../logger.ts';
import { assertChannel, assertMessage, type Bus, type BusHandler, deliver } from './bus.ts';

type Subscription = { handler: BusHandler; onGap?: () => void };

/**
 * The bus over Redis pub/sub: one connection publishes, one subscribes (a subscribed Redis
 * connection can do nothing else). ioredis reconnects and subscribes again by itself;
 * subscribers hear about the gap through `onGap`.
 */
export function redisBus(opts: {
  url: string;
  logger: Logger /** CLIENT SETNAME (default `berth-bus`). */;
  name?: string;
}): Bus {
  const subs = new Map<string, Set<Subscription>>();
  const common = { maxRetriesPerRequest: 2, lazyConnect: true, connectionName: opts.name ?? 'berth-bus' };
  const pub = new Redis(opts.url, common);
  const sub = new Redis(opts.url, common);
  pub.on('error', () => undefined);
  sub.on('error', () => undefined);
  let readyOnce = false;
  sub.on('ready', () => {
    if (readyOnce) {
      opts.logger.warn('bus: Redis connection restored');
      for (const set of subs.values()) for (const s of set) s.onGap?.();
    }
    readyOnce = true;
  });
  sub.on('message', (channel: string, message: string) => {
    for (const s of subs.get(channel) ?? []) {
      deliver(s.handler, message, () => opts.logger.warn({ channel }, 'bus handler failed'));
    }
  });

  async function ready(client: Redis) {
    if (client.status === 'wait') await client.connect();
  }

  return {
    kind: 'redis',
    async publish(channel, message) {
      assertChannel(channel);
      assertMessage(message);
      await ready(pub);
      await pub.publish(channel, message);
    },
    async subscribe(channel, handler, onGap) {
      assertChannel(channel);
      const entry: Subscription = { handler, ...(onGap ? { onGap } : {}) };
      let set = subs.get(channel);
      const first = !set;
      if (!set) {
        set = new Set();
        subs.set(channel, set);
      }
      set.add(entry);
      await ready(sub);
      if (first) await sub.subscribe(channel);
      return async () => {
        set.delete(entry);
        if (set.size === 0 && subs.get(channel) === set) {
          subs.delete(channel);
          await sub.unsubscribe(channel).catch(() => undefined);
        }
      };
    },
    async close() {
      subs.clear();
      pub.disconnect();
      sub.disconnect();
    },
  };
}
