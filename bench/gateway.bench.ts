/**
 * What Berth's gateway costs per chat completion, as ratios to a bare undici proxy measured
 * in the same run, both in front of the same fake OpenAI-compatible upstream:
 *
 *   direct          the load client talks to the fake upstream itself (the floor of the floor)
 *   proxy           a node:http server piping bodies to the upstream through an undici Pool
 *   berth/pglite    Berth with key auth, per-key rate limits (evaluated, never hit), credit
 *                   reservations (a funded memoryCredits) and usage recording, on embedded PGlite
 *   berth/postgres  the same on server Postgres, when BENCH_DATABASE_URL or TEST_DATABASE_URL
 *                   reaches one (the bench creates its own database and drops it afterwards)
 *
 * For each: sequential latency (p50/p99, and what it adds over direct), throughput at
 * concurrency 10 and 50, for JSON and SSE completions (SSE: time to first token and full
 * streams per second); then a long run against Berth sampling its resident memory.
 *
 * Every server runs in its own child process and the load client in this one: an
 * in-process client would share the servers' event loop, so its own work would count as
 * gateway latency and cap throughput at the sum of both, and the Berth process's RSS would
 * include the client's buffers and the fake's request log. On 2 cores three busy processes
 * (client, gateway, upstream) still compete for CPU; that hits the proxy and Berth alike,
 * which is why goals are ratios and why rounds interleave the targets.
 *
 * Run: npm run bench:gateway
 *   BENCH_QUICK=1               a smoke run of a few thousand requests (checks the path; figures too noisy to read)
 *   BENCH_ROUNDS                rounds per target (default 3, quick 1)
 *   BENCH_SEQ_REQUESTS          sequential requests per round and mode (default 600, quick 200)
 *   BENCH_TP_REQUESTS           requests per throughput run (default 3000, quick 600)
 *   BENCH_MEMORY_REQUESTS       requests of the memory run (default 200000, quick 3000)
 *   BENCH_MEMORY_ENGINES        Berth engines the memory run covers (default pglite; e.g. pglite,postgres)
 *   BENCH_BERTH_LOG_LEVEL       Berth's log level (default info, what a stock install logs; to /dev/null)
 *   BENCH_CPU_PROF=dir          writes a V8 CPU profile of each Berth process, from its first
 *                               request to its stop, to dir (open it in Chrome DevTools or speedscope)
 *   BENCH_DATABASE_URL / TEST_DATABASE_URL   server Postgres to also run Berth on
 *   BENCH_CREDITS=ledger|memory Berth's credit gate: the billing ledger a default install uses
 *                               (default), or a funded in-memory gate (the figures before the ledger)
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { Session } from 'node:inspector/promises';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { loadConfig } from '../src/config.ts';
import { startServer } from '../src/main.ts';
import { memoryCredits } from '../src/modules/gateway/index.ts';
import { generateKek } from '../src/modules/vault/index.ts';
import { startFakeOpenAi } from '../test/fakes/openai-upstream.ts';
import { benchDatabase } from './postgres.ts';

const env = process.env;
const QUICK = env.BENCH_QUICK === '1';
const num = (name: string, full: number, quick: number) => Number(env[name] ?? (QUICK ? quick : full));
const ROUNDS = num('BENCH_ROUNDS', 3, 1);
const SEQ = num('BENCH_SEQ_REQUESTS', 600, 200);
const TP = num('BENCH_TP_REQUESTS', 3000, 600);
const MEMORY = num('BENCH_MEMORY_REQUESTS', 200_000, 3000);
const MEMORY_ENGINES = (env.BENCH_MEMORY_ENGINES ?? 'pglite').split(',').map((e) => e.trim());
const LOG_LEVEL = env.BENCH_BERTH_LOG_LEVEL ?? 'info';
const CPU_PROF = env.BENCH_CPU_PROF;
const CREDITS = env.BENCH_CREDITS === 'memory' ? 'memory' : 'ledger';
/** How often the memory run samples Berth's RSS; a quick run is seconds long, so it samples faster. */
const SAMPLE_MS = QUICK ? 250 : 1000;
const CONCURRENCY = [10, 50] as const;
/** Far above anything the run spends: reservations are made and settled, never refused. */
const GRANT_MICROS = 10_000_000_000_000;
/** Evaluated on every request, never reached (the schema's maximum). */
const HIGH_LIMIT = 1_000_000_000;
const MODEL = 'gpt-4o-mini';
const PROMPT = 'Describe in a few plain words how the harbour looks at dawn when the boats come back in';

// ---------------------------------------------------------------------------------------
// Child processes: the fake upstream, the bare proxy, Berth. Each reports `ready` over IPC.

type ChildSpec =
  | { role: 'upstream' }
  | { role: 'proxy'; upstream: string }
  | {
      role: 'berth';
      engine: string;
      databaseUrl: string | null;
      logLevel: string;
      cpuProf: string | null;
      credits: 'ledger' | 'memory';
    };

/** A child's process figures: memory, CPU time so far (user + system), and Berth's credit gate. */
type Stats = { rss: number; heapUsed: number; cpuMs: number; openReservations: number; balance: number };
type FromChild = { type: 'ready'; url: string; workspaceId?: string; apiKey?: string } | ({ type: 'stats' } & Stats);
type ToChild = { type: 'stats' } | { type: 'stop' };

function isMessage<T extends { type: string }>(m: unknown): m is T {
  return typeof m === 'object' && m !== null && 'type' in m && typeof m.type === 'string';
}

function send(message: FromChild) {
  process.send?.(message);
}

/** Serves until the parent asks to stop (or goes away), then cleans up. */
function serveUntilStopped(stop: () => Promise<void>, stats: () => Stats | Promise<Stats> = processStats) {
  let stopping = false;
  const end = async () => {
    if (stopping) return;
    stopping = true;
    await stop().catch((err: unknown) => console.error(err));
    process.exit(0);
  };
  process.on('message', (m: unknown) => {
    if (!isMessage<ToChild>(m)) return;
    if (m.type === 'stats') void Promise.resolve(stats()).then((s) => send({ type: 'stats', ...s }));
    else void end();
  });
  process.on('disconnect', () => void end());
}

function processStats(): Stats {
  const m = process.memoryUsage();
  const cpu = process.cpuUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, cpuMs: (cpu.user + cpu.system) / 1000, openReservations: 0, balance: 0 };
}

async function runUpstream() {
  const fake = await startFakeOpenAi();
  // The fake logs every request it receives; cleared so a long run stays about the gateway.
  setInterval(() => {
    fake.received.length = 0;
  }, 1000).unref();
  serveUntilStopped(() => fake.close());
  send({ type: 'ready', url: fake.url });
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'host',
]);

function endToEnd(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>) {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/** The floor for a Node gateway: no parsing, no checks, bodies streamed both ways. */
async function runProxy(upstream: string) {
  // The same pool shape as Berth's OpenAI-compatible adapter.
  const pool = new Pool(upstream, { connections: 64, pipelining: 1 });
  const server = createServer(async (req, res) => {
    // Request bodies are read whole before they go on (a chat request is small, and Berth must
    // read it whole to parse it); this measured as fast as or faster than handing undici the stream.
    const parts: Buffer[] = [];
    for await (const c of req) parts.push(c as Buffer);
    const body = Buffer.concat(parts);
    pool
      .request({ method: req.method ?? 'GET', path: req.url ?? '/', headers: endToEnd(req.headers), body })
      .then(async (up) => {
        res.writeHead(up.statusCode, endToEnd(up.headers));
        await pipeline(up.body, res);
      })
      .catch(() => {
        if (res.headersSent) res.destroy();
        else res.writeHead(502).end();
      });
  });
  // Fastify's default, so both servers keep the client's connections alike.
  server.keepAliveTimeout = 72_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  serveUntilStopped(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await pool.close();
  });
  send({ type: 'ready', url: `http://127.0.0.1:${port}` });
}

/** A V8 CPU profile of this process from now until `stop` (start-up and migrations stay out of it). */
async function startProfile(file: string): Promise<() => Promise<void>> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
  };
}

async function runBerth(spec: Extract<ChildSpec, { role: 'berth' }>) {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'berth-bench-gw-'));
  // Empty at start: the workspace exists only after setup, then it is funded. With the
  // ledger (a default install), calls are held against credit leases that the replica
  // reserves and settles on the database (a reservation per call where budgets apply).
  const memory = spec.credits === 'memory' ? memoryCredits() : null;
  const config = loadConfig({
    overrides: {
      BERTH_DATA_DIR: dataDir,
      BERTH_HOST: '127.0.0.1',
      BERTH_PORT: 0,
      BERTH_LOG_LEVEL: spec.logLevel,
      BERTH_EGRESS_ALLOW: '127.0.0.1',
      BERTH_FREE_CREDITS_USD: '0',
      ...(spec.databaseUrl ? { DATABASE_URL: spec.databaseUrl, BERTH_KEK: generateKek(1) } : {}),
    },
  });
  const server = await startServer(config, memory ? { credits: memory } : {});
  const admin = await server.app.modules.setup.service.createFirstAdmin({
    email: 'bench@example.com',
    password: 'a long bench passphrase',
    workspaceName: 'Bench',
  });
  const ledger = server.app.modules.billing.ledger;
  if (memory) memory.grant(admin.workspaceId, GRANT_MICROS);
  else {
    await ledger.grant({
      workspaceId: admin.workspaceId,
      amountMicros: GRANT_MICROS,
      idempotencyKey: 'bench-funding',
      actor: { type: 'system', name: 'bench' },
    });
  }
  const stopProfile = spec.cpuProf
    ? await startProfile(path.join(spec.cpuProf, `berth-${spec.engine}-${process.pid}.cpuprofile`))
    : null;
  serveUntilStopped(
    async () => {
      await stopProfile?.();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
    async () => {
      if (memory) {
        return {
          ...processStats(),
          openReservations: memory.openReservations(),
          balance: memory.balance(admin.workspaceId),
        };
      }
      // Leases are settled first (as at shutdown); then held credits are the open
      // reservations' worst cases: zero when none is left open.
      await server.app.modules.gateway.service.idle();
      const b = await ledger.balance(admin.workspaceId);
      return { ...processStats(), openReservations: b.heldMicros, balance: b.availableMicros };
    },
  );
  send({ type: 'ready', url: server.url, workspaceId: admin.workspaceId, apiKey: admin.apiKey });
}

type Child = {
  ready: Extract<FromChild, { type: 'ready' }>;
  stats(): Promise<Stats>;
  stop(): Promise<void>;
};

function spawnChild(spec: ChildSpec): Promise<Child> {
  const execArgv = ['--import', 'tsx'];
  // Berth's request log goes to /dev/null: written (as in production), but not onto the bench's output.
  const stdout = spec.role === 'berth' ? 'ignore' : 'inherit';
  const proc: ChildProcess = fork(fileURLToPath(import.meta.url), ['child', JSON.stringify(spec)], {
    execArgv,
    stdio: ['ignore', stdout, 'inherit', 'ipc'],
  });
  const waiting: Array<(m: Stats) => void> = [];
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`${spec.role} exited with ${code} before it was ready`));
    proc.once('exit', onExit);
    proc.on('message', (m: unknown) => {
      if (!isMessage<FromChild>(m)) return;
      if (m.type === 'stats') waiting.shift()?.(m);
      else {
        proc.off('exit', onExit);
        resolve({
          ready: m,
          stats: () =>
            new Promise<Stats>((res) => {
              waiting.push(res);
              proc.send({ type: 'stats' } satisfies ToChild);
            }),
          stop: () =>
            new Promise<void>((res) => {
              if (proc.exitCode !== null) return res();
              proc.once('exit', () => res());
              proc.send({ type: 'stop' } satisfies ToChild);
            }),
        });
      }
    });
  });
}

// ---------------------------------------------------------------------------------------
// The load client.

type Mode = 'json' | 'stream';
/** `server` is the process answering the target's requests; `berth` is set for Berth targets. */
type Target = { name: string; url: string; server: Child; berth?: Child };
type Run = { latencies: number[]; ttfts: number[]; elapsedMs: number; errors: number };

const BODIES: Record<Mode, string> = {
  json: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: PROMPT }], max_tokens: 256 }),
  stream: JSON.stringify({
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 256,
    stream: true,
    stream_options: { include_usage: true },
  }),
};

const errorSamples: string[] = [];
let totalErrors = 0;
let totalRequests = 0;
const sent = new Map<string, number>();

function noteError(target: string, what: string) {
  totalErrors++;
  if (errorSamples.length < 10) errorSamples.push(`${target}: ${what}`);
}

/** The first delta that carries text (the role frame's empty content does not count). */
const FIRST_TOKEN = /"content":"[^"]/;

/** One completion; returns its latency and time to first token (streams), or null on an error. */
async function complete(
  pool: Pool,
  target: string,
  mode: Mode,
  auth: string,
): Promise<{ latency: number; ttft: number } | null> {
  totalRequests++;
  sent.set(target, (sent.get(target) ?? 0) + 1);
  const started = performance.now();
  try {
    const res = await pool.request({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { 'content-type': 'application/json', authorization: auth },
      body: BODIES[mode],
    });
    if (mode === 'json') {
      const text = await res.body.text();
      const latency = performance.now() - started;
      if (res.statusCode !== 200 || !text.includes('"echo: ')) {
        noteError(target, `${res.statusCode} ${text.slice(0, 200)}`);
        return null;
      }
      return { latency, ttft: latency };
    }
    let ttft = -1;
    let tail = '';
    for await (const chunk of res.body) {
      const s = String(chunk);
      if (ttft < 0 && FIRST_TOKEN.test(s)) ttft = performance.now() - started;
      tail = (tail + s).slice(-64);
    }
    const latency = performance.now() - started;
    if (res.statusCode !== 200 || ttft < 0 || !tail.includes('data: [DONE]')) {
      noteError(target, `stream ${res.statusCode} ${tail}`);
      return null;
    }
    return { latency, ttft };
  } catch (err) {
    noteError(target, err instanceof Error ? err.message : String(err));
    return null;
  }
}

/** `count` completions over `concurrency` connections, each worker sending its next as soon as one ends. */
async function load(
  target: Target,
  mode: Mode | 'mixed',
  concurrency: number,
  count: number,
  auth: string,
  onDone?: (done: number) => void,
): Promise<Run> {
  const pool = new Pool(target.url, { connections: concurrency, pipelining: 1 });
  const run: Run = { latencies: [], ttfts: [], elapsedMs: 0, errors: 0 };
  let started = 0;
  let done = 0;
  const worker = async () => {
    while (started < count) {
      started++;
      // The memory run mixes in one stream in four.
      const m: Mode = mode === 'mixed' ? (started % 4 === 0 ? 'stream' : 'json') : mode;
      const r = await complete(pool, target.name, m, auth);
      if (r) {
        run.latencies.push(r.latency);
        if (m === 'stream') run.ttfts.push(r.ttft);
      } else run.errors++;
      onDone?.(++done);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  run.elapsedMs = performance.now() - t0;
  await pool.close();
  return run;
}

// ---------------------------------------------------------------------------------------
// Setting Berth up through its API, as an operator would.

async function api<T>(url: string, key: string, method: 'GET' | 'POST', route: string, body?: unknown): Promise<T> {
  const pool = new Pool(url, { connections: 1 });
  try {
    const res = await pool.request({
      method,
      path: route,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const text = await res.body.text();
    if (res.statusCode >= 300) throw new Error(`${method} ${route}: ${res.statusCode} ${text}`);
    return JSON.parse(text) as T;
  } finally {
    await pool.close();
  }
}

/** Connects the fake upstream as a provider and issues a rate-limited gateway key; returns its bearer header. */
async function configureBerth(berth: Child, upstream: string): Promise<string> {
  const { url, workspaceId, apiKey } = berth.ready;
  if (!workspaceId || !apiKey) throw new Error('Berth did not report its workspace');
  await api(url, apiKey, 'POST', `/api/workspaces/${workspaceId}/providers`, {
    name: 'fake',
    adapter: 'openai-compatible',
    baseUrl: `${upstream}/v1`,
    apiKey: 'sk-bench-upstream',
    models: [MODEL],
  });
  const key = await api<{ secret: string }>(url, apiKey, 'POST', `/api/workspaces/${workspaceId}/keys`, {
    name: 'bench',
    scopes: ['gateway:invoke'],
    rateLimitRpm: HIGH_LIMIT,
    rateLimitTpm: HIGH_LIMIT,
  });
  // Proof that the limits are evaluated on this path: the answer carries the key's window.
  const pool = new Pool(url, { connections: 1 });
  const res = await pool.request({
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}` },
    body: BODIES.json,
  });
  await res.body.dump();
  await pool.close();
  if (res.statusCode !== 200 || res.headers['x-ratelimit-limit-requests'] !== String(HIGH_LIMIT)) {
    throw new Error(`Berth's first completion: ${res.statusCode}, rate limit headers missing`);
  }
  return `Bearer ${key.secret}`;
}

/** What Berth metered and reserved over the run, against what the bench sent it. */
async function checkAccounting(target: Target): Promise<string> {
  const { url, workspaceId, apiKey } = target.berth?.ready ?? {};
  if (!target.berth || !url || !workspaceId || !apiKey) return '';
  // The usage report flushes the journal first, so every finished call is counted.
  const usage = await api<{ data: Array<{ requests?: number }> }>(
    url,
    apiKey,
    'GET',
    `/api/workspaces/${workspaceId}/usage?groupBy=model`,
  );
  const metered = usage.data.reduce((n, row) => n + (row.requests ?? 0), 0);
  const m = await target.berth.stats();
  return `${target.name}: ${metered} usage events for ${sent.get(target.name) ?? 0} requests sent (+1 check), credits spent ${GRANT_MICROS - m.balance} micros (${CREDITS} gate), left open ${m.openReservations} ${CREDITS === 'ledger' ? 'micros held' : 'reservations'}`;
}

// ---------------------------------------------------------------------------------------
// Figures.

function percentile(values: number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}

function median(values: number[]): number {
  return percentile(values, 0.5);
}

type Figures = {
  seq: Record<Mode, { latencies: number[]; ttfts: number[] }>;
  rps: Record<Mode, Record<number, number[]>>;
  errors: number;
};

function emptyFigures(): Figures {
  const rps = () => Object.fromEntries(CONCURRENCY.map((c) => [c, [] as number[]]));
  return {
    seq: { json: { latencies: [], ttfts: [] }, stream: { latencies: [], ttfts: [] } },
    rps: { json: rps(), stream: rps() },
    errors: 0,
  };
}

async function measureRound(target: Target, auth: string, f: Figures) {
  for (const mode of ['json', 'stream'] as const) {
    const seq = await load(target, mode, 1, SEQ, auth);
    f.seq[mode].latencies.push(...seq.latencies);
    f.seq[mode].ttfts.push(...seq.ttfts);
    f.errors += seq.errors;
    for (const c of CONCURRENCY) {
      const run = await load(target, mode, c, TP, auth);
      f.rps[mode][c]?.push(((TP - run.errors) * 1000) / run.elapsedMs);
      f.errors += run.errors;
    }
  }
}

type MemoryRun = { target: string; samples: Array<{ done: number } & Stats>; errors: number; elapsedMs: number };

/** A long run at c=10, sampling the Berth process's memory every SAMPLE_MS. */
async function memoryRun(target: Target, auth: string): Promise<MemoryRun> {
  const berth = target.berth;
  if (!berth) throw new Error('memory run needs a Berth target');
  const samples: MemoryRun['samples'] = [];
  let done = 0;
  let sampling = false;
  const timer = setInterval(() => {
    if (sampling) return;
    sampling = true;
    const at = done;
    void berth.stats().then((m) => {
      samples.push({ done: at, ...m });
      sampling = false;
    });
  }, SAMPLE_MS);
  const run = await load(target, 'mixed', 10, MEMORY, auth, (n) => {
    done = n;
  });
  clearInterval(timer);
  samples.push({ done, ...(await berth.stats()) });
  return { target: target.name, samples, errors: run.errors, elapsedMs: run.elapsedMs };
}

/** Other work on the machine shows up here; a busy machine makes every figure noisier. */
const loadLine = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(3) : 'n/a');
const mb = (v: number) => `${(v / 1024 / 1024).toFixed(1)} MB`;
const pct = (v: number, base: number) => `${v >= base ? '+' : ''}${(((v - base) / base) * 100).toFixed(1)}%`;
const pad = (s: string, n: number) => s.padStart(n);

async function main() {
  const started = Date.now();
  const upstream = await spawnChild({ role: 'upstream' });
  const proxy = await spawnChild({ role: 'proxy', upstream: upstream.ready.url });
  const children: Child[] = [upstream, proxy];
  const targets: Target[] = [
    { name: 'direct', url: upstream.ready.url, server: upstream },
    { name: 'proxy', url: proxy.ready.url, server: proxy },
  ];
  const auths = new Map<string, string>();
  const database = await benchDatabase();
  if (CPU_PROF) mkdirSync(CPU_PROF, { recursive: true });
  try {
    for (const engine of database ? ['pglite', 'postgres'] : ['pglite']) {
      const berth = await spawnChild({
        role: 'berth',
        engine,
        databaseUrl: engine === 'postgres' ? (database?.url ?? null) : null,
        logLevel: LOG_LEVEL,
        cpuProf: CPU_PROF ? path.resolve(CPU_PROF) : null,
        credits: CREDITS,
      });
      children.push(berth);
      const name = `berth/${engine}`;
      auths.set(name, await configureBerth(berth, upstream.ready.url));
      targets.push({ name, url: berth.ready.url, server: berth, berth });
    }
    // Every target gets the same header, so the bytes on the wire match.
    const authOf = (t: Target) => auths.get(t.name) ?? auths.get('berth/pglite') ?? '';

    console.log(
      `Gateway benchmark ${new Date().toISOString()}  Node ${process.version}  ${cpus().length} CPUs  ${QUICK ? 'QUICK' : 'full'}: ${ROUNDS} round(s), ${SEQ} sequential + ${CONCURRENCY.length} x ${TP} concurrent per mode, memory ${MEMORY}`,
    );
    console.log(
      `Berth log level ${LOG_LEVEL}; server Postgres: ${database ? database.host : 'not configured'}; load average at start ${loadLine()}`,
    );

    // Warm-up: JIT, connection pools, Berth's key and provider caches, PGlite's plans.
    for (const t of targets) {
      for (const mode of ['json', 'stream'] as const) {
        const w = await load(t, mode, 10, QUICK ? 200 : 1000, authOf(t));
        if (w.errors > 0) throw new Error(`${t.name} fails during warm-up: ${errorSamples.join('; ')}`);
      }
    }

    const figures = new Map(targets.map((t) => [t.name, emptyFigures()]));
    // CPU time is what a busy machine distorts least: a descheduled process waits, but spends nothing.
    const cpuAt = async () =>
      new Map(await Promise.all(targets.map(async (t) => [t.name, (await t.server.stats()).cpuMs] as const)));
    const cpu0 = await cpuAt();
    const sent0 = new Map(sent);
    for (let r = 0; r < ROUNDS; r++) {
      // Rotate the order so slow drift of the machine hits every target alike.
      for (let i = 0; i < targets.length; i++) {
        const t = targets[(i + r) % targets.length] as Target;
        await measureRound(t, authOf(t), figures.get(t.name) ?? emptyFigures());
      }
    }
    const cpu1 = await cpuAt();
    const sentInRounds = (name: string) => (sent.get(name) ?? 0) - (sent0.get(name) ?? 0);
    const cpuPerRequest = new Map(
      targets.map((t) => {
        // The upstream serves every target: its CPU is divided by all the requests of the rounds.
        const requests =
          t.name === 'direct' ? targets.reduce((n, x) => n + sentInRounds(x.name), 0) : sentInRounds(t.name);
        return [t.name, (((cpu1.get(t.name) ?? 0) - (cpu0.get(t.name) ?? 0)) * 1000) / requests] as const;
      }),
    );

    const memoryRuns: MemoryRun[] = [];
    for (const t of targets) {
      if (t.berth && MEMORY_ENGINES.includes(t.name.slice('berth/'.length))) {
        memoryRuns.push(await memoryRun(t, authOf(t)));
      }
    }

    report(targets, figures, cpuPerRequest, memoryRuns);
    console.log('\naccounting (rate limits, reservations and usage events were on for every Berth call):');
    for (const t of targets) if (t.berth) console.log(`  ${await checkAccounting(t)}`);
    console.log(
      `total ${totalRequests} requests, ${totalErrors} errors, ${((Date.now() - started) / 1000).toFixed(0)} s; load average at end ${loadLine()}`,
    );
    if (errorSamples.length > 0) console.log(`first errors:\n  ${errorSamples.join('\n  ')}`);
  } finally {
    for (const c of children.reverse()) await c.stop();
    await database?.drop();
  }
  process.exitCode = totalErrors > 0 ? 1 : 0;
}

function report(
  targets: Target[],
  figures: Map<string, Figures>,
  cpuPerRequest: Map<string, number>,
  memoryRuns: MemoryRun[],
) {
  const fig = (name: string) => figures.get(name) ?? emptyFigures();
  const p = (name: string, mode: Mode, q: number, which: 'latencies' | 'ttfts' = 'latencies') =>
    percentile(fig(name).seq[mode][which], q);
  const rps = (name: string, mode: Mode, c: number) => median(fig(name).rps[mode][c] ?? []);
  const added = (name: string, mode: Mode, q: number, which: 'latencies' | 'ttfts' = 'latencies') =>
    p(name, mode, q, which) - p('direct', mode, q, which);

  console.log(
    '\nJSON chat completions: sequential latency (ms; + = added over direct) and throughput (req/s, median of rounds)',
  );
  console.log('target               p50       p99      +p50      +p99     c=10 req/s  c=50 req/s  errors');
  for (const t of targets) {
    const n = t.name;
    console.log(
      `${n.padEnd(16)}${pad(ms(p(n, 'json', 0.5)), 8)}${pad(ms(p(n, 'json', 0.99)), 10)}${pad(ms(added(n, 'json', 0.5)), 10)}${pad(ms(added(n, 'json', 0.99)), 10)}${pad(rps(n, 'json', 10).toFixed(0), 13)}${pad(rps(n, 'json', 50).toFixed(0), 12)}${pad(String(fig(n).errors), 8)}`,
    );
  }
  console.log('\nSSE chat completions: sequential time to first token and full stream (ms), throughput (streams/s)');
  console.log('target           TTFT p50  +TTFT p50  full p50  +full p50  c=10 str/s  c=50 str/s');
  for (const t of targets) {
    const n = t.name;
    console.log(
      `${n.padEnd(16)}${pad(ms(p(n, 'stream', 0.5, 'ttfts')), 9)}${pad(ms(added(n, 'stream', 0.5, 'ttfts')), 11)}${pad(ms(p(n, 'stream', 0.5)), 10)}${pad(ms(added(n, 'stream', 0.5)), 11)}${pad(rps(n, 'stream', 10).toFixed(0), 12)}${pad(rps(n, 'stream', 50).toFixed(0), 12)}`,
    );
  }

  console.log('\nCPU per request of the serving process during the rounds (user + system, us; JSON and SSE alike)');
  const proxyCpu = cpuPerRequest.get('proxy') ?? Number.NaN;
  for (const t of targets) {
    const us = cpuPerRequest.get(t.name) ?? Number.NaN;
    const label = t.name === 'direct' ? 'upstream (every request of the rounds)' : t.name;
    const vs = t.berth ? `   ${(us / proxyCpu).toFixed(2)}x the proxy's, +${(us - proxyCpu).toFixed(0)} us` : '';
    console.log(`${label.padEnd(40)}${pad(us.toFixed(0), 6)}${vs}`);
  }

  console.log(
    "\nBerth as a ratio to the bare proxy (added latency: x times the proxy's; throughput: share of the proxy's)",
  );
  const goals: string[] = [];
  const goal = (ok: boolean | 'skip', text: string) =>
    goals.push(`${ok === 'skip' ? 'SKIP' : ok ? 'PASS' : 'FAIL'}  ${text}`);
  for (const t of targets.filter((x) => x.berth)) {
    const n = t.name;
    const ratio = (mode: Mode, which: 'latencies' | 'ttfts') =>
      added(n, mode, 0.5, which) / added('proxy', mode, 0.5, which);
    const share = (mode: Mode, c: number) => rps(n, mode, c) / rps('proxy', mode, c);
    console.log(
      `${n.padEnd(16)} json: +p50 ${ratio('json', 'latencies').toFixed(2)}x  c=10 ${share('json', 10).toFixed(2)}  c=50 ${share('json', 50).toFixed(2)}   sse: +TTFT p50 ${ratio('stream', 'ttfts').toFixed(2)}x  +full p50 ${ratio('stream', 'latencies').toFixed(2)}x  c=10 ${share('stream', 10).toFixed(2)}  c=50 ${share('stream', 50).toFixed(2)}`,
    );
    for (const mode of ['json', 'stream'] as const) {
      const which = mode === 'json' ? 'latencies' : 'ttfts';
      const label = mode === 'json' ? 'added p50 latency' : 'added p50 time to first token';
      goal(
        ratio(mode, which) <= 2,
        `${n} ${mode}: ${label} ${ms(added(n, mode, 0.5, which))} ms = ${ratio(mode, which).toFixed(2)}x the proxy's ${ms(added('proxy', mode, 0.5, which))} ms (goal <= 2x)`,
      );
      goal(
        share(mode, 10) >= 0.5,
        `${n} ${mode}: throughput at c=10 ${rps(n, mode, 10).toFixed(0)}/s = ${(share(mode, 10) * 100).toFixed(0)}% of the proxy's ${rps('proxy', mode, 10).toFixed(0)}/s (goal >= 50%)`,
      );
    }
  }

  for (const m of memoryRuns) {
    const total = m.samples.at(-1)?.done ?? 0;
    const within = (from: number, to: number) =>
      m.samples.filter((s) => s.done >= total * from && s.done <= total * to);
    const peakOf = (xs: Stats[], pick: (s: Stats) => number = (s) => s.rss) =>
      xs.length ? Math.max(...xs.map(pick)) : Number.NaN;
    const lowOf = (xs: Stats[]) => (xs.length ? Math.min(...xs.map((s) => s.rss)) : Number.NaN);
    // Warm-up is the first fifth: heaps, pools, caches and PGlite's buffers reach their working size.
    // After it, RSS saw-tooths with V8's old generation (tens of MB between major collections), so a
    // single sample says little; "flat" is judged on the envelope: the peak of each later fifth
    // against the peak of the fifth right after warm-up. A leak lifts every later peak.
    const fifths = [1, 2, 3, 4].map((i) => within(i / 5, (i + 1) / 5));
    const base = peakOf(fifths[0] ?? []);
    const peaks = fifths.map((f) => peakOf(f));
    const worst = Math.max(...peaks.slice(1));
    const after = within(0.2, 1);
    const first = m.samples[0];
    const end = m.samples.at(-1);
    console.log(
      `\nmemory ${m.target}: ${total} requests (1 in 4 streamed) at c=10 in ${(m.elapsedMs / 1000).toFixed(0)} s, ${m.samples.length} samples; rss first ${mb(first?.rss ?? 0)}, after warm-up between ${mb(lowOf(after))} and ${mb(peakOf(after))} (swing ${pct(peakOf(after), lowOf(after))}), last ${mb(end?.rss ?? 0)}; heap used first ${mb(first?.heapUsed ?? 0)}, last ${mb(end?.heapUsed ?? 0)}; open reservations at end ${end?.openReservations ?? 'n/a'}`,
    );
    const tenths = Array.from({ length: 10 }, (_, i) => within(i / 10, (i + 1) / 10));
    const shape = (pick: (s: Stats) => number) =>
      tenths.map((t) => (t.length ? (peakOf(t, pick) / 1024 / 1024).toFixed(0) : '-')).join(' ');
    console.log(`  rss by tenth of the run (max, MB):       ${shape((s) => s.rss)}`);
    console.log(`  heap used by tenth of the run (max, MB): ${shape((s) => s.heapUsed)}`);
    // A fifth with a handful of samples has no envelope to speak of (quick runs).
    const judged = fifths.every((f) => f.length >= 4);
    goal(
      judged ? worst <= base * 1.1 : 'skip',
      `${m.target} memory: ${judged ? '' : 'run too short to judge (raise BENCH_MEMORY_REQUESTS); '}rss peak per fifth after warm-up ${peaks.map((v) => (v / 1024 / 1024).toFixed(0)).join(' ')} MB, highest later peak ${pct(worst, base)} over the first (goal <= +10%)`,
    );
  }
  goal(totalErrors === 0, `zero errors: ${totalErrors} of ${totalRequests} requests failed`);
  console.log(`\n${goals.join('\n')}`);
}

if (process.argv[2] === 'child') {
  const spec = JSON.parse(process.argv[3] ?? '{}') as ChildSpec;
  const start =
    spec.role === 'upstream' ? runUpstream() : spec.role === 'proxy' ? runProxy(spec.upstream) : runBerth(spec);
  start.catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
