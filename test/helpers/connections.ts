import { type SQL, sql } from 'drizzle-orm';
import type { FakeOAuthServer } from '../fakes/oauth-server.ts';
import type { TestApp } from './app.ts';
import type { SignedInClient } from './identity.ts';

/** Shared setup of the OAuth connection route tests. */

/** Rows of `table` matching `where`, counted past row-level security. */
export async function rowCount(app: TestApp, table: string, where: SQL = sql`true`): Promise<number> {
  const res = (await app.db.system((tx) =>
    tx.execute(sql`select count(*)::int as n from ${sql.identifier(table)} where ${where}`),
  )) as unknown as { rows: Array<{ n: number }> };
  return res.rows[0]?.n ?? 0;
}

/** `client` joins the workspace through a real invitation sent by its owner `ownerId`. */
export async function addMember(
  app: TestApp,
  workspaceId: string,
  ownerId: string,
  client: SignedInClient,
  role: 'admin' | 'member' | 'viewer',
): Promise<void> {
  const scope = { workspaceId, actor: { type: 'user' as const, userId: ownerId }, role: 'owner' as const };
  const { token } = await app.modules.workspaces.service.invite({ scope, email: client.email, role });
  await app.modules.workspaces.service.acceptInvitation({ token, userId: client.userId });
}

/** The status the provider's userinfo endpoint answers for `accessToken` (200 while it is live). */
export async function userinfo(oauth: FakeOAuthServer, accessToken: string): Promise<number> {
  const res = await fetch(`${oauth.issuer}/me`, { headers: { authorization: `Bearer ${accessToken}` } });
  await res.arrayBuffer();
  return res.status;
}
