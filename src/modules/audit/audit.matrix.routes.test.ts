import { afterAll, beforeAll, describe } from 'vitest';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { roleMatrix } from '../../../test/helpers/tenancy.ts';
import { matrixRoutes } from './audit.matrix.ts';
import { generateAuditSigningKey } from './index.ts';

/** Every workspace audit route against owner, admin, member, viewer, another workspace's member and anonymous. */
describe('security', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await createTestApp({ config: { BERTH_AUDIT_SIGNING_KEY: generateAuditSigningKey() } });
  });
  afterAll(async () => {
    await app.close();
  });

  roleMatrix({ app: () => app, strict: true, routes: matrixRoutes });
});
