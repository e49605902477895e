import { defineConfig } from 'vitest/config';

// npm test runs every suite on embedded PGlite. With TEST_DATABASE_URL (and optionally
// TEST_REDIS_URL) set, the database suites run a second time on server Postgres, together
// with the suites that need real concurrency; without them those suites skip, saying why.
const serverUrl = process.env.TEST_DATABASE_URL ?? '';
const redisUrl = process.env.TEST_REDIS_URL ?? '';
const env = { BERTH_TEST_SERVER_URL: serverUrl, BERTH_TEST_REDIS_URL: redisUrl };
const dbSuites = ['src/**/*.routes.test.ts', 'src/**/*.db.test.ts', 'test/**/*.db.test.ts'];

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'pglite',
          include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
          globalSetup: ['test/helpers/global-setup.ts'],
          provide: { engine: 'pglite' },
          env,
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      ...(serverUrl
        ? [
            {
              test: {
                name: 'postgres',
                include: dbSuites,
                globalSetup: ['test/helpers/global-setup.ts'],
                provide: { engine: 'postgres' as const },
                env,
                testTimeout: 30_000,
                hookTimeout: 60_000,
              },
            },
          ]
        : []),
    ],
  },
});
