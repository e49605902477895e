import type { Bus } from '../../src/platform/bus/index.ts';

/**
 * A bus that delivers nothing and publishes nowhere, for a service that follows a channel:
 * `gap()` calls the handler the service subscribed with for a reconnect (messages may have
 * been lost meanwhile).
 */
export function gapBus() {
  let onGap: (() => void) | undefined;
  const bus: Pick<Bus, 'publish' | 'subscribe'> = {
    publish: async () => undefined,
    subscribe: async (_channel, _handler, gap) => {
      onGap = gap;
      return async () => undefined;
    },
  };
  return {
    bus,
    gap: () => {
      if (!onGap) throw new Error('not subscribed');
      onGap();
    },
  };
}
