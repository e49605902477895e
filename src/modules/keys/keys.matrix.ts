import type { MatrixContext, MatrixRoute } from '../../platform/http/matrix.ts';
import type { KeysService } from './keys.service.ts';

/** What the specs use of the app. */
type KeysApp = { modules: { keys: { service: Pick<KeysService, 'createKey'> } } };
type Ctx = MatrixContext<KeysApp>;

/**
 * Test-only: the role matrix of every API keys route (run by keys.matrix.routes.test.ts, read
 * by the coverage test). Managers reach every key; members only their own, so another
 * member's key answers them 404 like a key that does not exist. Only a key's creator rolls
 * it: an admin gets 403 on the owner's key. Nothing in src imports it.
 */

const keys = (c: Ctx) => `/api/workspaces/${c.workspaceId}/keys`;

/** A key of the owner's, fresh for each caller. */
const ownersKey = async (c: Ctx) => {
  const { key } = await c.app.modules.keys.service.createKey({
    scope: c.ownerScope,
    input: { name: 'Owner key', scopes: ['models:read'] },
  });
  return { keyId: key.id };
};

export const matrixRoutes: MatrixRoute<KeysApp>[] = [
  {
    method: 'POST',
    url: keys,
    body: () => ({ name: 'Matrix key', scopes: ['models:read'] }),
    allowed: ['owner', 'admin', 'member'],
  },
  { method: 'GET', url: keys, allowed: ['owner', 'admin', 'member'] },
  {
    method: 'GET',
    setup: ownersKey,
    url: (c) => `${keys(c)}/${c.vars.keyId}`,
    allowed: ['owner', 'admin'],
    expect: { member: '404 not_found' },
  },
  {
    method: 'PATCH',
    setup: ownersKey,
    url: (c) => `${keys(c)}/${c.vars.keyId}`,
    body: () => ({ name: 'Renamed key' }),
    allowed: ['owner', 'admin'],
    expect: { member: '404 not_found' },
  },
  {
    method: 'POST',
    setup: ownersKey,
    url: (c) => `${keys(c)}/${c.vars.keyId}/revoke`,
    allowed: ['owner', 'admin'],
    expect: { member: '404 not_found' },
  },
  {
    method: 'POST',
    setup: ownersKey,
    url: (c) => `${keys(c)}/${c.vars.keyId}/roll`,
    body: () => ({ gracePeriodSeconds: 60 }),
    allowed: ['owner'],
    expect: { member: '404 not_found' },
  },
];
