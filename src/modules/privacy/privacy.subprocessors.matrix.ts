import type { MatrixRoute } from '../../platform/http/matrix.ts';
import { newId } from '../../platform/ids.ts';
import type { SubprocessorsService } from './privacy.subprocessors.ts';

type PrivacyApp = {
  modules: { privacy: { service: { subprocessors: Pick<SubprocessorsService, 'register'> } } };
  clock: { now(): Date };
};

/**
 * Test-only: the role matrix of owners' objections to a sub-processor (run by
 * privacy.subprocessors.matrix.routes.test.ts, read by the coverage test). Objecting for a
 * workspace is its owners' right (`privacy:manage`). Nothing in src imports it.
 */
export const matrixRoutes: MatrixRoute<PrivacyApp>[] = [
  {
    method: 'POST',
    url: (c) => `/api/workspaces/${c.workspaceId}/subprocessors/${c.vars.subprocessorId}/objection`,
    body: () => ({ reason: 'We keep our data in one region' }),
    allowed: ['owner'],
    // An objection is made once per workspace: each caller objects to a sub-processor of its own.
    setup: async (c) => {
      const registered = await c.app.modules.privacy.service.subprocessors.register({
        actor: { type: 'system', name: 'matrix' },
        input: {
          name: `Matrix processor ${newId('sub')}`,
          purpose: 'Stores backups',
          dataCategories: ['account'],
          region: 'EU',
          effectiveAt: new Date(c.app.clock.now().getTime() + 31 * 86_400_000).toISOString(),
        },
      });
      return { subprocessorId: registered.id };
    },
  },
];
