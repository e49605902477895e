import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { inject } from 'vitest';
import { runCli } from '../../src/cli/index.ts';
import type { Io } from '../../src/cli/output.ts';
import { openPglite } from '../../src/platform/db/db.ts';

/** The `berth` command as users run it, for end-to-end tests. */
export const BIN = path.resolve('bin/berth.js');

export type Run = { code: number | null; stdout: string; stderr: string };

/** The test's environment without any Berth setting, plus `extra`: a child sees only what the test gives it. */
export function cleanEnv(extra: Record<string, string>) {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith('BERTH_') && k !== 'DATABASE_URL' && k !== 'REDIS_URL' && k !== 'SMTP_URL')
      env[k] = v;
  }
  return { ...env, BERTH_LOG_LEVEL: 'warn', ...extra };
}

/**
 * Runs `berth ARGS` to its end.
 *
 * @example const r = await berth(['keys', 'list', '--json'], { BERTH_URL: url, BERTH_API_KEY: key });
 */
export function berth(args: string[], env: Record<string, string> = {}, input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: cleanEnv(env) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * A new data directory whose embedded database is already migrated (loaded from the run's
 * template), so `berth start` on it skips initdb and the migrations: seconds instead of
 * tens of seconds per server. Tests of a first start on an empty directory use a plain
 * temporary directory instead.
 */
export async function migratedDataDir(prefix: string): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  const db = await openPglite({
    dataDir: path.join(dir, 'pgdata'),
    loadDataDir: new Blob([readFileSync(inject('pgliteTemplate'))]),
  });
  await db.close();
  return dir;
}

/** Starts `berth start` on a free port and resolves once it printed its URL. */
export function startServer(
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'start', '--port', '0'], { env: cleanEnv(env) });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out.slice(-4000)}`)), timeoutMs);
    const onData = (d: Buffer) => {
      out += d;
      const m = out.match(/Berth (http:\/\/127\.0\.0\.1:\d+) is running/);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve({ child, url: m[1], output: () => out });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code ?? signal}: ${out.slice(-4000)}`));
    });
  });
}

/**
 * Runs `berth ARGS` in this process (against a server the test started), with `env` as its
 * whole environment and `stdin` as what it reads (a password, a confirmation).
 *
 * @example const r = await berthInProcess(['privacy', 'restrict', '--email', email], { BERTH_URL: url }, `${password}\n`);
 */
export async function berthInProcess(args: string[], env: Record<string, string>, stdin = ''): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const input = new PassThrough();
  input.end(stdin);
  const io: Io = {
    out: (s) => out.push(s),
    err: (s) => err.push(s),
    env: { BERTH_LOG_LEVEL: 'silent', ...env },
    stdin: input as unknown as NodeJS.ReadStream,
  };
  const code = await runCli(['node', 'berth', ...args], io);
  return { code, stdout: out.join('\n'), stderr: err.join('\n') };
}
