import { type EraseRule, eraseRuleOf, exportRuleOf, type TableEntry } from '../../platform/db/datamap.ts';

/**
 * What erasure does, table by table, read from the data map (never from a list kept
 * here): a table a later module adds is erased by the rules its own map entry gives.
 */
export type ErasePlan = {
  /** Tables with a column naming a user (or their email address), in the order they are erased. */
  user: UserTablePlan[];
  /** Tables with a column naming a workspace, whose rows a workspace's deletion removes. */
  workspace: Array<{ table: string; column: string }>;
};

export type UserTablePlan = {
  table: string;
  /** Columns holding a user id or an email address, and what to do with the rows naming the person. */
  refs: Array<{ column: string; kind: 'user' | 'email'; rule: 'delete' | 'anonymise' }>;
  /** Other personal columns whose rule is `anonymise`: set to null in the person's rows (see `unsafeClears`). */
  clear: string[];
};

/** A personal column no rule covers: the data map must say what erasure does with it. */
export type Unruled = { table: string; column: string };

/** Columns the map marks personal that have no effective erase rule (the data map test lists them). */
export function unruledColumns(entries: readonly TableEntry[]): Unruled[] {
  return entries.flatMap((t) =>
    Object.entries(t.columns)
      .filter(([column, c]) => c.personal && eraseRuleOf(t, column) === null)
      .map(([column]) => ({ table: t.table, column })),
  );
}

/** What a workspace's deletion does with a table's rows: delete them, unless the map keeps them. */
function workspaceRule(t: TableEntry): EraseRule {
  if (t.erase === 'keep' || t.erase === 'legal_hold') return t.erase;
  if (t.retention === 'billing_7_years') return 'legal_hold';
  // Records kept for a legal obligation (privacy requests) outlive the workspace they concern.
  if (t.basis === 'legal_obligation') return 'keep';
  return 'delete';
}

/**
 * Builds the plan. Table `users` is erased last: deleting the account row cascades to what
 * references it by foreign key. A column naming a person counts when its export rule is
 * `subject` (a user id) or `subject_email` (an email address); a workspace column when it
 * is `workspace`.
 */
export function erasePlan(entries: readonly TableEntry[]): ErasePlan {
  const user: UserTablePlan[] = [];
  const workspace: ErasePlan['workspace'] = [];
  for (const t of entries) {
    const refs: UserTablePlan['refs'] = [];
    for (const column of Object.keys(t.columns)) {
      const ref = exportRuleOf(t, column);
      if (ref === 'workspace' && t.table !== 'workspaces' && workspaceRule(t) === 'delete') {
        workspace.push({ table: t.table, column });
      }
      if (ref !== 'subject' && ref !== 'subject_email') continue;
      const rule = eraseRuleOf(t, column);
      if (rule === 'delete' || rule === 'anonymise') {
        refs.push({ column, kind: ref === 'subject' ? 'user' : 'email', rule });
      }
    }
    if (refs.length === 0) continue;
    const named = new Set(refs.map((r) => r.column));
    const clear = Object.keys(t.columns).filter(
      (c) => !named.has(c) && t.columns[c]?.personal === true && eraseRuleOf(t, c) === 'anonymise',
    );
    user.push({ table: t.table, refs, clear });
  }
  user.sort((a, b) => Number(a.table === 'users') - Number(b.table === 'users'));
  return { user, workspace };
}

/**
 * What the live schema says about a column (`table.column` keys): whether it may be null,
 * whether it is a foreign key to `users`, and whether a CHECK constraint or a partial
 * index's predicate reads it (then null means something: "still active", "not done").
 */
export type ColumnFact = { nullable: boolean; userForeignKey: boolean; constrained: boolean };

/**
 * Columns the plan would set to null although the schema forbids it (NOT NULL) or gives
 * null a meaning (a CHECK constraint or a partial index reads the column). Such a rule
 * would make erasure fail, or turn a lifted restriction into an active one: the column's
 * map entry must say `erase: 'keep'` (or the rule must name what replaces the value).
 * Erasure refuses to run while the list is not empty; the erasure tests check it is.
 */
export function unsafeClears(plan: ErasePlan, facts: ReadonlyMap<string, ColumnFact>): Unruled[] {
  return plan.user.flatMap((t) =>
    // Only rows that stay are cleared: a table whose rows naming the person are all deleted has none.
    !t.refs.some((r) => anonymisedInPlace(t.table, r, facts))
      ? []
      : t.clear
          .filter((column) => {
            const fact = facts.get(`${t.table}.${column}`);
            return fact !== undefined && (!fact.nullable || fact.constrained);
          })
          .map((column) => ({ table: t.table, column })),
  );
}

/**
 * Whether erasure keeps the rows a reference names and changes them (the clear list then
 * applies), rather than deleting them: `anonymise`, unless the column is a foreign key to
 * users that may not be null (its rows go with the account).
 */
export function anonymisedInPlace(
  table: string,
  ref: UserTablePlan['refs'][number],
  facts: ReadonlyMap<string, ColumnFact>,
): boolean {
  const fact = facts.get(`${table}.${ref.column}`);
  return ref.rule === 'anonymise' && !(fact?.userForeignKey && !fact.nullable);
}

/** `schema.table` or `table`, quoted for SQL. */
export function quoteTable(name: string): string {
  return name
    .split('.')
    .map((part) => `"${part.replaceAll('"', '""')}"`)
    .join('.');
}

export function quoteColumn(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
