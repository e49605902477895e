import { describe } from 'vitest';
import { useTestApp } from '../../../test/helpers/app.ts';
import { roleMatrix } from '../../../test/helpers/tenancy.ts';
import { matrixRoutes } from './knowledge.matrix.ts';

/** Every knowledge route against owner, admin, member, viewer, another workspace's member and anonymous. */
describe('security', () => {
  const app = useTestApp();

  roleMatrix({ app, strict: true, routes: matrixRoutes });
});
