import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOAuthServer, startFakeOAuthServer } from '../../../test/fakes/oauth-server.ts';
import { createTestApp, type TestApp } from '../../../test/helpers/app.ts';
import { addMember as joinWorkspace } from '../../../test/helpers/connections.ts';
import { type SignedInClient, signUp } from '../../../test/helpers/identity.ts';
import type { ConnectionView, OAuthProviderView } from './vault.connections.schemas.ts';

/**
 * Privacy of personal connections inside one workspace: a member's unshared connection is
 * theirs alone. A colleague's run naming it finds nothing, and its id gives them no token.
 */

const REDIRECT = 'http://berth.test/api/oauth/callback';

let app: TestApp;
let oauth: FakeOAuthServer;
let owner: SignedInClient;
let member: SignedInClient;
let colleague: SignedInClient;
let wsId: string;
let provider: OAuthProviderView;

const base = () => `/api/workspaces/${wsId}`;
const svc = () => app.modules.connections.service;

const addMember = (client: SignedInClient, role: 'admin' | 'member') =>
  joinWorkspace(app, wsId, owner.userId, client, role);

/** Runs the whole flow for `client`: authorize, consent at the provider, callback. */
async function connect(client: SignedInClient, name: string): Promise<ConnectionView> {
  const start = await client.post<{ authorizationUrl: string }>(`${base()}/connections/${provider.name}/authorize`, {
    name,
  });
  expect(start.status, start.text).toBe(200);
  const callback = await oauth.authorize(start.body.authorizationUrl, { deny: false });
  const res = await client.get<ConnectionView>(`${callback.pathname}${callback.search}`);
  expect(res.status, res.text).toBe(200);
  return res.body;
}

beforeAll(async () => {
  oauth = await startFakeOAuthServer({ redirectUri: REDIRECT });
  app = await createTestApp({ config: { BERTH_EGRESS_ALLOW: '127.0.0.1' } });
  owner = await signUp(app);
  member = await signUp(app);
  colleague = await signUp(app);
  wsId = (await owner.post<{ id: string }>('/api/workspaces', { name: 'Personal' })).body.id;
  await addMember(member, 'member');
  await addMember(colleague, 'admin');
  const res = await owner.post<OAuthProviderView>(`${base()}/oauth-providers`, {
    name: 'acme',
    authorizationUrl: oauth.authorizationUrl,
    tokenUrl: oauth.tokenUrl,
    revocationUrl: oauth.revocationUrl,
    clientId: oauth.clientId,
    clientSecret: oauth.clientSecret,
    scopes: ['openid', 'offline_access', 'email'],
    authorizeParams: { prompt: 'consent' },
  });
  expect(res.status, res.text).toBe(201);
  provider = res.body;
});

afterAll(async () => {
  await app?.close();
  await oauth?.close();
});

describe('security', () => {
  it("a colleague's unshared connection is neither found by name nor usable by id", async () => {
    const mine = await connect(member, 'inbox');
    expect(mine.shared).toBe(false);

    // The member's own run finds it and gets a token.
    expect(await svc().connectionFor(wsId, member.userId, 'inbox')).toMatchObject({
      connectionId: mine.id,
      ownerId: member.userId,
      shared: false,
    });
    expect((await svc().accessToken(mine.id, { workspaceId: wsId, userId: member.userId })).accessToken).toBeTruthy();

    // A colleague (an admin, even the owner) in the same workspace: nothing by name, not_found by id.
    for (const other of [colleague, owner]) {
      expect(await svc().connectionFor(wsId, other.userId, 'inbox')).toBeNull();
      await expect(svc().accessToken(mine.id, { workspaceId: wsId, userId: other.userId })).rejects.toMatchObject({
        code: 'not_found',
      });
    }
    // Nor does the colleague's listing show it.
    const seen = await colleague.get<{ data: ConnectionView[] }>(`${base()}/connections`);
    expect(seen.body.data.map((c) => c.id)).not.toContain(mine.id);
  });
});
