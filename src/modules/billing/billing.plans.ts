import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError } from '../../config.ts';
import { MAX_AMOUNT_MICROS } from './billing.ledger.ts';

/**
 * Plans: what a workspace's subscription includes. One plan at a time per workspace, with a
 * history of changes (workspace_plans). Money in micro-units (1 USD = 1,000,000).
 */
export type Plan = {
  id: string;
  name: string;
  /** Credits granted each month. */
  monthlyCreditsMicros: number;
  /** Gateway requests per minute for the whole workspace (null = no plan limit). */
  rateLimitRpm: number | null;
  /** Members, open invitations included (null = no limit). */
  seats: number | null;
  auditRetentionMonths: number;
  features: string[];
};

export const DEFAULT_PLAN = 'free';

/**
 * The shipped plans; `freeCreditsMicros` is BERTH_FREE_CREDITS_USD in micro-units. They set
 * no rate or seat limits (a self-hosted install should not throttle its own people by
 * surprise): an operator who sells plans sets them in BERTH_PLANS_FILE.
 */
export function defaultPlans(freeCreditsMicros: number): Map<string, Plan> {
  const plans: Plan[] = [
    {
      id: 'free',
      name: 'Free',
      monthlyCreditsMicros: freeCreditsMicros,
      rateLimitRpm: null,
      seats: null,
      auditRetentionMonths: 13,
      features: ['gateway'],
    },
    {
      id: 'starter',
      name: 'Starter',
      monthlyCreditsMicros: 20_000_000,
      rateLimitRpm: null,
      seats: null,
      auditRetentionMonths: 13,
      features: ['gateway', 'agents', 'knowledge'],
    },
    {
      id: 'scale',
      name: 'Scale',
      monthlyCreditsMicros: 200_000_000,
      rateLimitRpm: null,
      seats: null,
      auditRetentionMonths: 84,
      features: ['gateway', 'agents', 'knowledge', 'sso'],
    },
    {
      id: 'enterprise',
      name: 'Enterprise',
      monthlyCreditsMicros: 0,
      rateLimitRpm: null,
      seats: null,
      auditRetentionMonths: 84,
      features: ['gateway', 'agents', 'knowledge', 'sso', 'invoicing'],
    },
  ];
  return new Map(plans.map((p) => [p.id, p]));
}

const PlanEntry = z.strictObject({
  name: z.string().trim().min(1).max(80).optional(),
  monthlyCreditsMicros: z.number().int().min(0).max(MAX_AMOUNT_MICROS).optional(),
  rateLimitRpm: z.number().int().min(1).max(100_000_000).nullable().optional(),
  seats: z.number().int().min(1).max(1_000_000).nullable().optional(),
  auditRetentionMonths: z.number().int().min(1).max(240).optional(),
  features: z
    .array(z.string().regex(/^[a-z][a-z0-9_-]{0,39}$/))
    .max(50)
    .optional(),
});

/**
 * The operator's plans (BERTH_PLANS_FILE): a JSON object keyed by plan id whose entries
 * change shipped plans field by field, or add plans (then every field is required). The
 * Free plan (new workspaces' plan) always exists; its credits come from
 * BERTH_FREE_CREDITS_USD unless the file sets them. A bad file stops start-up, naming it.
 *
 * @example { "starter": { "monthlyCreditsMicros": 25000000 }, "team": { "name": "Team", ... } }
 */
export function plansFromFile(file: string | undefined, freeCreditsMicros: number): Map<string, Plan> {
  const plans = defaultPlans(freeCreditsMicros);
  if (!file) return plans;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw new ConfigError('BERTH_PLANS_FILE', `${file} is not readable JSON`);
  }
  const result = z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,39}$/), PlanEntry).safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new ConfigError('BERTH_PLANS_FILE', `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  for (const [id, entry] of Object.entries(result.data)) {
    const base = plans.get(id);
    const fields = Object.fromEntries(Object.entries(entry).filter(([, v]) => v !== undefined));
    if (base) {
      plans.set(id, { ...base, ...fields });
      continue;
    }
    const missing = [
      'name',
      'monthlyCreditsMicros',
      'rateLimitRpm',
      'seats',
      'auditRetentionMonths',
      'features',
    ].filter((k) => !(k in entry));
    if (missing.length > 0) {
      throw new ConfigError('BERTH_PLANS_FILE', `${id}: a new plan needs ${missing.join(', ')}`);
    }
    plans.set(id, { id, ...(fields as Omit<Plan, 'id'>) });
  }
  return plans;
}
