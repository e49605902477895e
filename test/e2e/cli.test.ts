import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/index.ts';
import { berth, startServer } from '../helpers/cli.ts';

describe('happy', () => {
  let dataDir: string;
  beforeAll(() => {
    dataDir = mkdtempSync(path.join(tmpdir(), 'berth-e2e-'));
  });
  afterAll(() => {
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('has help on the command and on every subcommand', async () => {
    const top = await berth(['--help']);
    expect(top.code).toBe(0);
    for (const cmd of ['start', 'migrate', 'admin', 'config', 'vault', 'status', 'keys', 'providers', 'operator'])
      expect(top.stdout).toContain(cmd);
    const sub = await berth(['operator', 'providers', 'add', '--help']);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain('Usage: berth operator providers add');
    // Every command of the program tree (read from it, not a list kept here) describes itself and its options.
    const io = { out: () => undefined, err: () => undefined, env: {}, stdin: process.stdin };
    const walk = (cmd: Command, path: string[]): string[][] =>
      cmd.commands.flatMap((c) => [[...path, c.name()], ...walk(c, [...path, c.name()])]);
    const all = walk(buildProgram(io), []);
    expect(all.length).toBeGreaterThan(25);
    for (const p of all) {
      let c: Command | undefined = buildProgram(io);
      for (const name of p) c = c?.commands.find((x) => x.name() === name);
      expect(c?.description(), p.join(' ')).not.toBe('');
      expect(c?.helpInformation(), p.join(' ')).toContain(`Usage: berth ${p.join(' ')}`);
    }
  }, 60_000);

  it('adds, lists and removes platform providers on the database, never printing their key', async () => {
    const env = { BERTH_DATA_DIR: path.join(dataDir, 'operator'), BERTH_PROVIDER_API_KEY: 'sk-operator-cli-key' };
    const addOpenAi = (models: string, ...extra: string[]) =>
      berth(
        ['operator', 'providers', 'add', '--name', 'openai', '--adapter', 'openai-compatible'].concat([
          '--base-url',
          'https://api.openai.com/v1',
          '--models',
          models,
          ...extra,
        ]),
        env,
      );
    const add = await addOpenAi('gpt-4o,gpt-4o-mini', '--json');
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout)).toMatchObject({
      name: 'openai',
      hasCredentials: true,
      models: ['gpt-4o', 'gpt-4o-mini'],
    });
    const again = await addOpenAi('gpt-4o');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('exists');
    const list = await berth(['operator', 'providers', 'list'], env);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain('openai');
    expect(`${add.stdout}${list.stdout}${add.stderr}`).not.toContain('sk-operator-cli-key');
    const removed = await berth(['operator', 'providers', 'remove', 'openai', '--json'], env);
    expect(removed.code, removed.stderr).toBe(0);
    expect(JSON.parse((await berth(['operator', 'providers', 'list', '--json'], env)).stdout)).toEqual({ data: [] });
  }, 120_000);

  it('creates the first admin, starts, serves, refuses operator commands while running, and stops cleanly', async () => {
    const env = { BERTH_DATA_DIR: dataDir };
    const created = await berth(
      ['admin', 'create', '--email', 'ops@example.com', '--workspace', 'Ops team', '--json'],
      env,
      'correct horse battery staple\n',
    );
    expect(created.code, created.stderr).toBe(0);
    const ids = JSON.parse(created.stdout);
    expect(ids.userId).toMatch(/^usr_/);
    expect(ids.workspaceId).toMatch(/^ws_/);
    expect(ids.apiKey).toMatch(/^brt_live_[0-9A-Za-z]{32}_[0-9A-Za-z]{6}$/);
    // The generated key-encryption key is private to the owner.
    expect(statSync(path.join(dataDir, 'kek')).mode & 0o777).toBe(0o600);

    const again = await berth(
      [
        'admin',
        'create',
        '--email',
        'OPS@example.com',
        '--workspace',
        'X',
        '--password',
        'another long password',
        '--json',
      ],
      env,
    );
    expect(again.code).toBe(4);
    expect(JSON.parse(again.stdout).error.code).toBe('email_taken');

    const server = await startServer(env);
    try {
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
      expect((await fetch(`${server.url}/openapi.json`)).status).toBe(200);
      expect(server.output()).toContain('up to date');
      const status = await berth(['status', '--url', server.url, '--json']);
      expect(status.code).toBe(0);
      expect(JSON.parse(status.stdout)).toMatchObject({ live: true, ready: true });

      // The one-time key of `admin create` drives the server: keys over HTTP.
      const auth = ['--url', server.url, '--api-key', ids.apiKey, '--json'];
      const listed = await berth(['keys', 'list', ...auth]);
      expect(listed.code, listed.stderr).toBe(0);
      expect(JSON.parse(listed.stdout).data).toEqual([
        expect.objectContaining({ name: 'Initial admin key', createdBy: ids.userId, status: 'active' }),
      ]);
      const made = await berth([
        'keys',
        'create',
        '--name',
        'CI',
        '--scopes',
        'gateway:invoke,models:read',
        '--expires',
        '30d',
        ...auth,
      ]);
      expect(made.code, made.stderr).toBe(0);
      const ci = JSON.parse(made.stdout);
      expect(ci.secret).toMatch(/^brt_live_/);
      expect(ci.key.scopes).toEqual(['gateway:invoke', 'models:read']);
      const rolled = await berth(['keys', 'roll', ci.key.id, '--grace', '0', ...auth]);
      expect(rolled.code, rolled.stderr).toBe(0);
      expect(JSON.parse(rolled.stdout).key.secrets).toHaveLength(1);
      const revoked = await berth(['keys', 'revoke', ci.key.id, ...auth]);
      expect(revoked.code, revoked.stderr).toBe(0);
      expect(JSON.parse(revoked.stdout).status).toBe('revoked');
      const again = await berth(['keys', 'revoke', ci.key.id, ...auth]);
      expect(again.code).toBe(4);
      expect(JSON.parse(again.stdout).error.code).toBe('conflict');
      const typo = `${ids.apiKey.slice(0, -1)}${ids.apiKey.endsWith('x') ? 'y' : 'x'}`;
      const wrong = await berth(['keys', 'list', '--url', server.url, '--api-key', typo, '--json']);
      expect(wrong.code).toBe(4);
      expect(JSON.parse(wrong.stdout).error.code).toBe('invalid_api_key');

      const busy = await berth(['migrate'], env);
      expect(busy.code).toBe(3);
      expect(busy.stderr).toContain('held by a running Berth server');
    } finally {
      server.child.kill('SIGTERM');
    }
    const code = await new Promise<number | null>((resolve) => server.child.on('exit', resolve));
    expect(code).toBe(0);
    expect(existsSync(path.join(dataDir, 'berth.lock'))).toBe(false);

    const migrate = await berth(['migrate', '--json'], env);
    expect(migrate.code).toBe(0);
    expect(JSON.parse(migrate.stdout).applied).toEqual([]);
  }, 180_000);
});

describe('errors', () => {
  it('stops with exit code 2 and names the setting when configuration is invalid', async () => {
    const r = await berth(['start'], { BERTH_PORT: 'eighty' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('BERTH_PORT');
    const unknown = await berth(['config', 'print', '--json'], { BERTH_PROT: '1' });
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stdout).error.message).toContain('BERTH_PROT');
  }, 60_000);

  it('refuses to start on server Postgres without a key-encryption key', async () => {
    const r = await berth(['migrate'], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('BERTH_KEK');
  }, 60_000);
});

describe('errors: unreachable server', () => {
  it('status exits 5 when nothing listens at the URL', async () => {
    const r = await berth(['status', '--url', 'http://127.0.0.1:9', '--json']);
    expect(r.code).toBe(5);
    expect(JSON.parse(r.stdout).error.code).toBe('unreachable');
  }, 30_000);
});

describe('security', () => {
  it('config print masks secrets', async () => {
    const r = await berth(['config', 'print', '--json'], {
      BERTH_KEK: 'berth-kek-v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
      DATABASE_URL: 'postgres://berth:s3cret-pass@db:5432/berth',
    });
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('s3cret-pass');
    expect(r.stdout).not.toContain('AAAAAAAAAAAAAAAA');
    expect(JSON.parse(r.stdout).BERTH_KEK).toBe('********');
  }, 30_000);
});
