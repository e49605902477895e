import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * A database of its own on the server Postgres a benchmark was given (BENCH_DATABASE_URL or
 * TEST_DATABASE_URL), dropped by `drop()`; null when none is configured or it is unreachable.
 */
export async function benchDatabase(): Promise<{ url: string; host: string; drop(): Promise<void> } | null> {
  const base = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
  if (!base) return null;
  const host = new URL(base).host;
  const admin = new pg.Client({ connectionString: base, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch {
    console.log(`server Postgres at ${host} is unreachable`);
    return null;
  }
  const name = `berth_bench_${randomBytes(6).toString('hex')}`;
  await admin.query(`create database ${name}`);
  await admin.end();
  const u = new URL(base);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    host,
    async drop() {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}
