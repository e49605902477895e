import type { Clock } from '../../platform/clock.ts';
import { columnPolicies, type TableEntry } from '../../platform/db/datamap.ts';
import type { PolicySubprocessor } from './privacy.notice.schemas.ts';
import { categoryText, describeRetention, GENERAL_MEASURES, measuresFor, SUBJECT_TEXT } from './privacy.notice.text.ts';
import type { Controller } from './privacy.notice.ts';
import type { ProcessingActivity, RecordOfProcessing } from './privacy.records.schemas.ts';

function add<T>(list: T[], value: T) {
  if (!list.includes(value)) list.push(value);
}

/**
 * The record of processing activities from the data map: one activity per purpose that
 * processes personal data, with the categories of personal data and of people, the lawful
 * bases, the recipients (the map's, and each sub-processor receiving one of the categories),
 * the retention and the security measures. Purposes without personal data are left out
 * (they are in the privacy policy, marked as such).
 */
export function buildRecord(input: {
  map: readonly TableEntry[];
  controller: Controller;
  subprocessors: PolicySubprocessor[];
  now: Date;
}): RecordOfProcessing {
  const tables = new Map(input.map.map((t) => [t.table, t]));
  const byPurpose = new Map<string, ProcessingActivity & { classes: string[]; categories: string[] }>();
  for (const p of columnPolicies([...input.map])) {
    if (!p.personal) continue;
    let a = byPurpose.get(p.purpose);
    if (!a) {
      a = {
        purpose: p.purpose,
        dataCategories: [],
        subjects: [],
        bases: [],
        recipients: [],
        retention: [],
        tables: [],
        securityMeasures: [],
        classes: [],
        categories: [],
      };
      byPurpose.set(p.purpose, a);
    }
    add(a.categories, p.category);
    add(a.subjects, SUBJECT_TEXT[p.subject] ?? p.subject);
    add(a.bases, p.basis);
    add(a.classes, p.retention);
    add(a.tables, p.table);
    for (const r of tables.get(p.table)?.recipients ?? []) add(a.recipients, r);
  }
  const activities = [...byPurpose.values()].map(({ classes, categories, ...a }) => {
    const recipients = [...a.recipients];
    for (const s of input.subprocessors) {
      if (s.dataCategories.some((c) => categories.includes(c)))
        add(recipients, `${s.name} (sub-processor, ${s.region})`);
    }
    return {
      ...a,
      dataCategories: categories.map((c) => ({ category: c, label: categoryText(c).label })),
      recipients,
      retention: classes.map((c) => ({ class: c, text: describeRetention(c) })),
      securityMeasures: measuresFor(categories),
    };
  });
  return {
    generatedAt: input.now.toISOString(),
    controller: input.controller,
    activities,
    subprocessors: input.subprocessors,
    generalMeasures: GENERAL_MEASURES,
  };
}

type Deps = {
  clock: Clock;
  controller: Controller;
  dataMap(): readonly TableEntry[];
  subprocessors(now: Date): Promise<PolicySubprocessor[]>;
};

/** `berth privacy records` and `GET /api/operator/privacy/records`. */
export function recordsService(deps: Deps) {
  return {
    async record(): Promise<RecordOfProcessing> {
      const now = deps.clock.now();
      return buildRecord({
        map: deps.dataMap(),
        controller: deps.controller,
        subprocessors: await deps.subprocessors(now),
        now,
      });
    },
  };
}

export type RecordsService = ReturnType<typeof recordsService>;
