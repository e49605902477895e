import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { openPglite } from '../../src/platform/db/db.ts';
import { migratePglite, migratePostgres } from '../../src/platform/db/migrate.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgliteTemplate: string;
    pgTemplate: string | null;
    serverUrl: string | null;
    redisUrl: string | null;
    engine: 'pglite' | 'postgres';
  }
}

export const TEST_APP_ROLE = 'berth_app';

function adminUrl(url: string, database: string) {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/**
 * Runs once per test run: migrates one PGlite instance and dumps its data directory, so
 * each test file loads a migrated database in a fraction of initdb's time. With
 * TEST_DATABASE_URL it also migrates a server Postgres template database that test files
 * copy with CREATE DATABASE ... TEMPLATE and drop afterwards.
 */
export async function setup(project: TestProject) {
  const outDir = path.resolve('.test-output');
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `pglite-template-${process.pid}.tar.gz`);
  const db = await openPglite();
  if (!db.pglite) throw new Error('PGlite expected');
  await migratePglite(db.pglite);
  const dump = await db.pglite.dumpDataDir('gzip');
  writeFileSync(file, Buffer.from(await dump.arrayBuffer()));
  await db.close();
  project.provide('pgliteTemplate', file);

  const serverUrl = project.config.env?.BERTH_TEST_SERVER_URL || null;
  project.provide('serverUrl', serverUrl);
  project.provide('redisUrl', project.config.env?.BERTH_TEST_REDIS_URL || null);
  let template: string | null = null;
  if (serverUrl) {
    template = `berth_tpl_${process.pid}_${Date.now().toString(36)}`;
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`create database ${template}`);
    await admin.end();
    await migratePostgres(adminUrl(serverUrl, template), { appRole: TEST_APP_ROLE });
  }
  project.provide('pgTemplate', template);

  return async () => {
    rmSync(file, { force: true });
    if (serverUrl && template) {
      const admin = new pg.Client({ connectionString: serverUrl });
      await admin.connect();
      await admin.query(`drop database if exists ${template} with (force)`);
      await admin.end();
    }
  };
}
