import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, type FSWatcher, mkdirSync, readdirSync, readFileSync, rmSync, watch } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOpenAi, startFakeOpenAi } from '../fakes/openai-upstream.ts';
import { BIN, berth, cleanEnv, migratedDataDir } from '../helpers/cli.ts';

// The gateway's promise under a crash: a response the client received in full has exactly
// one usage event, even when the process is killed (SIGKILL) right after. A real `berth
// start` child on PGlite is killed under load, restarted on the same data dir (which
// replays the usage journal), and the client's own ledger is reconciled with the events the
// usage API returns: zero lost, zero duplicated.

const CONCURRENCY = 12;

type Server = {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<number | null>;
};

/** What the client saw of one request. */
type ClientRecord = {
  round: number;
  marker: string;
  stream: boolean;
  /** `x-request-id` of the response, null when no response headers arrived. */
  requestId: string | null;
  /** 200, the whole body read, and its content is this request's answer. */
  complete: boolean;
};

type UsageEvent = { requestId: string; status: number; stream: boolean; endpoint: string };
type UsagePage = { data: UsageEvent[]; nextCursor: string | null };
type ChatChunk = { choices?: { delta?: { content?: string } }[] };
type ChatCompletion = { choices?: { message?: { content?: string | null } }[] };

const children = new Set<ChildProcess>();

function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Starts `berth start` and resolves once it printed its URL and answers /readyz. */
async function startBerth(env: Record<string, string>): Promise<Server> {
  const child = spawn(process.execPath, [BIN, 'start', '--port', '0'], { env: cleanEnv(env) });
  children.add(child);
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out.slice(-4000)}`)), 90_000);
    const onData = (d: Buffer) => {
      out += d;
      const m = out.match(/Berth (http:\/\/127\.0\.0\.1:\d+) is running/);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code ?? signal}: ${out.slice(-4000)}`));
    });
  });
  for (let i = 0; ; i++) {
    const ready = await fetch(`${url}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ready) break;
    if (i > 300) throw new Error('server never became ready');
    await sleep(100);
  }
  return { child, url, output: () => out, exited };
}

/** The `events` count of the start-up log line, or null when the journal was empty. */
function replayedFromLog(output: string): number | null {
  for (const line of output.split('\n')) {
    if (!line.includes('usage events replayed from the journal')) continue;
    const parsed = JSON.parse(line) as { events?: unknown };
    if (typeof parsed.events === 'number') return parsed.events;
  }
  return null;
}

/** Complete journal lines a killed process left behind (a line cut short by the kill does not count). */
function journalLeft(journalDir: string): { segments: number; lines: number } {
  if (!existsSync(journalDir)) return { segments: 0, lines: 0 };
  let segments = 0;
  let lines = 0;
  for (const name of readdirSync(journalDir)) {
    if (!name.endsWith('.jsonl')) continue;
    if (name.startsWith('segment-')) segments += 1;
    for (const line of readFileSync(path.join(journalDir, name), 'utf8').split('\n')) {
      if (line === '') continue;
      try {
        JSON.parse(line);
        lines += 1;
      } catch {
        // cut short by the kill
      }
    }
  }
  return { segments, lines };
}

async function readSse(res: Response): Promise<{ done: boolean; content: string }> {
  const body = res.body;
  if (!body) return { done: false, content: '' };
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let content = '';
  let done = false;
  for (;;) {
    const { value, done: end } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    let idx = buffer.indexOf('\n\n');
    while (idx >= 0) {
      const frame = buffer.slice(0, idx);
      buffer = buffer.slice(idx + 2);
      idx = buffer.indexOf('\n\n');
      if (!frame.startsWith('data: ')) continue;
      const data = frame.slice(6);
      if (data === '[DONE]') {
        done = true;
        continue;
      }
      const chunk = JSON.parse(data) as ChatChunk;
      for (const c of chunk.choices ?? []) content += c.delta?.content ?? '';
    }
    if (end) break;
  }
  return { done, content };
}

describe('happy', () => {
  let dataDir = '';
  let journalDir = '';
  let fake: FakeOpenAi | null = null;
  let server: Server | null = null;
  let env: Record<string, string> = {};
  let workspaceId = '';
  let apiKey = '';
  /** Every request sent while a server was up, across the rounds: the client's ledger. */
  const ledger: ClientRecord[] = [];

  beforeAll(async () => {
    dataDir = await migratedDataDir('berth-usage-durability-');
    journalDir = path.join(dataDir, 'usage-journal');
    fake = await startFakeOpenAi();
    // info: the start-up line that counts replayed events is an info line.
    env = { BERTH_DATA_DIR: dataDir, BERTH_EGRESS_ALLOW: '127.0.0.1', BERTH_LOG_LEVEL: 'info' };
    const created = await berth(
      ['admin', 'create', '--email', 'meter@example.com', '--workspace', 'Metered', '--json'],
      { BERTH_DATA_DIR: dataDir },
      'correct horse battery staple\n',
    );
    expect(created.code, created.stderr).toBe(0);
    const ids = JSON.parse(created.stdout) as { workspaceId: string; apiKey: string };
    workspaceId = ids.workspaceId;
    apiKey = ids.apiKey;

    server = await startBerth(env);
    const added = await fetch(`${server.url}/api/workspaces/${workspaceId}/providers`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'fake', adapter: 'openai-compatible', baseUrl: fake.baseUrl, models: ['gpt-4o'] }),
    });
    expect(added.status, await added.text()).toBe(201);
  }, 180_000);

  afterAll(async () => {
    for (const child of children) {
      if (running(child)) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await gone;
      }
    }
    await fake?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  function current(): Server {
    if (!server) throw new Error('no server');
    return server;
  }

  function upstreamChats(): number {
    return (fake?.received ?? []).filter((r) => r.method === 'POST' && r.path.endsWith('/chat/completions')).length;
  }

  /** One request; its outcome goes into the ledger whatever happens. */
  async function chat(url: string, round: number, loop: number, i: number, signal: AbortSignal): Promise<ClientRecord> {
    const stream = (loop + i) % 2 === 0;
    const marker = `durable-${round}-${loop}-${i}-${randomBytes(6).toString('hex')}`;
    const record: ClientRecord = { round, marker, stream, requestId: null, complete: false };
    ledger.push(record);
    try {
      const res = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: marker }],
          stream,
          ...(stream && i % 4 < 2 ? { stream_options: { include_usage: true } } : {}),
        }),
        signal,
      });
      record.requestId = res.headers.get('x-request-id');
      if (stream) {
        const { done, content } = await readSse(res);
        record.complete = res.status === 200 && done && content === `echo: ${marker}`;
      } else {
        const body = (await res.json()) as ChatCompletion;
        record.complete = res.status === 200 && body.choices?.[0]?.message?.content === `echo: ${marker}`;
      }
    } catch {
      // Connection reset by the kill, or stopped by the test: not complete.
    }
    return record;
  }

  /**
   * Drives CONCURRENCY loops against the server until `killWhen` resolves, then SIGKILLs it
   * and lets the loops finish. Requests started after the kill are not sent.
   */
  async function loadThenKill(round: number, killWhen: (completed: () => number) => Promise<void>) {
    const target = current();
    let killed = false;
    const stop = new AbortController();
    let completed = 0;
    const loops = Array.from({ length: CONCURRENCY }, async (_, loop) => {
      for (let i = 0; !killed; i++) {
        const r = await chat(target.url, round, loop, i, stop.signal);
        if (r.complete) completed += 1;
      }
    });
    await killWhen(() => completed);
    killed = true;
    target.child.kill('SIGKILL');
    await target.exited;
    // A connection the kill did not reset would hang: cut everything left after a grace period.
    const grace = setTimeout(() => stop.abort(), 30_000);
    await Promise.all(loops);
    clearTimeout(grace);
    server = null;
    return { completedBeforeKill: completed };
  }

  async function allUsage(url: string): Promise<UsageEvent[]> {
    const events: UsageEvent[] = [];
    let cursor: string | null = null;
    for (;;) {
      const q: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
      const res = await fetch(`${url}/api/workspaces/${workspaceId}/usage?limit=1000${q}`, {
        headers: { authorization: `Bearer ${apiKey}` },
      });
      expect(res.status).toBe(200);
      const page = (await res.json()) as UsagePage;
      events.push(...page.data);
      if (!page.nextCursor) return events;
      cursor = page.nextCursor;
    }
  }

  /** Restarts on the same data dir and reconciles the whole ledger with the recorded events. */
  async function restartAndReconcile(round: number, label: string) {
    const left = journalLeft(journalDir);
    server = await startBerth(env);
    const replayed = replayedFromLog(server.output());
    // The journal is read back in full at start (every complete line the killed process left)
    // and emptied: nothing has been recorded by the new process yet.
    expect(replayed ?? 0).toBe(left.lines);
    expect(readdirSync(journalDir).filter((f) => f.endsWith('.jsonl'))).toEqual([]);

    const events = await allUsage(server.url);
    const byRequest = new Map<string, UsageEvent[]>();
    for (const e of events) byRequest.set(e.requestId, [...(byRequest.get(e.requestId) ?? []), e]);

    const duplicated = [...byRequest].filter(([, es]) => es.length > 1).map(([id]) => id);
    expect(duplicated, 'request ids with more than one usage event').toEqual([]);

    const completeRecords = ledger.filter((r) => r.complete);
    const lost = completeRecords.filter((r) => {
      const es = r.requestId ? byRequest.get(r.requestId) : undefined;
      return es?.length !== 1 || es[0]?.status !== 200 || es[0]?.stream !== r.stream;
    });
    expect(
      lost.map((r) => ({ requestId: r.requestId, stream: r.stream, events: byRequest.get(r.requestId ?? '') ?? [] })),
      'completely received responses without exactly one 200 usage event',
    ).toEqual([]);
    // Every complete response carried its request id, and no two requests shared one.
    expect(completeRecords.every((r) => r.requestId !== null)).toBe(true);
    const knownIds = new Set(ledger.flatMap((r) => (r.requestId ? [r.requestId] : [])));
    expect(knownIds.size).toBe(ledger.filter((r) => r.requestId !== null).length);

    // No event out of nowhere: at most one per request sent; one that succeeded went upstream;
    // an event whose request id the client never saw belongs to a request that got no headers.
    expect(events.length).toBeLessThanOrEqual(ledger.length);
    expect(events.filter((e) => e.status === 200).length).toBeLessThanOrEqual(upstreamChats());
    const unseen = events.filter((e) => !knownIds.has(e.requestId));
    expect(unseen.length).toBeLessThanOrEqual(ledger.filter((r) => r.requestId === null).length);
    expect(events.every((e) => e.endpoint === 'chat.completions')).toBe(true);

    const sent = ledger.filter((r) => r.round === round);
    const done = sent.filter((r) => r.complete);
    const cut = sent.filter((r) => !r.complete);
    const cutMetered = cut.filter((r) => byRequest.has(r.requestId ?? '')).length;
    console.info(
      `[usage-durability] ${label}: this round sent ${sent.length}, complete ${done.length}, ` +
        `cut by the kill ${cut.length} (${cutMetered} metered); all rounds: sent ${ledger.length}, ` +
        `complete ${completeRecords.length}, upstream saw ${upstreamChats()}, events ${events.length}; ` +
        `journal left ${left.lines} lines (${left.segments} sealed segment(s)), replayed ${replayed ?? 0}`,
    );
    return { events, left };
  }

  it('a SIGKILL under load loses no usage event of a complete response and duplicates none', async () => {
    const { completedBeforeKill } = await loadThenKill(1, async (completed) => {
      // Some hundreds of complete responses, then kill while the loops are mid-request.
      for (let waited = 0; completed() < 300 && waited < 90_000; waited += 25) await sleep(25);
    });
    expect(completedBeforeKill).toBeGreaterThan(0);
    const { events } = await restartAndReconcile(1, 'kill under load');
    expect(events.length).toBeGreaterThanOrEqual(completedBeforeKill);
  }, 180_000);

  it('a SIGKILL while a batch is being inserted neither loses nor duplicates events', async () => {
    // The flusher seals the active journal file into a segment, inserts its events, then
    // deletes it: a segment file exists exactly while a batch is in flight. Kill the moment
    // one appears, so the database may or may not hold the batch the journal still has.
    if (!server || !running(server.child)) server = await startBerth(env);
    mkdirSync(journalDir, { recursive: true });
    let watcher: FSWatcher | null = null;
    try {
      const { completedBeforeKill } = await loadThenKill(2, async (completed) => {
        for (let waited = 0; completed() < 150 && waited < 90_000; waited += 25) await sleep(25);
        await new Promise<void>((resolve) => {
          const fallback = setTimeout(resolve, 30_000);
          watcher = watch(journalDir, (_event, name) => {
            if (typeof name === 'string' && name.startsWith('segment-')) {
              clearTimeout(fallback);
              resolve();
            }
          });
        });
      });
      expect(completedBeforeKill).toBeGreaterThan(0);
    } finally {
      (watcher as FSWatcher | null)?.close();
    }
    await restartAndReconcile(2, 'kill mid-flush');
  }, 180_000);
});
