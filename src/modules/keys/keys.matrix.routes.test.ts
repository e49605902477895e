import { afterAll, beforeAll, describe } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { roleMatrix } from '../../../test/helpers/tenancy.ts';
import { matrixRoutes } from './keys.matrix.ts';

/** Every API keys route against owner, admin, member, viewer, another workspace's member and anonymous. */
describe('security', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp();
  });
  afterAll(async () => {
    await app.close();
  });

  roleMatrix({ app: () => app, strict: true, routes: matrixRoutes });
});
