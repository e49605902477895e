import { EventEmitter } from 'node:events';

/**
 * A tiny publish/subscribe channel between the processes of one Berth installation, used
 * for what must reach every replica at once (an API key revoked on one replica must stop
 * working on all of them). Delivery is at most once: a subscriber that lost its connection
 * is told through `onGap` when it is back, so it can drop whatever it cached meanwhile.
 *
 * Implementations: in-process (embedded PGlite, one process), Postgres LISTEN/NOTIFY
 * (server Postgres) and Redis pub/sub (with REDIS_URL). See `createBus`.
 *
 * @example
 * const stop = await bus.subscribe('berth.keys', (m) => cache.drop(JSON.parse(m)), () => cache.clear());
 * await bus.publish('berth.keys', JSON.stringify({ keys: [keyId] }));
 */
export interface Bus {
  readonly kind: 'memory' | 'postgres' | 'redis';
  /** Sends `message` to every subscriber of `channel` (this process's too). */
  publish(channel: string, message: string): Promise<void>;
  /**
   * Calls `handler` for every message on `channel`; `onGap` runs after a reconnect (messages
   * sent while disconnected are lost). Resolves once the subscription is active; the returned
   * function ends it.
   */
  subscribe(channel: string, handler: BusHandler, onGap?: () => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export type BusHandler = (message: string) => void;

/** Channel names: lower-case words with dots or underscores (valid for both brokers). */
export function assertChannel(channel: string): void {
  if (!/^[a-z][a-z0-9_.]{0,62}$/.test(channel)) throw new Error(`Invalid bus channel name: ${channel}`);
}

/** Postgres NOTIFY payloads must stay under 8000 bytes; keep every broker to that. */
export const MAX_MESSAGE_BYTES = 7900;

export function assertMessage(message: string): void {
  if (Buffer.byteLength(message) > MAX_MESSAGE_BYTES) throw new Error('Bus message too large');
}

/** Runs a handler without letting its failure break the broker's delivery loop. */
export function deliver(handler: BusHandler, message: string, onError: (err: unknown) => void): void {
  try {
    handler(message);
  } catch (err) {
    onError(err);
  }
}

/**
 * What in-process buses share: buses made on one hub hear each other, like replicas on one
 * broker (tests run two app replicas in one process with two buses on one hub).
 */
export type MemoryHub = { readonly emitter: EventEmitter };

export function memoryHub(): MemoryHub {
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  return { emitter };
}

/**
 * The in-process bus: delivery is synchronous, so a publish has reached every subscriber
 * (of every bus on the same hub) when it resolves. Without a hub it has one of its own.
 * Closing a bus ends its own subscriptions only.
 */
export function memoryBus(opts: { hub?: MemoryHub } = {}): Bus {
  const { emitter } = opts.hub ?? memoryHub();
  const mine = new Set<{ channel: string; listener: (m: string) => void }>();
  let closed = false;
  return {
    kind: 'memory',
    async publish(channel, message) {
      assertChannel(channel);
      assertMessage(message);
      if (closed) throw new Error('bus closed');
      emitter.emit(channel, message);
    },
    async subscribe(channel, handler) {
      assertChannel(channel);
      if (closed) throw new Error('bus closed');
      const entry = { channel, listener: (m: string) => deliver(handler, m, () => undefined) };
      emitter.on(channel, entry.listener);
      mine.add(entry);
      return async () => {
        emitter.off(channel, entry.listener);
        mine.delete(entry);
      };
    },
    async close() {
      closed = true;
      for (const e of mine) emitter.off(e.channel, e.listener);
      mine.clear();
    },
  };
}
