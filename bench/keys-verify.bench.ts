/**
 * What API key verification costs per request, as a ratio to a no-auth baseline measured in
 * the same run: a real Berth app on embedded PGlite, requests through Fastify's inject.
 *
 *   (a) baseline:   no credentials (every hook still runs), a trivial route
 *   (b) cache hit:  a valid key, verified from the in-memory cache
 *   (c) cache miss: a valid key with the cache emptied before each request (database lookups)
 *   (d) GET /api/workspaces/:id with a key, cache hit and miss: what a real /api call costs,
 *       including the per-request membership read of `requirePermission` and the handler
 *
 * Run: npm run bench:keys   (or node --import tsx bench/keys-verify.bench.ts)
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { SCOPES } from '../src/modules/keys/index.ts';
import { memoryBus } from '../src/platform/bus/index.ts';
import { systemClock } from '../src/platform/clock.ts';
import { openPglite } from '../src/platform/db/db.ts';
import { migratePglite } from '../src/platform/db/migrate.ts';
import { createJobs } from '../src/platform/jobs/pgboss.ts';
import { createLogger } from '../src/platform/logger.ts';

const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 1500);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

async function main() {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'berth-bench-'));
  const config = loadConfig({ overrides: { BERTH_DATA_DIR: dataDir, BERTH_LOG_LEVEL: 'silent' } });
  const logger = createLogger({ level: 'silent' });
  const db = await openPglite();
  if (!db.pglite) throw new Error('PGlite expected');
  await migratePglite(db.pglite);
  const key = randomBytes(32);
  const bus = memoryBus();
  const deps = {
    config,
    db,
    logger,
    clock: systemClock,
    jobs: createJobs({ db, logger }),
    keyring: { current: { version: 1, key }, all: new Map([[1, key]]) },
    bus,
  };
  const app = await buildApp(deps);
  // The trivial route every mode calls: it answers whoever called.
  app.http.get('/bench/ping', { schema: { hide: true } }, async (req) => ({ auth: req.auth.kind }));
  await app.http.ready();

  const user = await app.modules.identity.service.createUser({
    email: 'bench@example.com',
    password: 'a long bench passphrase',
    isOperator: false,
    emailVerified: true,
  });
  const ws = await app.modules.workspaces.service.createWorkspace({ ownerUserId: user.id, name: 'Bench' });
  const { secret } = await app.modules.keys.service.createKey({
    scope: { workspaceId: ws.id, actor: { type: 'user', userId: user.id }, role: 'owner' },
    input: { name: 'Bench', scopes: [...SCOPES] },
  });

  const keyed = { authorization: `Bearer ${secret}` };
  const ping = '/bench/ping';
  const workspace = `/api/workspaces/${ws.id}`;
  const clear = () => app.modules.keys.service.clearCache();
  const none = () => undefined;
  const modes = {
    'no auth (baseline)': { url: ping, headers: {}, before: none, expect: 'anonymous' },
    'key, cache hit': { url: ping, headers: keyed, before: none, expect: 'api_key' },
    'key, cache miss': { url: ping, headers: keyed, before: clear, expect: 'api_key' },
    // A real /api call: key verification + the per-request membership read + the handler's query.
    'key, GET workspace': { url: workspace, headers: keyed, before: none, expect: ws.id },
    'key, miss, GET ws': { url: workspace, headers: keyed, before: clear, expect: ws.id },
  } as const;
  type Mode = keyof typeof modes;

  async function run(mode: Mode, ms: number): Promise<{ n: number; elapsed: number }> {
    const m = modes[mode];
    let n = 0;
    const start = performance.now();
    while (performance.now() - start < ms) {
      m.before();
      const res = await app.http.inject({ method: 'GET', url: m.url, headers: m.headers });
      const body = res.json() as { auth?: string; id?: string };
      if (res.statusCode !== 200 || (body.auth ?? body.id) !== m.expect) {
        throw new Error(`${mode}: ${res.statusCode} ${res.body}`);
      }
      n++;
    }
    return { n, elapsed: performance.now() - start };
  }

  // Warm up every path (JIT, caches, prepared plans), then interleave rounds so drift hits all modes alike.
  for (const mode of Object.keys(modes) as Mode[]) await run(mode, 300);
  const totals = new Map<Mode, { n: number; elapsed: number }>();
  for (let r = 0; r < ROUNDS; r++) {
    for (const mode of Object.keys(modes) as Mode[]) {
      const { n, elapsed } = await run(mode, ROUND_MS);
      const t = totals.get(mode) ?? { n: 0, elapsed: 0 };
      totals.set(mode, { n: t.n + n, elapsed: t.elapsed + elapsed });
    }
  }

  const rate = (mode: Mode) => {
    const t = totals.get(mode);
    return t ? (t.n * 1000) / t.elapsed : 0;
  };
  const base = rate('no auth (baseline)');
  console.log(`API key verification, ${ROUNDS} x ${ROUND_MS} ms per mode, embedded PGlite, Node ${process.version}`);
  console.log('mode                  req/s     vs baseline   us/request   added us');
  for (const mode of Object.keys(modes) as Mode[]) {
    const r = rate(mode);
    const us = 1e6 / r;
    console.log(
      `${mode.padEnd(20)} ${r.toFixed(0).padStart(7)}   ${(r / base).toFixed(3).padStart(9)}x   ${us.toFixed(1).padStart(9)}   ${(us - 1e6 / base).toFixed(1).padStart(8)}`,
    );
  }

  await app.http.close();
  await deps.jobs.stop();
  await bus.close();
  await db.close();
  rmSync(dataDir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
