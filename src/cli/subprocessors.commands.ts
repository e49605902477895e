import type { Command } from 'commander';
import type { BreachView, ObjectionView, RecordOfProcessing, SubprocessorView } from '../modules/privacy/index.ts';
import { callServer, serverTarget } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import { asSignedIn, type SignInOpts, withSignIn } from './privacy.commands.ts';

/**
 * `berth subprocessors add|list|retire|objections` and the operators' privacy documents
 * (`berth privacy records`, `berth privacy breaches list|add|update`), all over HTTP: the
 * public list needs nobody signed in, the rest signs in as an operator (`--email`, the
 * password from the terminal or stdin).
 */

/** A day (YYYY-MM-DD, midnight UTC) or a full ISO 8601 time, as the API wants it. */
export function timeArg(value: string, flag: string): string {
  const text = /^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value;
  const at = new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(at.getTime())) {
    throw new CliError(
      `${flag}: a day (2027-01-31) or a time (2027-01-31T09:30:00Z), got ${value}.`,
      EXIT.usage,
      'usage',
    );
  }
  return at.toISOString();
}

function categoriesArg(value: string): string[] {
  const list = value
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean);
  if (list.length === 0) throw new CliError('--categories: at least one data category.', EXIT.usage, 'usage');
  return list;
}

const day = (iso: string | null) => (iso ? iso.slice(0, 10) : '-');

function subprocessorLine(s: SubprocessorView): string {
  const until = s.retiredAt ? ` until ${day(s.retiredAt)}` : '';
  return `${s.id}  ${s.status.padEnd(9)}  ${s.name}  (${s.region})  from ${day(s.effectiveAt)}${until}  data: ${s.dataCategories.join(', ')}`;
}

function breachLine(b: BreachView): string {
  const state = b.authorityNotifiedAt
    ? `authority told ${b.authorityNotifiedAt}${b.notifiedLate ? ' (LATE)' : ''}`
    : b.overdue
      ? `OVERDUE: authority not told, deadline was ${b.notifyDeadline}`
      : `authority to be told by ${b.notifyDeadline}`;
  return `${b.id}  aware ${b.awareAt}  ${state}  data: ${b.dataCategories.join(', ')}  people: ${b.subjectsCount ?? '?'}`;
}

/** The record of processing as a table: one row per purpose, tab-separated. */
export function recordTable(r: RecordOfProcessing): string {
  const c = r.controller;
  const head = [
    `Record of processing activities, generated ${r.generatedAt}`,
    `Controller: ${c.name ?? '(not configured: BERTH_PRIVACY_CONTROLLER)'}; contact: ${c.contact ?? '-'}; DPO: ${c.dpo ?? '-'}`,
    '',
    ['PURPOSE', 'PERSONAL DATA', 'PEOPLE', 'LAWFUL BASIS', 'RECIPIENTS', 'RETENTION'].join('\t'),
  ];
  const rows = r.activities.map((a) =>
    [
      a.purpose,
      a.dataCategories.map((d) => d.category).join(', '),
      a.subjects.join(', '),
      a.bases.join(', '),
      a.recipients.length ? a.recipients.join('; ') : '-',
      a.retention.map((x) => x.class).join(', '),
    ].join('\t'),
  );
  const subs = r.subprocessors.map(
    (s) => `  ${s.name} (${s.region}): ${s.purpose}; data: ${s.dataCategories.join(', ')}`,
  );
  return [
    ...head,
    ...rows,
    '',
    `Sub-processors: ${subs.length ? '' : 'none'}`,
    ...subs,
    '',
    'Security measures:',
    ...r.generalMeasures.map((m) => `  ${m}`),
  ].join('\n');
}

/** `berth subprocessors ...`. */
export function registerSubprocessorCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const subs = program
    .command('subprocessors')
    .description('The sub-processor registry: the public list, and for operators registration (30 days of notice).');

  subs
    .command('list')
    .description('Every sub-processor and its status (public, no sign-in).')
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .action(async (opts: { url?: string }) => {
      // Public: no API key is sent, even when BERTH_API_KEY is set.
      const target = serverTarget({ ...(opts.url ? { url: opts.url } : {}) }, { BERTH_URL: io.env.BERTH_URL });
      const list = await callServer<{ data: SubprocessorView[] }>(target, 'GET', '/api/subprocessors');
      emit(
        io,
        Boolean(globals().json),
        list,
        list.data.length ? list.data.map(subprocessorLine).join('\n') : 'No sub-processors.',
      );
    });

  type AddOpts = SignInOpts & {
    name: string;
    purpose: string;
    categories: string;
    region: string;
    effective: string;
    replaces?: string;
  };
  withSignIn(
    subs
      .command('add')
      .description(
        'Operators: register a sub-processor (or a replacement); every workspace owner is mailed the notice. It may start 30 days from now at the earliest.',
      )
      .requiredOption('--name <name>', 'who it is')
      .requiredOption('--purpose <text>', 'what it does with the data')
      .requiredOption(
        '--categories <list>',
        'data categories it receives, comma-separated (e.g. account,communication)',
      )
      .requiredOption('--region <region>', 'where it processes the data')
      .requiredOption('--effective <date>', 'when it starts: a day (UTC) or a time, at least 30 days from now')
      .option('--replaces <id>', 'the sub-processor it replaces'),
    'the operator',
  ).action(async (opts: AddOpts) => {
    const body = {
      name: opts.name,
      purpose: opts.purpose,
      dataCategories: categoriesArg(opts.categories),
      region: opts.region,
      effectiveAt: timeArg(opts.effective, '--effective'),
      ...(opts.replaces ? { replaces: opts.replaces } : {}),
    };
    const added = await asSignedIn(io, opts, (s) =>
      s.send<SubprocessorView>('POST', '/api/operator/subprocessors', body),
    );
    emit(
      io,
      Boolean(globals().json),
      added,
      `Registered ${added.name} (${added.id}), starting ${added.effectiveAt}; workspace owners are being notified.`,
    );
  });

  withSignIn(
    subs
      .command('retire')
      .description('Operators: stop using a sub-processor now (it stays in the registry as retired).')
      .argument('<id>', 'the sub-processor'),
    'the operator',
  ).action(async (id: string, opts: SignInOpts) => {
    const retired = await asSignedIn(io, opts, (s) =>
      s.send<SubprocessorView>('DELETE', `/api/operator/subprocessors/${encodeURIComponent(id)}`),
    );
    emit(io, Boolean(globals().json), retired, `Retired ${retired.name} (${retired.id}).`);
  });

  withSignIn(
    subs
      .command('objections')
      .description("Operators: workspace owners' objections, newest first.")
      .option('--subprocessor <id>', 'only objections to this one'),
    'the operator',
  ).action(async (opts: SignInOpts & { subprocessor?: string }) => {
    const qs = opts.subprocessor ? `?subprocessorId=${encodeURIComponent(opts.subprocessor)}` : '';
    const list = await asSignedIn(io, opts, (s) =>
      s.get<{ data: ObjectionView[] }>(`/api/operator/subprocessors/objections${qs}`),
    );
    const lines = list.data.map(
      (o) =>
        `${o.createdAt}  ${o.subprocessorId}  ${o.workspaceId}  by ${o.userId ?? '(erased)'}${o.reason ? `: ${o.reason}` : ''}`,
    );
    emit(io, Boolean(globals().json), list, lines.length ? lines.join('\n') : 'No objections.');
  });
}

/** `berth privacy records` and `berth privacy breaches list|add|update` (operators). */
export function registerPrivacyDocumentCommands(privacy: Command, io: Io, globals: () => GlobalOptions) {
  withSignIn(
    privacy
      .command('records')
      .description('Operators: the record of processing activities (GDPR Art. 30), generated from the data map.'),
    'the operator',
  ).action(async (opts: SignInOpts) => {
    const record = await asSignedIn(io, opts, (s) => s.get<RecordOfProcessing>('/api/operator/privacy/records'));
    emit(io, Boolean(globals().json), record, recordTable(record));
  });

  const breaches = privacy
    .command('breaches')
    .description('Operators: the register of personal data breaches (GDPR Art. 33), with the 72-hour deadline.');

  withSignIn(breaches.command('list').description('Every recorded breach, newest first.'), 'the operator').action(
    async (opts: SignInOpts) => {
      const list = await asSignedIn(io, opts, (s) => s.get<{ data: BreachView[] }>('/api/operator/privacy/breaches'));
      emit(
        io,
        Boolean(globals().json),
        list,
        list.data.length ? list.data.map(breachLine).join('\n') : 'No breaches recorded.',
      );
    },
  );

  type AddOpts = SignInOpts & { description: string; categories: string; subjects?: string; awareAt: string };
  withSignIn(
    breaches
      .command('add')
      .description('Record a breach; the supervisory authority must be told within 72 hours of --aware-at.')
      .requiredOption('--description <text>', 'what happened (keep people’s data out of it)')
      .requiredOption('--categories <list>', 'affected data categories, comma-separated')
      .requiredOption('--aware-at <time>', 'when you became aware of it')
      .option('--subjects <n>', 'approximately how many people are affected'),
    'the operator',
  ).action(async (opts: AddOpts) => {
    const subjects = opts.subjects === undefined ? undefined : Number(opts.subjects);
    if (subjects !== undefined && (!Number.isInteger(subjects) || subjects < 0)) {
      throw new CliError('--subjects: a whole number of people.', EXIT.usage, 'usage');
    }
    const body = {
      description: opts.description,
      dataCategories: categoriesArg(opts.categories),
      awareAt: timeArg(opts.awareAt, '--aware-at'),
      ...(subjects === undefined ? {} : { subjectsCount: subjects }),
    };
    const b = await asSignedIn(io, opts, (s) => s.send<BreachView>('POST', '/api/operator/privacy/breaches', body));
    emit(io, Boolean(globals().json), b, `Recorded ${b.id}: tell the supervisory authority by ${b.notifyDeadline}.`);
  });

  type UpdateOpts = SignInOpts & { authorityNotifiedAt?: string; subjectsNotifiedAt?: string; measures?: string };
  withSignIn(
    breaches
      .command('update')
      .description('Record when the authority and the people were told, and the measures taken.')
      .argument('<id>', 'the breach')
      .option('--authority-notified-at <time>', 'when the supervisory authority was told')
      .option('--subjects-notified-at <time>', 'when the people affected were told')
      .option('--measures <text>', 'measures taken or proposed'),
    'the operator',
  ).action(async (id: string, opts: UpdateOpts) => {
    const body = {
      ...(opts.authorityNotifiedAt
        ? { authorityNotifiedAt: timeArg(opts.authorityNotifiedAt, '--authority-notified-at') }
        : {}),
      ...(opts.subjectsNotifiedAt
        ? { subjectsNotifiedAt: timeArg(opts.subjectsNotifiedAt, '--subjects-notified-at') }
        : {}),
      ...(opts.measures ? { measures: opts.measures } : {}),
    };
    if (Object.keys(body).length === 0) {
      throw new CliError(
        'Name something to record: --authority-notified-at, --subjects-notified-at or --measures.',
        EXIT.usage,
        'usage',
      );
    }
    const b = await asSignedIn(io, opts, (s) =>
      s.send<BreachView>('PATCH', `/api/operator/privacy/breaches/${encodeURIComponent(id)}`, body),
    );
    emit(io, Boolean(globals().json), b, breachLine(b));
  });
}
