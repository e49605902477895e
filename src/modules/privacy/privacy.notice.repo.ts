import { desc, eq } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type PolicyVersionRow, policyVersions } from './privacy.notice.tables.ts';

/** Every SQL statement on the privacy policy's versions (a platform table: run inside `db.system`). */
export const noticeRepo = {
  async latest(tx: Database): Promise<PolicyVersionRow | null> {
    const rows = await tx.select().from(policyVersions).orderBy(desc(policyVersions.version)).limit(1);
    return rows[0] ?? null;
  },

  async find(tx: Database, version: number): Promise<PolicyVersionRow | null> {
    const rows = await tx.select().from(policyVersions).where(eq(policyVersions.version, version));
    return rows[0] ?? null;
  },

  /** Newest first, without the documents. */
  async list(tx: Database): Promise<Array<Omit<PolicyVersionRow, 'content'>>> {
    return tx
      .select({
        version: policyVersions.version,
        contentHash: policyVersions.contentHash,
        effectiveAt: policyVersions.effectiveAt,
      })
      .from(policyVersions)
      .orderBy(desc(policyVersions.version));
  },

  async insert(tx: Database, row: PolicyVersionRow): Promise<void> {
    await tx.insert(policyVersions).values(row);
  },
};

export type NoticeRepo = typeof noticeRepo;
