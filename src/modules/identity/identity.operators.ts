import type { Clock } from '../../platform/clock.ts';
import type { Database, Db } from '../../platform/db/db.ts';
import { AppError } from '../../platform/errors.ts';
import type { Actor, RequestMeta, SessionAuth } from '../../platform/http/context.ts';
import type { AuditService } from '../audit/index.ts';
import { identityRepo } from './identity.repo.ts';
import { type IdentityCore, normalizeEmail, type PublicUser } from './identity.service.ts';

type Deps = {
  db: Db;
  clock: Clock;
  core: Pick<IdentityCore, 'mustUser' | 'toPublicUser' | 'recordSecurityEvent'>;
  /** Operator actions go to the platform audit chain, in the transaction of the change. */
  audit: Pick<AuditService, 'record'>;
  /** Told once a disable has committed (other modules end what the account could still use). */
  userDisabled?: (userId: string) => Promise<void>;
};

/** Refuses a change that would leave no active operator besides `leaving`. */
function assertAnotherActiveOperator(operators: Array<{ id: string; status: string }>, leaving: string): void {
  if (!operators.some((o) => o.id !== leaving && o.status === 'active')) {
    throw new AppError('last_operator', 'Berth needs at least one active operator; add or enable another one first.');
  }
}

/** A `closing` account is its owner's to reopen (the emailed cancel link) or to have erased. */
function assertNotClosing(user: { status: string }): void {
  if (user.status === 'closing') {
    throw new AppError(
      'deletion_pending',
      "This account is closed for deletion at its owner's request: only the owner's cancel link reopens it.",
    );
  }
}

/** Platform operators: who they are, adding and removing them, disabling and enabling accounts. */
export function operatorsService(deps: Deps) {
  const { db, clock } = deps;
  const { mustUser, toPublicUser, recordSecurityEvent } = deps.core;
  const repo = identityRepo;

  function audited(tx: Database, actor: SessionAuth, meta: RequestMeta, action: string, userId: string) {
    const who: Actor = { type: 'user', userId: actor.userId, sessionId: actor.sessionId, meta };
    return deps.audit.record(tx, { workspaceId: null, actor: who, action, target: { type: 'user', id: userId } });
  }

  return {
    /**
     * Operators, active or disabled: whether this install was ever set up (first-run setup
     * is open only while there are none).
     */
    async countOperators(): Promise<number> {
      return (await repo.listOperators(db.orm)).length;
    },

    /** Operators who can sign in: Berth never lets this drop to zero. */
    async countActiveOperators(): Promise<number> {
      return (await repo.listOperators(db.orm)).filter((o) => o.status === 'active').length;
    },

    async listOperators(): Promise<PublicUser[]> {
      return Promise.all((await repo.listOperators(db.orm)).map((row) => toPublicUser(row)));
    },

    async addOperator(actor: SessionAuth, target: { userId?: string; email?: string }, meta: RequestMeta) {
      const row = target.userId
        ? await mustUser(target.userId)
        : await repo.userByEmail(db.orm, normalizeEmail(target.email ?? ''));
      if (!row) throw new AppError('not_found', 'No such user.');
      const updated = await db.orm.transaction(async (tx) => {
        const changed = await repo.updateUser(tx, row.id, { isOperator: true, updatedAt: clock.now() });
        await audited(tx, actor, meta, 'operator.added', row.id);
        return changed;
      });
      await recordSecurityEvent({ type: 'operator_added', userId: row.id, meta, details: { by: actor.userId } });
      return toPublicUser(updated ?? row);
    },

    /**
     * Removes an operator; refuses (403 `last_operator`) when no other *active* operator
     * would be left. Operator rows are locked while checking.
     */
    async removeOperator(actor: SessionAuth, userId: string, meta: RequestMeta): Promise<void> {
      await mustUser(userId);
      await db.orm.transaction(async (tx) => {
        const operators = await repo.lockOperators(tx);
        if (!operators.some((o) => o.id === userId)) throw new AppError('not_found', 'This user is not an operator.');
        assertAnotherActiveOperator(operators, userId);
        await repo.updateUser(tx, userId, { isOperator: false, updatedAt: clock.now() });
        await audited(tx, actor, meta, 'operator.removed', userId);
      });
      await recordSecurityEvent({ type: 'operator_removed', userId, meta, details: { by: actor.userId } });
    },

    /**
     * Disables an account and ends all its sessions at once. Disabling an operator is
     * refused (403 `last_operator`) when no other active operator would be left; an
     * account closed for deletion (`closing`) cannot be disabled or enabled (409
     * `deletion_pending`): it cannot sign in, and is erased unless its owner cancels.
     */
    async disableUser(actor: SessionAuth, userId: string, meta: RequestMeta): Promise<PublicUser> {
      if (userId === actor.userId) throw new AppError('forbidden', 'You cannot disable your own account.');
      assertNotClosing(await mustUser(userId));
      const now = clock.now();
      const row = await db.orm.transaction(async (tx) => {
        const operators = await repo.lockOperators(tx);
        if (operators.some((o) => o.id === userId && o.status === 'active')) {
          assertAnotherActiveOperator(operators, userId);
        }
        // Checked again under the lock: a deletion may have closed it meanwhile.
        assertNotClosing((await repo.lockUser(tx, userId)) ?? { status: 'active' });
        const updated = await repo.updateUser(tx, userId, { status: 'disabled', updatedAt: now });
        await repo.revokeUserSessions(tx, userId, now, 'account_disabled');
        await audited(tx, actor, meta, 'user.disabled', userId);
        return updated;
      });
      await deps.userDisabled?.(userId);
      await recordSecurityEvent({ type: 'account_disabled', userId, meta, details: { by: actor.userId } });
      return toPublicUser(row ?? (await mustUser(userId)));
    },

    /** Enables a disabled account; refused (409 `deletion_pending`) for one closed for deletion. */
    async enableUser(actor: SessionAuth, userId: string, meta: RequestMeta): Promise<PublicUser> {
      assertNotClosing(await mustUser(userId));
      const row = await db.orm.transaction(async (tx) => {
        assertNotClosing((await repo.lockUser(tx, userId)) ?? { status: 'active' });
        const changed = await repo.updateUser(tx, userId, { status: 'active', updatedAt: clock.now() });
        await audited(tx, actor, meta, 'user.enabled', userId);
        return changed;
      });
      await recordSecurityEvent({ type: 'account_enabled', userId, meta, details: { by: actor.userId } });
      return toPublicUser(row ?? (await mustUser(userId)));
    },
  };
}
export type OperatorsService = ReturnType<typeof operatorsService>;
