import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createTestApp } from '../../../test/helpers/app.ts';
import { fullDatabaseText } from '../../../test/helpers/dump.ts';
import { operatorCatalog, readPlatformProviders } from './index.ts';

/** The operator's settings: platform providers seeded from a file, prices over the catalog, egress and body limits. */
const dir = mkdtempSync(path.join(tmpdir(), 'berth-platform-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('happy', () => {
  it('adds the file’s providers at start, once, with their credentials encrypted', async () => {
    const file = path.join(dir, 'providers.json');
    writeFileSync(
      file,
      JSON.stringify([
        {
          name: 'openai',
          adapter: 'openai-compatible',
          baseUrl: 'https://api.openai.com/v1',
          apiKey: 'sk-seeded',
          models: ['gpt-4o'],
        },
      ]),
      { mode: 0o600 },
    );
    const a = await createTestApp({ config: { BERTH_PLATFORM_PROVIDERS_FILE: file } });
    try {
      const first = await a.modules.gateway.service.providers.listPlatformProviders();
      expect(first).toMatchObject([{ name: 'openai', hasCredentials: true, models: ['gpt-4o'] }]);
      // A second replica (or a restart) on the same database adds nothing.
      const b = await createTestApp({ config: { BERTH_PLATFORM_PROVIDERS_FILE: file }, testDb: a.testDb });
      await b.close();
      expect(await a.modules.gateway.service.providers.listPlatformProviders()).toHaveLength(1);
      const dump = await fullDatabaseText(a);
      expect(dump).toContain('platform_provider.added');
      expect(dump).not.toContain('sk-seeded');
    } finally {
      await a.close();
    }
  });
});

describe('happy: prices', () => {
  it("lays the operator's prices over the shipped catalog", () => {
    const file = path.join(dir, 'prices.json');
    writeFileSync(
      file,
      JSON.stringify({
        'gpt-4o': { inputMicrosPerMtok: 1, outputMicrosPerMtok: 2 },
        'house-model': { inputMicrosPerMtok: 3, outputMicrosPerMtok: 4, contextWindow: 8000 },
      }),
    );
    const catalog = operatorCatalog(file);
    expect(catalog.get('gpt-4o')).toEqual({
      inputMicrosPerMtok: 1,
      outputMicrosPerMtok: 2,
      cachedInputMicrosPerMtok: null,
      contextWindow: null,
    });
    expect(catalog.get('house-model')?.contextWindow).toBe(8000);
    expect(catalog.get('gpt-4o-mini')?.inputMicrosPerMtok).toBe(150_000);
    writeFileSync(file, JSON.stringify({ 'gpt-4o': { inputMicrosPerMtok: 0.5, outputMicrosPerMtok: 2 } }));
    expect(() => operatorCatalog(file)).toThrow(/BERTH_MODEL_PRICES_FILE: gpt-4o.inputMicrosPerMtok/);
  });
});

describe('errors', () => {
  it('refuses a file that is not JSON or has a bad entry, naming the setting', () => {
    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, '{nope');
    expect(() => readPlatformProviders(bad)).toThrow(/BERTH_PLATFORM_PROVIDERS_FILE/);
    writeFileSync(
      bad,
      JSON.stringify([{ name: 'Bad Name', adapter: 'openai-compatible', baseUrl: 'https://x.example.com' }]),
    );
    expect(() => readPlatformProviders(bad)).toThrow(/BERTH_PLATFORM_PROVIDERS_FILE: 0.name/);
  });
});
