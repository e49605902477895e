import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import {
  type DocumentView,
  type KnowledgeBaseView,
  type SearchResult,
  UPLOAD_LIMITS,
  type UploadResult,
} from '../modules/knowledge/index.ts';
import { parsePositiveInt } from './gateway.commands.ts';
import { callServer, refusal, type ServerTarget, type WorkspaceHttpOpts, workspaceOf } from './http.ts';
import type { GlobalOptions } from './index.ts';
import { CliError, EXIT, emit, type Io } from './output.ts';

/** The search modes (the server's default: hybrid with an embeddings model, else lexical). */
const SEARCH_MODES = ['lexical', 'vector', 'hybrid'] as const;

/** Upload requests may carry many large files: far longer than the 30 s of a JSON call. */
const UPLOAD_TIMEOUT_MS = 10 * 60_000;
/** Status polls: quick at first (small files are done in a moment), then once a second. */
const POLL_DELAYS_MS = [200, 400, 700];
const POLL_EVERY_MS = 1000;

/** An Io whose stderr may be a terminal (set by the real CLI; test Ios leave it out: plain lines). */
export type TtyAwareIo = Io & { errIsTty?: boolean };

type Upload = UploadResult['data'][number];

const DONE = new Set(['ready', 'failed']);
const ref = (id: string) => `/${encodeURIComponent(id)}`;

/**
 * Text from documents (titles, file names, chunk text) is customer content: control
 * characters are replaced, so an uploaded file cannot move the cursor or recolour the terminal.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is replaced
const printable = (text: string) => text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');

function snippet(text: string, max = 200): string {
  const flat = printable(text).replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function withHttp(cmd: Command, scopes: string): Command {
  return cmd
    .option('--url <url>', 'server URL (BERTH_URL, default http://127.0.0.1:8080)')
    .option('--api-key <key>', `API key (BERTH_API_KEY) with ${scopes}`)
    .option('--workspace <id>', "the workspace (default: the API key's)");
}

async function knowledgeOf(opts: WorkspaceHttpOpts, io: Io): Promise<{ target: ServerTarget; base: string }> {
  const { target, workspaceId } = await workspaceOf(opts, io.env);
  return { target, base: `/api/workspaces/${encodeURIComponent(workspaceId)}/knowledge` };
}

/** A knowledge base by id (`kb_...`) or name (names are unique without regard to case). */
async function resolveBase(target: ServerTarget, base: string, nameOrId: string): Promise<KnowledgeBaseView> {
  const { data } = await callServer<{ data: KnowledgeBaseView[] }>(target, 'GET', base);
  const found =
    data.find((kb) => kb.id === nameOrId) ?? data.find((kb) => kb.name.toLowerCase() === nameOrId.toLowerCase());
  if (!found) throw new CliError(`No knowledge base named ${nameOrId}.`, EXIT.refused, 'not_found');
  return found;
}

function baseLine(kb: KnowledgeBaseView): string {
  const d = kb.documents;
  const docs = `${d.ready} ready, ${d.queued + d.processing} pending, ${d.failed} failed`;
  const models = `${kb.embeddingModel ? `; embeddings ${kb.embeddingModel}` : ''}${kb.rerankModel ? `; rerank ${kb.rerankModel}` : ''}`;
  return `${kb.id}  ${printable(kb.name)}  (${docs}; text search ${kb.textSearch}${models})`;
}

function documentLine(doc: DocumentView, duplicate = false): string {
  const state =
    doc.status === 'ready'
      ? `ready, ${doc.chunkCount} chunk${doc.chunkCount === 1 ? '' : 's'}${doc.kind ? `, ${doc.kind}` : ''}`
      : doc.status === 'failed'
        ? `failed: ${doc.failure?.code ?? 'processing_failed'} (${printable(doc.failure?.reason ?? '')})`
        : `${doc.status} ${doc.progress}%`;
  return `${doc.id}  ${printable(doc.filename)}  ${state}${duplicate ? '  [already uploaded]' : ''}`;
}

function failedLine(doc: DocumentView): string {
  return `${printable(doc.filename)}: ${doc.failure?.code ?? 'processing_failed'}: ${printable(doc.failure?.reason ?? '')}`;
}

/** One result with its citation: rank, title and heading path, document, character offsets, score, text. */
function resultLines(r: SearchResult['data'][number], rank: number): string {
  const where = [r.title, ...r.headingPath.filter((h) => h !== r.title)].map(printable).join(' > ');
  const ranks = [
    r.lexicalRank !== null && r.vectorRank !== null ? `lexical #${r.lexicalRank}, vector #${r.vectorRank}` : '',
    r.rerankScore !== null ? `relevance ${r.rerankScore}/10` : '',
  ].filter(Boolean);
  return [
    `${rank}. ${where}`,
    `   ${r.documentId} chunk ${r.chunkIndex}, chars ${r.startOffset}-${r.endOffset}, score ${r.score.toFixed(4)}${
      ranks.length ? ` (${ranks.join('; ')})` : ''
    }`,
    `   ${snippet(r.text)}`,
  ].join('\n');
}

/**
 * `--meta` / `--where` key=value pairs as metadata: `true`/`false` are booleans, a number is a
 * number, anything else a string (quote nothing: the shell already did).
 */
function metadataOf(pairs: string[], flag: string): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new CliError(`${flag}: key=value (got ${pair}).`, EXIT.usage, 'invalid_metadata');
    const key = pair.slice(0, eq);
    const raw = pair.slice(eq + 1);
    out[key] =
      raw === 'true' ? true : raw === 'false' ? false : raw !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  }
  return out;
}

/** The files of an upload, read before anything is sent: a missing or oversize file stops it with exit 2. */
async function readFiles(files: string[]): Promise<Array<{ name: string; bytes: Uint8Array<ArrayBuffer> }>> {
  const out: Array<{ name: string; bytes: Uint8Array<ArrayBuffer> }> = [];
  for (const file of files) {
    let size: number;
    try {
      const s = await stat(file);
      if (!s.isFile()) throw new Error('not a file');
      size = s.size;
    } catch {
      throw new CliError(`Cannot read ${file}.`, EXIT.usage, 'file_unreadable');
    }
    if (size > UPLOAD_LIMITS.maxFileBytes) {
      throw new CliError(
        `${file} is larger than ${UPLOAD_LIMITS.maxFileBytes / 1024 / 1024} MiB, the most a document may be.`,
        EXIT.usage,
        'file_too_large',
      );
    }
    out.push({ name: path.basename(file), bytes: await readFile(file) });
  }
  return out;
}

/** One multipart request with a `file` part per file; error answers exit 4 with the server's code. */
async function sendFiles(
  target: ServerTarget,
  urlPath: string,
  files: Array<{ name: string; bytes: Uint8Array<ArrayBuffer> }>,
  metadata: Record<string, string | number | boolean> | undefined,
): Promise<UploadResult> {
  const form = new FormData();
  if (metadata) form.append('metadata', JSON.stringify(metadata));
  for (const f of files) form.append('file', new Blob([f.bytes]), f.name);
  let res: Response;
  try {
    res = await fetch(`${target.url}${urlPath}`, {
      method: 'POST',
      headers: { accept: 'application/json', ...(target.apiKey ? { authorization: `Bearer ${target.apiKey}` } : {}) },
      body: form,
      signal: AbortSignal.timeout(UPLOAD_TIMEOUT_MS),
    });
  } catch {
    throw new CliError(`Cannot reach Berth at ${target.url}.`, EXIT.unreachable, 'unreachable');
  }
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status < 200 || res.status > 299) throw refusal({ status: res.status, body, headers: res.headers }, 'upload');
  return JSON.parse(body.toString('utf8')) as UploadResult;
}

/** A progress bar of `width` cells and a percentage: `[#####-----]  50%  1/2 done`. */
export function progressBar(docs: DocumentView[], width = 24): string {
  const percent = docs.length
    ? Math.floor(docs.reduce((sum, d) => sum + (DONE.has(d.status) ? 100 : d.progress), 0) / docs.length)
    : 100;
  const filled = Math.round((percent / 100) * width);
  const done = docs.filter((d) => DONE.has(d.status)).length;
  const failed = docs.filter((d) => d.status === 'failed').length;
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(percent).padStart(3)}%  ${done}/${docs.length} done${failed ? `, ${failed} failed` : ''}`;
}

/**
 * Shows processing on stderr: on a terminal one bar redrawn in place (cursor up, clear line,
 * so each write can still end in a newline); otherwise a plain line whenever a document
 * changes status.
 */
function progressReporter(io: TtyAwareIo) {
  const tty = io.errIsTty === true && io.env.TERM !== 'dumb';
  const seen = new Map<string, string>();
  let drawn = false;
  return {
    update(docs: DocumentView[]) {
      if (tty) {
        io.err(`${drawn ? '\x1b[1A\x1b[2K' : ''}${progressBar(docs)}`);
        drawn = true;
        return;
      }
      for (const d of docs) {
        const state = d.status === 'failed' ? `failed (${d.failure?.code ?? 'processing_failed'})` : d.status;
        if (seen.get(d.id) === state) continue;
        seen.set(d.id, state);
        io.err(`${printable(d.filename)}: ${state}`);
      }
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls each unfinished document until every one is ready or failed, or `timeoutMs` passes. */
async function waitForDocuments(
  io: TtyAwareIo,
  target: ServerTarget,
  docsUrl: string,
  initial: DocumentView[],
  timeoutMs: number,
): Promise<{ docs: DocumentView[]; finished: boolean }> {
  const progress = progressReporter(io);
  const docs = new Map(initial.map((d) => [d.id, d]));
  const started = Date.now();
  progress.update([...docs.values()]);
  for (let poll = 0; ; poll++) {
    const pending = [...docs.values()].filter((d) => !DONE.has(d.status));
    if (pending.length === 0) return { docs: [...docs.values()], finished: true };
    if (Date.now() - started >= timeoutMs) return { docs: [...docs.values()], finished: false };
    await sleep(POLL_DELAYS_MS[poll] ?? POLL_EVERY_MS);
    for (const d of pending) {
      docs.set(d.id, await callServer<DocumentView>(target, 'GET', `${docsUrl}${ref(d.id)}`));
    }
    progress.update([...docs.values()]);
  }
}

/** `berth kb create|list|docs|upload|search|delete`: knowledge bases over HTTP with an API key. */
export function registerKbCommands(program: Command, io: Io, globals: () => GlobalOptions) {
  const json = () => Boolean(globals().json);
  const kb = program
    .command('kb')
    .description(
      "Knowledge bases of a workspace, over HTTP (the workspace is the calling key's unless --workspace): upload documents, search them with citations.",
    );

  withHttp(
    kb
      .command('create')
      .description('Create a knowledge base.')
      .option(
        '--embedding-model <model>',
        'an embeddings model reached through the gateway (for vector and hybrid search)',
      )
      .option('--rerank-model <model>', 'a chat model reached through the gateway that reranks search results')
      .option('--text-search <config>', 'how text is indexed: simple (default), a language (english...), or cjk'),
    'knowledge:write',
  )
    .argument('<name>', 'its name, unique in the workspace (1-100 characters)')
    .action(
      async (
        name: string,
        opts: WorkspaceHttpOpts & { embeddingModel?: string; rerankModel?: string; textSearch?: string },
      ) => {
        const { target, base } = await knowledgeOf(opts, io);
        const created = await callServer<KnowledgeBaseView>(target, 'POST', base, {
          name,
          ...(opts.embeddingModel ? { embeddingModel: opts.embeddingModel } : {}),
          ...(opts.rerankModel ? { rerankModel: opts.rerankModel } : {}),
          ...(opts.textSearch ? { textSearch: opts.textSearch } : {}),
        });
        emit(io, json(), created, `Created ${baseLine(created)}`);
      },
    );

  withHttp(
    kb.command('list').description('List knowledge bases with their documents per status.'),
    'knowledge:read',
  ).action(async (opts: WorkspaceHttpOpts) => {
    const { target, base } = await knowledgeOf(opts, io);
    const page = await callServer<{ data: KnowledgeBaseView[] }>(target, 'GET', base);
    emit(io, json(), page, page.data.length ? page.data.map(baseLine).join('\n') : 'No knowledge bases.');
  });

  withHttp(
    kb
      .command('docs')
      .description(
        "List a knowledge base's documents: id, file name, status (chunks when ready, the reason when failed).",
      )
      .option('--status <status>', 'only documents in this status (queued, processing, ready, failed)'),
    'knowledge:read',
  )
    .argument('<kb>', 'the knowledge base, by name or id (kb_...)')
    .action(async (nameOrId: string, opts: WorkspaceHttpOpts & { status?: string }) => {
      const { target, base } = await knowledgeOf(opts, io);
      const found = await resolveBase(target, base, nameOrId);
      const { data } = await callServer<{ data: DocumentView[] }>(target, 'GET', `${base}${ref(found.id)}/documents`);
      const docs = opts.status ? data.filter((d) => d.status === opts.status) : data;
      emit(io, json(), { data: docs }, docs.length ? docs.map((d) => documentLine(d)).join('\n') : 'No documents.');
    });

  withHttp(
    kb
      .command('upload')
      .description(
        `Upload files (${UPLOAD_LIMITS.maxFiles} per request, more are sent in turn) and wait until each is processed, with progress on stderr; exit 1 when a document failed (its code and reason are printed).`,
      )
      .option('--no-wait', 'print the queued documents at once instead of waiting for them')
      .option('--meta <key=value...>', 'metadata of every uploaded document, for search filters (e.g. --meta lang=en)')
      .option('--timeout <seconds>', 'stop waiting after this long (default 900); processing goes on'),
    'knowledge:write',
  )
    .argument('<kb>', 'the knowledge base, by name or id (kb_...)')
    .argument('<files...>', 'the files (text, Markdown, HTML, PDF, DOCX, CSV, JSON, source code)')
    .action(
      async (
        nameOrId: string,
        paths: string[],
        opts: WorkspaceHttpOpts & { wait: boolean; timeout?: string; meta?: string[] },
      ) => {
        const timeoutMs = (opts.timeout === undefined ? 900 : parsePositiveInt(opts.timeout, '--timeout')) * 1000;
        const metadata = opts.meta?.length ? metadataOf(opts.meta, '--meta') : undefined;
        const files = await readFiles(paths);
        const { target, base } = await knowledgeOf(opts, io);
        const found = await resolveBase(target, base, nameOrId);
        const docsUrl = `${base}${ref(found.id)}/documents`;
        const uploads: Upload[] = [];
        for (let i = 0; i < files.length; i += UPLOAD_LIMITS.maxFiles) {
          uploads.push(
            ...(await sendFiles(target, docsUrl, files.slice(i, i + UPLOAD_LIMITS.maxFiles), metadata)).data,
          );
        }
        const line = (u: Upload) => documentLine(u.document, u.outcome === 'duplicate');

        if (!opts.wait) {
          emit(
            io,
            json(),
            { data: uploads },
            `${uploads.map(line).join('\n')}\nProcessing; follow it: berth kb docs ${found.id}`,
          );
          return;
        }

        // The same file given twice is one document: each is waited for once.
        const unique = [...new Map(uploads.map((u) => [u.document.id, u.document])).values()];
        const { docs, finished } = await waitForDocuments(io, target, docsUrl, unique, timeoutMs);
        const latest = new Map(docs.map((d) => [d.id, d]));
        const final = uploads.map((u) => ({ ...u, document: latest.get(u.document.id) ?? u.document }));
        emit(io, json(), { data: final }, final.map(line).join('\n'));
        if (!finished) {
          throw new CliError(
            json()
              ? ''
              : `Stopped waiting after ${timeoutMs / 1000} s; processing goes on (berth kb docs ${found.id} shows it).`,
            EXIT.failure,
            'wait_timeout',
          );
        }
        const failed = docs.filter((d) => d.status === 'failed');
        if (failed.length > 0) {
          throw new CliError(
            json()
              ? ''
              : `${failed.length} document${failed.length === 1 ? '' : 's'} failed:\n${failed.map(failedLine).join('\n')}`,
            EXIT.failure,
            'document_failed',
          );
        }
      },
    );

  withHttp(
    kb
      .command('search')
      .description(
        'Search a knowledge base and print the results with their citations (title, document, character offsets, score, text).',
      )
      .option(
        '--mode <mode>',
        `${SEARCH_MODES.join(', ')} (default: hybrid when the knowledge base has an embeddings model, else lexical)`,
      )
      .option('--top-k <n>', 'how many results (1-100, default 10)')
      .option('--document <id...>', 'only these documents (kdoc_...)')
      .option('--where <key=value...>', 'only documents whose metadata has these values (e.g. --where lang=en)')
      .option('--rerank', "reorder the best results with the knowledge base's rerank model")
      .option('--no-rerank', 'do not rerank (the default when the knowledge base has a rerank model is to rerank)'),
    'knowledge:read',
  )
    .argument('<kb>', 'the knowledge base, by name or id (kb_...)')
    .argument(
      '<query>',
      'plain words (any may match; more matches rank higher), or web-search syntax: "a phrase", or, -excluded',
    )
    .action(
      async (
        nameOrId: string,
        query: string,
        opts: WorkspaceHttpOpts & {
          mode?: string;
          topK?: string;
          document?: string[];
          where?: string[];
          rerank?: boolean;
        },
      ) => {
        const mode = opts.mode;
        if (mode !== undefined && !(SEARCH_MODES as readonly string[]).includes(mode)) {
          throw new CliError(`--mode: one of ${SEARCH_MODES.join(', ')} (got ${mode}).`, EXIT.usage, 'invalid_mode');
        }
        const topK = opts.topK === undefined ? undefined : parsePositiveInt(opts.topK, '--top-k');
        const metadata = opts.where?.length ? metadataOf(opts.where, '--where') : undefined;
        const filters = {
          ...(opts.document?.length ? { documentIds: opts.document } : {}),
          ...(metadata ? { metadata } : {}),
        };
        const { target, base } = await knowledgeOf(opts, io);
        const found = await resolveBase(target, base, nameOrId);
        const result = await callServer<SearchResult>(target, 'POST', `${base}${ref(found.id)}/search`, {
          query,
          ...(mode ? { mode } : {}),
          ...(topK ? { topK } : {}),
          ...(opts.rerank !== undefined ? { rerank: opts.rerank } : {}),
          ...(Object.keys(filters).length ? { filters } : {}),
        });
        const pending = result.pendingDocuments
          ? `\n${result.pendingDocuments} document${result.pendingDocuments === 1 ? ' is' : 's are'} still processing and not searched.`
          : '';
        const human = result.data.length
          ? `${result.data.map((r, i) => resultLines(r, i + 1)).join('\n\n')}${pending}`
          : `No matches.${pending}`;
        emit(io, json(), result, human);
      },
    );

  withHttp(
    kb
      .command('delete')
      .description(
        'Delete a knowledge base with all its documents and chunks (needs --yes), or with --document one document.',
      )
      .option('--document <id>', 'delete only this document (kdoc_...), its original and its chunks')
      .option('--yes', 'confirm deleting the whole knowledge base'),
    'knowledge:write',
  )
    .argument('<kb>', 'the knowledge base, by name or id (kb_...)')
    .action(async (nameOrId: string, opts: WorkspaceHttpOpts & { document?: string; yes?: boolean }) => {
      if (!opts.document && !opts.yes) {
        throw new CliError(
          'Deleting a knowledge base removes every document in it: add --yes to confirm.',
          EXIT.usage,
          'confirmation_required',
        );
      }
      const { target, base } = await knowledgeOf(opts, io);
      const found = await resolveBase(target, base, nameOrId);
      if (opts.document) {
        await callServer(target, 'DELETE', `${base}${ref(found.id)}/documents${ref(opts.document)}`);
        emit(
          io,
          json(),
          { deleted: opts.document, knowledgeBaseId: found.id },
          `Deleted ${opts.document} from ${printable(found.name)}.`,
        );
        return;
      }
      await callServer(target, 'DELETE', `${base}${ref(found.id)}`);
      emit(io, json(), { deleted: found.id }, `Deleted ${found.id} (${printable(found.name)}) and its documents.`);
    });
}
