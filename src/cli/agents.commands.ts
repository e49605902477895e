import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { AgentDefinition, AgentSummary, AgentView, VersionView } from '../modules/agents/index.ts';
import { callServer, type ServerTarget, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';
import { registerAgentRunCommand } from './runs.commands.ts';

/** The server and the workspace's agents URL (see `workspaceOf`). */
async function agentsOf(opts: WorkspaceHttpOpts, io: Io): Promise<{ target: ServerTarget; base: string }> {
  const { target, workspaceId } = await workspaceOf(opts, io.env);
  return { target, base: `/api/workspaces/${encodeURIComponent(workspaceId)}/agents` };
}

/** A definition file (`-`: standard input), parsed as JSON; the server checks the rest. */
async function readDefinition(file: string, io: Io): Promise<unknown> {
  let text: string;
  try {
    if (file === '-') {
      const chunks: Buffer[] = [];
      for await (const chunk of io.stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
      text = Buffer.concat(chunks).toString('utf8');
    } else {
      text = await readFile(file, 'utf8');
    }
  } catch {
    throw new CliError(`Cannot read ${file}.`, EXIT.usage, 'file_unreadable');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`${file} is not JSON (an agent definition, berth.agent/v1).`, EXIT.usage, 'invalid_json');
  }
}

function parseVersion(text: string): number {
  if (!/^\d{1,7}$/.test(text) || Number(text) < 1) {
    throw new CliError(`--agent-version: a version number (1, 2, 3...), not ${text}.`, EXIT.usage, 'invalid_version');
  }
  return Number(text);
}

const published = (n: number | null) => (n === null ? 'unpublished' : `v${n}`);

function summaryLine(a: AgentSummary): string {
  const state = a.archivedAt ? 'archived' : a.unpublishedChanges ? 'draft changed' : 'published';
  return `${a.id}  ${a.name.padEnd(24)}  ${a.model.padEnd(20)}  ${published(a.latestVersion).padEnd(11)}  ${state}`;
}

function describeAgent(a: AgentView): string {
  const d = a.draft;
  const tools = d.tools.map((t) => (t.type === 'mcp' ? `mcp:${t.server}` : t.name));
  return [
    `${a.id}  ${a.name}${a.archivedAt ? `  (archived ${a.archivedAt})` : ''}`,
    `model:          ${d.model}`,
    `description:    ${d.description || '-'}`,
    `latest version: ${a.latestVersion ? `v${a.latestVersion.version} (${a.latestVersion.createdAt})` : 'none'}${a.unpublishedChanges ? ', draft has unpublished changes' : ''}`,
    `limits:         ${d.limits.max_steps} steps, ${d.limits.max_tokens} tokens, ${d.limits.timeout_seconds} s`,
    `tools:          ${tools.length ? tools.join(', ') : 'none'} (approval: ${d.tool_approval})`,
    `updated:        ${a.updatedAt}`,
  ].join('\n');
}

/**
 * `berth agents create|import|list|get|export|publish|archive|run` over HTTP, authenticated by
 * an API key (agents:read to read, agents:write to change, agents:run to run).
 */
export function registerAgentsCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const json = () => Boolean(globals().json);
  const agents = program
    .command('agents')
    .description(
      "Agent definitions of a workspace, over HTTP (the workspace is the calling key's unless --workspace).",
    );
  const http = (cmd: Command) =>
    cmd
      .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
      .option('--api-key <key>', 'API key with agents:read, and agents:write to change (BERTH_API_KEY)')
      .option('--workspace <id>', "the workspace (default: the API key's)");
  const ref = (name: string) => `/${encodeURIComponent(name)}`;

  http(
    agents
      .command('create')
      .description('Create an agent from a definition file (its draft; publish it to run it).')
      .requiredOption('--file <file>', 'the definition, JSON (berth.agent/v1); - reads standard input'),
  ).action(async (opts: WorkspaceHttpOpts & { file: string }) => {
    const body = await readDefinition(opts.file, io);
    const { target, base } = await agentsOf(opts, io);
    const made = await callServer<AgentView>(target, 'POST', base, body);
    emit(io, json(), made, `Created ${made.id} (${made.name}); publish it with: berth agents publish ${made.name}`);
  });

  http(
    agents
      .command('import')
      .description('Create an agent from an exported definition file.')
      .requiredOption('--file <file>', 'the exported definition (berth.agent/v1); - reads standard input')
      .option('--publish', 'also publish it as version 1'),
  ).action(async (opts: WorkspaceHttpOpts & { file: string; publish?: boolean }) => {
    const body = await readDefinition(opts.file, io);
    const { target, base } = await agentsOf(opts, io);
    const made = await callServer<AgentView>(
      target,
      'POST',
      `${base}/import${opts.publish ? '?publish=true' : ''}`,
      body,
    );
    const version = made.latestVersion ? `, published as v${made.latestVersion.version}` : '';
    emit(io, json(), made, `Imported ${made.id} (${made.name})${version}.`);
  });

  http(
    agents
      .command('list')
      .description('List agents: id, name, model, latest version, state.')
      .option('--archived', 'include archived agents'),
  ).action(async (opts: WorkspaceHttpOpts & { archived?: boolean }) => {
    const { target, base } = await agentsOf(opts, io);
    const data: AgentSummary[] = [];
    let cursor: string | null = null;
    do {
      const query = new URLSearchParams({ limit: '200', ...(opts.archived ? { archived: 'true' } : {}) });
      if (cursor) query.set('cursor', cursor);
      const page: { data: AgentSummary[]; nextCursor: string | null } = await callServer(
        target,
        'GET',
        `${base}?${query}`,
      );
      data.push(...page.data);
      cursor = page.nextCursor;
    } while (cursor);
    emit(io, json(), { data }, data.length ? data.map(summaryLine).join('\n') : 'No agents.');
  });

  http(agents.command('get').description('Show an agent: its draft and latest version.'))
    .argument('<agent>', 'the agent name or id (agt_...)')
    .action(async (name: string, opts: WorkspaceHttpOpts) => {
      const { target, base } = await agentsOf(opts, io);
      const a = await callServer<AgentView>(target, 'GET', `${base}${ref(name)}`);
      emit(io, json(), a, describeAgent(a));
    });

  http(
    agents
      .command('export')
      .description('Print the definition (berth.agent/v1) of the draft or of a version; never secrets.')
      // Not --version: that is the program's own flag.
      .option('--agent-version <n>', 'a published version (default: the draft)'),
  )
    .argument('<agent>', 'the agent name or id (agt_...)')
    .action(async (name: string, opts: WorkspaceHttpOpts & { agentVersion?: string }) => {
      const version = opts.agentVersion === undefined ? undefined : parseVersion(opts.agentVersion);
      const { target, base } = await agentsOf(opts, io);
      const def = await callServer<AgentDefinition>(
        target,
        'GET',
        `${base}${ref(name)}/export${version ? `?version=${version}` : ''}`,
      );
      // The definition is the output either way: the file `agents import` reads.
      io.out(JSON.stringify(def, null, 2));
    });

  http(agents.command('publish').description('Publish the draft as the next immutable version.'))
    .argument('<agent>', 'the agent name or id (agt_...)')
    .action(async (name: string, opts: WorkspaceHttpOpts) => {
      const { target, base } = await agentsOf(opts, io);
      const v = await callServer<VersionView>(target, 'POST', `${base}${ref(name)}/publish`);
      emit(io, json(), v, `Published ${v.definition.name} v${v.version} (${v.id}).`);
    });

  http(agents.command('archive').description('Archive an agent (kept with its versions; its name is free again).'))
    .argument('<agent>', 'the agent name or id (agt_...)')
    .action(async (name: string, opts: WorkspaceHttpOpts) => {
      const { target, base } = await agentsOf(opts, io);
      await callServer(target, 'DELETE', `${base}${ref(name)}`);
      emit(io, json(), { archived: name }, `Archived ${name}.`);
    });
  registerAgentRunCommand(agents, io, globals);
}
