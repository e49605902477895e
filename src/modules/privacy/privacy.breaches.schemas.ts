import { z } from 'zod';
import { DataCategories, multiLineText } from './privacy.subprocessors.schemas.ts';

/** The breach register's shapes (Art. 33(5) GDPR). Times are ISO 8601 with an offset. */

const Time = z.iso.datetime({ offset: true });

export const RecordBreachBody = z.strictObject({
  description: multiLineText(5000).describe('What happened (keep the affected people’s data out of it)'),
  dataCategories: DataCategories,
  subjectsCount: z.number().int().min(0).max(2_000_000_000).optional().describe('Approximately how many people'),
  awareAt: Time.describe('When the operator became aware of it (not in the future)'),
});
export type RecordBreachInput = z.infer<typeof RecordBreachBody>;

export const UpdateBreachBody = z
  .strictObject({
    authorityNotifiedAt: Time.nullable().optional().describe('When the supervisory authority was told'),
    subjectsNotifiedAt: Time.nullable().optional().describe('When the affected people were told'),
    measures: multiLineText(5000).nullable().optional(),
    subjectsCount: z.number().int().min(0).max(2_000_000_000).nullable().optional(),
  })
  .refine((b) => Object.keys(b).length > 0, 'name at least one field to change');
export type UpdateBreachInput = z.infer<typeof UpdateBreachBody>;

export const BreachView = z.object({
  id: z.string(),
  description: z.string(),
  dataCategories: z.array(z.string()),
  subjectsCount: z.number().int().nullable(),
  awareAt: z.string(),
  notifyDeadline: z.string().describe('awareAt + 72 hours: when the supervisory authority must have been told'),
  authorityNotifiedAt: z.string().nullable(),
  subjectsNotifiedAt: z.string().nullable(),
  measures: z.string().nullable(),
  overdue: z.boolean().describe('The deadline passed and the authority has not been told'),
  notifiedLate: z.boolean().describe('The authority was told after the deadline (the reasons for the delay are owed)'),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type BreachView = z.infer<typeof BreachView>;
export const BreachList = z.object({ data: z.array(BreachView) });
export const BreachParams = z.strictObject({ breachId: z.string().min(1).max(64) });
