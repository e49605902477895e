import { z } from 'zod';
import { randomToken, safeEqual, sha256Hex } from '../../platform/crypto.ts';
import type { Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor, RequestMeta } from '../../platform/http/context.ts';
import { singleLineText } from '../../platform/http/schemas.ts';
import type { AuditService } from '../audit/index.ts';
import type { IdentityService } from '../identity/index.ts';
import { type KeysService, SCOPES } from '../keys/index.ts';
import type { WorkspacesService } from '../workspaces/index.ts';

export const FirstAdminInput = z.strictObject({
  email: z.string().max(254),
  password: z.string().max(1024),
  workspaceName: singleLineText(1, 100),
  displayName: singleLineText(1, 100).optional(),
});
export type FirstAdminInput = z.infer<typeof FirstAdminInput>;

/** Who the initial API key's creation is attributed to (the key itself belongs to the new user). */
const SETUP_ACTOR: Actor = { type: 'system', name: 'setup' };

type Deps = {
  db: Pick<Db, 'system'>;
  audit: Pick<AuditService, 'record'>;
  identity: Pick<IdentityService, 'createUser' | 'countOperators'>;
  workspaces: Pick<WorkspacesService, 'createWorkspace'>;
  keys: Pick<KeysService, 'createKey'>;
};

/**
 * First-run setup. An operator with database access runs `berth admin create`; while a
 * server holds the embedded database, the server prints a one-time setup token instead,
 * which `POST /api/setup` accepts exactly once and only while no operator exists.
 */
export function setupService(deps: Deps) {
  let tokenHash: string | null = null;
  let busy = false;

  /**
   * Creates the first operator, their workspace and an initial API key in ONE transaction:
   * all of it, or nothing (a failure leaves no user behind and the setup token usable). The
   * platform chain records it as `platform.setup` (`via`: 'setup_token' or 'cli'); the
   * workspace's own chain records `workspace.created` and `key.created` (the latter by the
   * system, while the key belongs to the new user), each in that same transaction.
   */
  async function createFirstAdmin(raw: FirstAdminInput, via: 'cli' | 'setup_token' = 'cli', meta?: RequestMeta) {
    const input = FirstAdminInput.parse(raw);
    const who = meta ? { meta } : {};
    const actor: Actor = { type: 'system', name: via === 'cli' ? 'berth-admin-create' : 'setup-token', ...who };
    const { user, workspace, secret } = await deps.db.system(async (tx) => {
      const user = await deps.identity.createUser(
        {
          email: input.email,
          password: input.password,
          displayName: input.displayName,
          isOperator: true,
          emailVerified: true,
        },
        { tx },
      );
      const workspace = await deps.workspaces.createWorkspace({
        ownerUserId: user.id,
        name: input.workspaceName,
        actor: { type: 'user', userId: user.id, ...who },
        tx,
      });
      await deps.audit.record(tx, {
        workspaceId: null,
        actor,
        action: 'platform.setup',
        target: { type: 'user', id: user.id },
        diff: { operator: user.id, workspaceId: workspace.id, via },
      });
      // A one-time API key with every scope, so a fresh install can be driven from scripts.
      const { secret } = await deps.keys.createKey({
        scope: { workspaceId: workspace.id, actor: { type: 'user', userId: user.id }, role: 'owner' },
        input: { name: 'Initial admin key', scopes: [...SCOPES] },
        actor: { ...SETUP_ACTOR, ...who },
        tx,
      });
      return { user, workspace, secret };
    });
    return {
      userId: user.id,
      email: user.email,
      workspaceId: workspace.id,
      workspaceName: workspace.name,
      apiKey: secret,
    };
  }

  return {
    createFirstAdmin,

    /** When no operator exists yet, issues the one-time setup token and says how to use it. */
    async setupHint(url: string): Promise<{ text: string; token: string } | null> {
      if ((await deps.identity.countOperators()) > 0) return null;
      const token = randomToken(24);
      tokenHash = sha256Hex(token);
      return {
        token,
        text: [
          'No administrator exists yet. Create the first one with this one-time setup token:',
          `  curl -X POST ${url}/api/setup -H 'content-type: application/json' \\`,
          `    -d '{"token":"${token}","email":"you@example.com","password":"<password>","workspaceName":"My team"}'`,
          'or stop Berth and run: npx berth admin create --email you@example.com --workspace "My team"',
        ].join('\n'),
      };
    },

    /** Redeems the setup token printed at start-up (single use, only while there is no operator). */
    async completeSetup(input: FirstAdminInput & { token: string }, meta?: RequestMeta) {
      const { token, ...rest } = input;
      if (!tokenHash || busy || !safeEqual(sha256Hex(token), tokenHash)) {
        throw new AppError('invalid_token', 'The setup token is not valid (it works once, before any admin exists).');
      }
      busy = true;
      try {
        if ((await deps.identity.countOperators()) > 0) {
          tokenHash = null;
          throw new AppError('invalid_token', 'Setup is already complete.');
        }
        const result = await createFirstAdmin(rest, 'setup_token', meta);
        tokenHash = null;
        return result;
      } finally {
        busy = false;
      }
    },
  };
}

export type SetupService = ReturnType<typeof setupService>;
