import { customType, timestamp } from 'drizzle-orm/pg-core';

/**
 * Column helpers every module's `*.tables.ts` shares, so the two drivers agree on types.
 *
 * @example export const things = pgTable('things', { secret: bytea('secret').notNull(), createdAt: ts('created_at').notNull() });
 */

/** `timestamptz` as a JavaScript Date. */
export const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** `bytea` as a Buffer on both drivers (PGlite returns Uint8Array, node-postgres Buffer). */
export const bytea = customType<{ data: Buffer; driverData: Buffer | Uint8Array }>({
  dataType: () => 'bytea',
  toDriver: (value) => value,
  fromDriver: (value) => (Buffer.isBuffer(value) ? value : Buffer.from(value)),
});
