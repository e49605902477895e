import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, ConfigSchema, loadConfig, maskedConfig } from './config.ts';

describe('happy', () => {
  it('has working defaults with nothing configured', () => {
    const c = loadConfig({ env: {} });
    expect(c.BERTH_HOST).toBe('127.0.0.1');
    expect(c.BERTH_PORT).toBe(8080);
    expect(c.publicUrl).toBe('http://127.0.0.1:8080');
    expect(c.dataDir).toBe(path.resolve('./data'));
    expect(c.BERTH_SESSION_IDLE_MINUTES).toBe(30);
    expect(c.BERTH_SESSION_ABSOLUTE_HOURS).toBe(12);
    expect(c.BERTH_BODY_LIMIT).toBe(1024 * 1024);
    expect(c.BERTH_LOW_BALANCE_USD).toBe('1');
    expect(c.BERTH_EXHAUSTED_BALANCE_USD).toBe('0.01');
    expect(c.BERTH_SUSPENSION_GRACE_DAYS).toBe(30);
  });

  it('reads a JSON file; environment wins over the file, overrides over both', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-config-'));
    const file = path.join(dir, 'berth.json');
    writeFileSync(file, JSON.stringify({ BERTH_PORT: 9000, BERTH_HOST: '0.0.0.0', BERTH_LOG_LEVEL: 'warn' }));
    const c = loadConfig({ env: { BERTH_PORT: '9100' }, file, overrides: { BERTH_LOG_LEVEL: 'error' } });
    expect(c.BERTH_PORT).toBe(9100);
    expect(c.BERTH_HOST).toBe('0.0.0.0');
    expect(c.BERTH_LOG_LEVEL).toBe('error');
  });

  it('trusts proxies only as configured: none, a hop count, or listed addresses', () => {
    expect(loadConfig({ env: {} }).BERTH_TRUST_PROXY).toBe(false);
    expect(loadConfig({ env: { BERTH_TRUST_PROXY: '1' } }).BERTH_TRUST_PROXY).toBe(1);
    expect(loadConfig({ env: { BERTH_TRUST_PROXY: '10.0.0.0/8, 192.168.1.7' } }).BERTH_TRUST_PROXY).toBe(
      '10.0.0.0/8,192.168.1.7',
    );
  });

  it('ignores environment variables that are not Berth settings', () => {
    expect(() =>
      loadConfig({
        env: { PATH: '/bin', HOME: '/root', BERTH_URL: 'http://x', BERTH_API_KEY: 'k', BERTH_PROVIDER_API_KEY: 'p' },
      }),
    ).not.toThrow();
  });
});

describe('docs', () => {
  it('docs/operations/configuration.md documents every setting', () => {
    const doc = readFileSync(new URL('../docs/operations/configuration.md', import.meta.url), 'utf8');
    for (const key of Object.keys(ConfigSchema.shape)) expect(doc, key).toContain(`\`${key}\``);
  });
});

describe('errors', () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ BERTH_PORT: 'eighty' }, /BERTH_PORT/],
    [{ BERTH_PORT: '70000' }, /BERTH_PORT/],
    [{ BERTH_ROLE: 'boss' }, /BERTH_ROLE/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL/],
    [{ BERTH_PUBLIC_URL: 'not a url' }, /BERTH_PUBLIC_URL/],
    [{ BERTH_POTR: '1' }, /BERTH_POTR: unknown setting/],
    [{ BERTH_KEK: 'a', BERTH_KEK_FILE: '/x' }, /BERTH_KEK_FILE/],
    // Trusting every hop would let any client pick its own IP (and dodge per-IP limits).
    [{ BERTH_TRUST_PROXY: 'true' }, /BERTH_TRUST_PROXY/],
    [{ BERTH_TRUST_PROXY: 'everyone' }, /BERTH_TRUST_PROXY/],
    [{ BERTH_LOW_BALANCE_USD: '-1' }, /BERTH_LOW_BALANCE_USD/],
    // Credits are never below 0: a threshold of 0 would mean a workspace never runs out.
    [{ BERTH_EXHAUSTED_BALANCE_USD: '0' }, /BERTH_EXHAUSTED_BALANCE_USD/],
    [{ BERTH_SUSPENSION_GRACE_DAYS: '-1' }, /BERTH_SUSPENSION_GRACE_DAYS/],
    [{ BERTH_SUSPENSION_GRACE_DAYS: '2.5' }, /BERTH_SUSPENSION_GRACE_DAYS/],
  ];
  it.each(cases)('rejects %j with a message naming the setting', (env, message) => {
    expect(() => loadConfig({ env })).toThrow(ConfigError);
    expect(() => loadConfig({ env })).toThrow(message);
  });

  it('rejects a config file that is not a JSON object, or has unknown keys', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'berth-config-'));
    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, '[1,2]');
    expect(() => loadConfig({ file: bad })).toThrow(/--config/);
    writeFileSync(bad, '{ nope');
    expect(() => loadConfig({ file: bad })).toThrow(/not valid JSON/);
    writeFileSync(bad, JSON.stringify({ colour: 'blue' }));
    expect(() => loadConfig({ file: bad })).toThrow(/colour: unknown setting/);
    expect(() => loadConfig({ file: path.join(dir, 'missing.json') })).toThrow(/cannot read/);
  });
});

describe('security', () => {
  it('masks secrets and URL passwords when printed', () => {
    const c = loadConfig({
      env: {
        BERTH_KEK: 'berth-kek-v1:c2VjcmV0',
        DATABASE_URL: 'postgres://berth:hunter2@db:5432/berth',
        SMTP_URL: 'smtps://mailer:mailpass@smtp.example.com:465',
      },
    });
    const printed = JSON.stringify(maskedConfig(c));
    expect(printed).not.toContain('c2VjcmV0');
    expect(printed).not.toContain('hunter2');
    expect(printed).not.toContain('mailpass');
    expect(printed).toContain('db:5432');
  });
});
