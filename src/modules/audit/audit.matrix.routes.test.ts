import { describe } from 'vitest';
import { useTestApp } from '../../../test/helpers/app.ts';
import { roleMatrix } from '../../../test/helpers/tenancy.ts';
import { matrixRoutes } from './audit.matrix.ts';
import { generateAuditSigningKey } from './index.ts';

/** Every workspace audit route against owner, admin, member, viewer, another workspace's member and anonymous. */
describe('security', () => {
  const app = useTestApp({ config: { BERTH_AUDIT_SIGNING_KEY: generateAuditSigningKey() } });

  roleMatrix({ app, strict: true, routes: matrixRoutes });
});
