import { desc, eq } from 'drizzle-orm';
import type { Database } from '../../platform/db/db.ts';
import { type BreachRow, breaches } from './privacy.breaches.tables.ts';

/** Every SQL statement of the breach register (a platform table: run inside `db.system`). */
export const breachesRepo = {
  async insert(tx: Database, row: BreachRow): Promise<void> {
    await tx.insert(breaches).values(row);
  },

  async lock(tx: Database, id: string): Promise<BreachRow | null> {
    return (await tx.select().from(breaches).where(eq(breaches.id, id)).for('update'))[0] ?? null;
  },

  async find(tx: Database, id: string): Promise<BreachRow | null> {
    return (await tx.select().from(breaches).where(eq(breaches.id, id)))[0] ?? null;
  },

  async update(tx: Database, row: BreachRow): Promise<void> {
    const { id, ...rest } = row;
    await tx.update(breaches).set(rest).where(eq(breaches.id, id));
  },

  /** Newest awareness first. */
  async list(tx: Database): Promise<BreachRow[]> {
    return tx.select().from(breaches).orderBy(desc(breaches.awareAt), desc(breaches.id)).limit(1000);
  },
};

export type BreachesRepo = typeof breachesRepo;
