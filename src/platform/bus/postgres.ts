import pg from 'pg';
import type { Logger } from '../logger.ts';
import { assertChannel, assertMessage, type Bus, type BusHandler, deliver } from './bus.ts';

type Subscription = { handler: BusHandler; onGap?: () => void };

export type PostgresBusOptions = {
  /** The owner connection URL (DATABASE_URL): one dedicated connection, outside the pool. */
  url: string;
  logger: Logger;
  /** First reconnect delay; doubles up to 5 s. */
  reconnectMs?: number;
  /** The connection's application_name (default `berth-bus`). */
  name?: string;
};

/**
 * The bus over Postgres LISTEN/NOTIFY on one dedicated connection. When the connection
 * drops it reconnects with backoff, listens again, and tells subscribers through `onGap`.
 */
export function postgresBus(opts: PostgresBusOptions): Bus {
  const subs = new Map<string, Set<Subscription>>();
  const firstDelay = opts.reconnectMs ?? 200;
  let client: pg.Client | null = null;
  let connecting: Promise<pg.Client> | null = null;
  let timer: NodeJS.Timeout | null = null;
  let delay = firstDelay;
  let closed = false;
  let everConnected = false;

  function dispatch(channel: string, payload: string) {
    for (const s of subs.get(channel) ?? []) {
      deliver(s.handler, payload, () => opts.logger.warn({ channel }, 'bus handler failed'));
    }
  }

  function lost(c: pg.Client) {
    if (client !== c) return;
    client = null;
    c.end().catch(() => undefined);
    if (closed) return;
    opts.logger.warn('bus: Postgres connection lost, reconnecting');
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (timer || closed) return;
    timer = setTimeout(() => {
      timer = null;
      connect().catch(() => {
        delay = Math.min(delay * 2, 5000);
        scheduleReconnect();
      });
    }, delay);
    timer.unref();
  }

  function connect(): Promise<pg.Client> {
    if (client) return Promise.resolve(client);
    if (closed) return Promise.reject(new Error('bus closed'));
    connecting ??= (async () => {
      const c = new pg.Client({ connectionString: opts.url, application_name: opts.name ?? 'berth-bus' });
      c.on('notification', (n) => dispatch(n.channel, n.payload ?? ''));
      c.on('error', () => lost(c));
      c.on('end', () => lost(c));
      try {
        await c.connect();
        for (const channel of subs.keys()) await c.query(`listen ${pg.escapeIdentifier(channel)}`);
      } catch (err) {
        c.end().catch(() => undefined);
        throw err;
      }
      if (closed) {
        await c.end().catch(() => undefined);
        throw new Error('bus closed');
      }
      client = c;
      delay = firstDelay;
      if (everConnected) {
        for (const set of subs.values()) for (const s of set) s.onGap?.();
      }
      everConnected = true;
      return c;
    })().finally(() => {
      connecting = null;
    });
    return connecting;
  }

  return {
    kind: 'postgres',
    async publish(channel, message) {
      assertChannel(channel);
      assertMessage(message);
      const c = await connect();
      await c.query('select pg_notify($1, $2)', [channel, message]);
    },
    async subscribe(channel, handler, onGap) {
      assertChannel(channel);
      const sub: Subscription = { handler, ...(onGap ? { onGap } : {}) };
      let set = subs.get(channel);
      const first = !set;
      if (!set) {
        set = new Set();
        subs.set(channel, set);
      }
      set.add(sub);
      const c = await connect();
      if (first) await c.query(`listen ${pg.escapeIdentifier(channel)}`);
      return async () => {
        set.delete(sub);
        if (set.size === 0 && subs.get(channel) === set) {
          subs.delete(channel);
          await client?.query(`unlisten ${pg.escapeIdentifier(channel)}`).catch(() => undefined);
        }
      };
    },
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = null;
      subs.clear();
      const c = client ?? (await connecting?.catch(() => null)) ?? null;
      client = null;
      await c?.end().catch(() => undefined);
    },
  };
}
