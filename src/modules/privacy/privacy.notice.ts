import { createHash } from 'node:crypto';
import { sql } from 'drizzle-orm';
import type { Clock } from '../../platform/clock.ts';
import { columnPolicies, type TableEntry } from '../../platform/db/datamap.ts';
import type { Db } from '../../platform/db/db.ts';
import { notFound } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import type { NoticeRepo } from './privacy.notice.repo.ts';
import type {
  PolicyDocument,
  PolicyProcessing,
  PolicySubprocessor,
  PolicyVersionSummary,
  PolicyView,
} from './privacy.notice.schemas.ts';
import type { PolicyVersionRow } from './privacy.notice.tables.ts';
import { BASIS_TEXT, basisText, CATEGORY_TEXT, categoryText, describeRetention } from './privacy.notice.text.ts';

/** The operator's settings the documents name (BERTH_PRIVACY_CONTROLLER, _CONTACT, _DPO). */
export type Controller = { name: string | null; contact: string | null; dpo: string | null };

/** Tells whether the installation serves a route, so the policy names only ways that work. */
export type RouteCheck = (method: string, url: string) => boolean;

type Way = { route: [string, string]; text: string };
type RightSpec = { right: string; description: string; ways: Way[] };

const EXPORT: Way[] = [
  {
    route: ['POST', '/api/me/privacy/exports'],
    text: 'POST /api/me/privacy/exports: a JSON archive of your data, with a download link by email',
  },
  { route: ['POST', '/api/me/privacy/exports'], text: 'berth privacy export' },
  {
    route: ['POST', '/api/workspaces/:workspaceId/privacy/exports'],
    text: "POST /api/workspaces/{id}/privacy/exports: a workspace's data (its owners)",
  },
];

/** Each right of the data subject and the routes and commands that exercise it. */
const RIGHTS: RightSpec[] = [
  {
    right: 'access',
    description: 'Learn whether Berth holds personal data about you and get a copy of it (Art. 15)',
    ways: [{ route: ['GET', '/api/me'], text: 'GET /api/me: your account as Berth holds it' }, ...EXPORT],
  },
  {
    right: 'portability',
    description: 'Receive your data in a structured, machine-readable format and take it elsewhere (Art. 20)',
    ways: EXPORT,
  },
  {
    right: 'rectification',
    description: 'Have inaccurate data about you corrected (Art. 16)',
    ways: [
      { route: ['PATCH', '/api/me'], text: 'PATCH /api/me: change your display name' },
      {
        route: ['POST', '/api/me/privacy/rectification'],
        text: 'POST /api/me/privacy/rectification: ask for anything else to be corrected',
      },
    ],
  },
  {
    right: 'erasure',
    description: 'Have your data erased (Art. 17); billing records the law requires are kept until their term ends',
    ways: [
      {
        route: ['POST', '/api/me/deletion'],
        text: 'POST /api/me/deletion: delete your account (erased after a 30-day grace period you can cancel)',
      },
      { route: ['POST', '/api/me/deletion'], text: 'berth privacy delete' },
      {
        route: ['DELETE', '/api/workspaces/:workspaceId'],
        text: 'DELETE /api/workspaces/{id}: delete a workspace you own',
      },
    ],
  },
  {
    right: 'restriction',
    description: 'Have processing paused while a dispute is resolved; your data is kept intact (Art. 18)',
    ways: [
      { route: ['POST', '/api/me/privacy/restriction'], text: 'POST /api/me/privacy/restriction (DELETE lifts it)' },
      { route: ['POST', '/api/me/privacy/restriction'], text: 'berth privacy restrict / berth privacy unrestrict' },
    ],
  },
  {
    right: 'objection',
    description: 'Object to processing based on legitimate interests, and to new sub-processors (Art. 21, Art. 28)',
    ways: [
      { route: ['PUT', '/api/me/privacy/objections'], text: 'PUT /api/me/privacy/objections' },
      {
        route: ['POST', '/api/workspaces/:workspaceId/subprocessors/:subprocessorId/objection'],
        text: 'POST /api/workspaces/{id}/subprocessors/{subprocessorId}/objection (workspace owners)',
      },
    ],
  },
  {
    right: 'withdraw_consent',
    description: 'Withdraw a consent at any time, as easily as it was given (Art. 7(3))',
    ways: [
      { route: ['DELETE', '/api/me/privacy/consents/:purpose'], text: 'DELETE /api/me/privacy/consents/{purpose}' },
    ],
  },
  {
    right: 'requests',
    description: 'Follow your requests: each is answered within one month of receipt (Art. 12(3))',
    ways: [{ route: ['GET', '/api/me/privacy/requests'], text: 'GET /api/me/privacy/requests' }],
  },
  {
    right: 'complaint',
    description:
      'Lodge a complaint with a data protection supervisory authority, in particular where you live or work (Art. 77)',
    ways: [],
  },
];

function uniquePush<T>(list: T[], value: T) {
  if (!list.includes(value)) list.push(value);
}

/**
 * The privacy policy from the data map: every category, every purpose with its lawful
 * bases, retention and recipients, the sub-processors, and the rights with the ways this
 * installation offers to exercise them. Pure: the same inputs give the same document (and hash).
 */
export function buildPolicy(input: {
  map: readonly TableEntry[];
  controller: Controller;
  subprocessors: PolicySubprocessor[];
  hasRoute: RouteCheck;
}): PolicyDocument {
  const policies = columnPolicies([...input.map]);
  const tableRecipients = new Map(input.map.map((t) => [t.table, [...(t.recipients ?? [])]]));

  const personalByCategory = new Map<string, boolean>();
  for (const p of policies)
    personalByCategory.set(p.category, (personalByCategory.get(p.category) ?? false) || p.personal);
  const known = Object.keys(CATEGORY_TEXT);
  const categoryOrder = [
    ...known.filter((c) => personalByCategory.has(c)),
    ...[...personalByCategory.keys()].filter((c) => !known.includes(c)),
  ];

  const byPurpose = new Map<string, PolicyProcessing & { classes: string[] }>();
  const retentionClasses: string[] = [];
  const recipients: string[] = [];
  for (const p of policies) {
    let entry = byPurpose.get(p.purpose);
    if (!entry) {
      entry = {
        purpose: p.purpose,
        categories: [],
        personal: false,
        bases: [],
        retention: [],
        recipients: [],
        tables: [],
        classes: [],
      };
      byPurpose.set(p.purpose, entry);
    }
    uniquePush(entry.categories, p.category);
    entry.personal ||= p.personal;
    uniquePush(entry.bases, p.basis);
    uniquePush(entry.classes, p.retention);
    uniquePush(entry.tables, p.table);
    for (const r of tableRecipients.get(p.table) ?? []) {
      uniquePush(entry.recipients, r);
      uniquePush(recipients, r);
    }
    uniquePush(retentionClasses, p.retention);
  }
  const processing = [...byPurpose.values()].map(({ classes, ...e }) => ({
    ...e,
    retention: classes.map((c) => ({ class: c, text: describeRetention(c) })),
  }));
  const bases = new Set<string>(policies.map((p) => p.basis));

  return {
    format: 1,
    controller: input.controller,
    categories: categoryOrder.map((c) => ({
      category: c,
      ...categoryText(c),
      personal: personalByCategory.get(c) ?? false,
    })),
    // Purposes with personal data first; each group in the map's order.
    processing: [...processing.filter((p) => p.personal), ...processing.filter((p) => !p.personal)],
    bases: [
      ...Object.keys(BASIS_TEXT).filter((b) => bases.has(b)),
      ...[...bases].filter((b) => !(b in BASIS_TEXT)),
    ].map((b) => ({ basis: b, text: basisText(b) })),
    retention: retentionClasses.map((c) => ({ class: c, text: describeRetention(c) })),
    recipients,
    subprocessors: input.subprocessors,
    rights: RIGHTS.map((r) => ({
      right: r.right,
      description: r.description,
      how: [...new Set(r.ways.filter((w) => input.hasRoute(w.route[0], w.route[1])).map((w) => w.text))],
    })),
  };
}

/** The SHA-256 of a policy's content: a new version is stored only when it changes. */
export function policyHash(doc: PolicyDocument): string {
  return createHash('sha256').update(JSON.stringify(doc)).digest('hex');
}

type Deps = {
  db: Pick<Db, 'system'>;
  repo: NoticeRepo;
  clock: Clock;
  logger: Logger;
  controller: Controller;
  /** The whole data map (every module's tables), read when a policy is built. */
  dataMap(): readonly TableEntry[];
  /** Sub-processors in use or announced at `now`, for the policy. */
  subprocessors(now: Date): Promise<PolicySubprocessor[]>;
};

const view = (r: PolicyVersionRow): PolicyView => ({
  version: r.version,
  effectiveAt: r.effectiveAt.toISOString(),
  contentHash: r.contentHash,
  policy: r.content,
});

/**
 * The published privacy policy and its versions. The policy is rebuilt from the data map,
 * the sub-processors and the settings when the HTTP server starts and on each request for
 * it; when its content differs from the newest stored version, it is stored as the next
 * version, effective now. Until the routes are bound, nothing is stored (the rights the
 * policy lists depend on the routes the installation serves).
 *
 * A view is cheap: the replica keeps the newest version it stored or found, and opens the
 * write transaction (with its advisory lock) only when the rebuilt content hashes
 * differently. Inside it the newest stored version decides, so a replica that stored the
 * same content first is followed, not duplicated.
 *
 * @example const { version, policy } = await notice.current();
 */
export function noticeService(deps: Deps) {
  let hasRoute: RouteCheck | null = null;
  /** The newest version this replica stored or found: a policy hashing the same needs no write. */
  let known: PolicyVersionRow | null = null;

  async function build(): Promise<PolicyDocument> {
    return buildPolicy({
      map: deps.dataMap(),
      controller: deps.controller,
      subprocessors: await deps.subprocessors(deps.clock.now()),
      hasRoute: hasRoute ?? (() => false),
    });
  }

  /** The current policy, stored as a new version first when its content changed. */
  async function current(): Promise<PolicyView> {
    if (!hasRoute) throw new Error('privacy notice: routes are not bound yet');
    const doc = await build();
    const hash = policyHash(doc);
    if (known?.contentHash === hash) return view(known);
    const row = await deps.db.system(async (tx) => {
      // One writer at a time: two replicas starting together store one version, not two.
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext('berth.privacy_policy_versions'))`);
      const latest = await deps.repo.latest(tx);
      if (latest?.contentHash === hash) return latest;
      const next: PolicyVersionRow = {
        version: (latest?.version ?? 0) + 1,
        contentHash: hash,
        content: doc,
        effectiveAt: deps.clock.now(),
      };
      await deps.repo.insert(tx, next);
      deps.logger.info({ version: next.version }, 'privacy policy: new version');
      return next;
    });
    // Only once committed: a rolled back version is not remembered.
    known = row;
    return view(row);
  }

  return {
    /** Called by the routes once the server is ready: the policy names only routes that exist. */
    bindRoutes(check: RouteCheck) {
      hasRoute = check;
      known = null;
    },

    build,

    current,

    /** A stored version, or 404. */
    async version(version: number): Promise<PolicyView> {
      const row = await deps.db.system((tx) => deps.repo.find(tx, version));
      if (!row) throw notFound('policy version');
      return view(row);
    },

    /** Every stored version, newest first (the current one is made sure of first). */
    async versions(): Promise<PolicyVersionSummary[]> {
      const latest = await current();
      const rows = await deps.db.system((tx) => deps.repo.list(tx));
      return rows.map((r) => ({
        version: r.version,
        effectiveAt: r.effectiveAt.toISOString(),
        contentHash: r.contentHash,
        current: r.version === latest.version,
      }));
    },
  };
}

export type NoticeService = ReturnType<typeof noticeService>;
