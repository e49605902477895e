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
  seats: number | null;
  auditRetentionMonths: number;
  features: string[];
};

export const DEFAULT_PLAN = 'free';

/** The shipped plans; `freeCreditsMicros` is BERTH_FREE_CREDITS_USD in micro-units. */
export function defaultPlans(freeCreditsMicros: number): Map<string, Plan> {
  const plans: Plan[] = [
    {
      id: 'free',
      name: 'Free',
      monthlyCreditsMicros: freeCreditsMicros,
      rateLimitRpm: 60,
      seats: 3,
      auditRetentionMonths: 13,
      features: ['gateway'],
    },
    {
      id: 'starter',
      name: 'Starter',
      monthlyCreditsMicros: 20_000_000,
      rateLimitRpm: 600,
      seats: 10,
      auditRetentionMonths: 13,
      features: ['gateway', 'agents', 'knowledge'],
    },
    {
      id: 'scale',
      name: 'Scale',
      monthlyCreditsMicros: 200_000_000,
      rateLimitRpm: 6000,
      seats: 100,
      auditRetentionMonths: 84,
      features: ['gateway', 'agents', 'knowledge', 'sso', 'budgets'],
    },
    {
      id: 'enterprise',
      name: 'Enterprise',
      monthlyCreditsMicros: 0,
      rateLimitRpm: null,
      seats: null,
      auditRetentionMonths: 84,
      features: ['gateway', 'agents', 'knowledge', 'sso', 'budgets', 'invoicing'],
    },
  ];
  return new Map(plans.map((p) => [p.id, p]));
}
