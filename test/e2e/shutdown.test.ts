import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startServer } from '../../src/main.ts';
import { createLogger } from '../../src/platform/logger.ts';
import { migratedDataDir } from '../helpers/cli.ts';

let dataDir: string;
beforeAll(async () => {
  dataDir = await migratedDataDir('berth-shutdown-');
});
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('happy', () => {
  it('graceful stop lets an in-flight request finish, then refuses new connections and releases the database', async () => {
    const config = loadConfig({ overrides: { BERTH_DATA_DIR: dataDir, BERTH_PORT: 0, BERTH_LOG_LEVEL: 'silent' } });
    const server = await startServer(config, { logger: createLogger({ level: 'silent' }) });
    let stopping: Promise<void> | null = null;
    // Stop the moment the request arrives: it is then in flight (sign-up hashes a password).
    server.app.http.server.once('request', () => {
      stopping = server.stop();
    });
    const res = await fetch(`${server.url}/api/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: config.publicUrl, 'sec-fetch-site': 'same-origin' },
      body: JSON.stringify({ email: 'inflight@example.com', password: 'a sturdy passphrase' }),
    });
    expect(res.status).toBe(201);
    expect(stopping).not.toBeNull();
    await stopping;
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();

    // The data dir is free again and the account was committed before the database closed.
    const again = await startServer(
      loadConfig({ overrides: { BERTH_DATA_DIR: dataDir, BERTH_PORT: 0, BERTH_LOG_LEVEL: 'silent' } }),
      { logger: createLogger({ level: 'silent' }) },
    );
    try {
      const login = await fetch(`${again.url}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', origin: config.publicUrl, 'sec-fetch-site': 'same-origin' },
        body: JSON.stringify({ email: 'inflight@example.com', password: 'a sturdy passphrase' }),
      });
      expect(login.status).toBe(200);
    } finally {
      await again.stop();
    }
  }, 120_000);
});
