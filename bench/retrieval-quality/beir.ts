import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Judgements } from './metrics.ts';

/**
 * A test collection in BEIR's layout: a directory with `corpus.jsonl` (`{"_id","title","text"}`
 * per line), `queries.jsonl` (`{"_id","text"}`) and the judgements, `qrels/<split>.tsv` (BEIR's
 * own datasets) or `qrels.tsv`, each a tab-separated `query-id corpus-id score` table with that
 * header. Every problem is a `BeirError` naming the file and line.
 *
 * @example
 * const c = readBeir('bench/retrieval-quality/corpus');
 * c.documents.length; c.qrels.get('q01'); // Map { 'd01' => 2, ... }
 */

export type BeirDocument = { id: string; title: string; text: string };
export type BeirQuery = { id: string; text: string };

export type BeirCollection = {
  dir: string;
  /** The judgements file read (relative to `dir`). */
  qrelsFile: string;
  documents: BeirDocument[];
  /** The queries with judgements, in the order of queries.jsonl (others are not evaluated). */
  queries: BeirQuery[];
  qrels: Map<string, Judgements>;
  /** Judgements naming a document the corpus does not have (they count as relevant and unfindable). */
  unknownDocuments: number;
  /** Lines of queries.jsonl without judgements (skipped). */
  unjudgedQueries: number;
};

export class BeirError extends Error {
  override name = 'BeirError';
}

const QRELS_HEADER = ['query-id', 'corpus-id', 'score'];

/** The judgements file of a directory: qrels/<split>.tsv first, then qrels.tsv. */
function qrelsPath(dir: string, split: string): string {
  const candidates = [path.join('qrels', `${split}.tsv`), 'qrels.tsv'];
  const found = candidates.find((c) => existsSync(path.join(dir, c)));
  if (!found) throw new BeirError(`${dir}: no judgements: expected ${candidates.join(' or ')}`);
  return found;
}

function readText(file: string): string {
  if (!existsSync(file)) throw new BeirError(`${file}: missing`);
  return readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
}

/** The JSON objects of a JSONL file, with their 1-based line numbers (blank lines skipped). */
function jsonLines(file: string): Array<{ line: number; value: Record<string, unknown> }> {
  const out: Array<{ line: number; value: Record<string, unknown> }> = [];
  for (const [i, raw] of readText(file).split(/\r?\n/).entries()) {
    if (raw.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      throw new BeirError(`${file}:${i + 1}: not a JSON object`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new BeirError(`${file}:${i + 1}: not a JSON object`);
    }
    out.push({ line: i + 1, value: value as Record<string, unknown> });
  }
  return out;
}

/** An `_id`: a non-empty string (a number is taken as its decimal string, as some exports write them). */
function idOf(file: string, line: number, v: unknown): string {
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v !== 'string' || v.trim() === '')
    throw new BeirError(`${file}:${line}: "_id" must be a non-empty string`);
  return v;
}

function stringField(file: string, line: number, obj: Record<string, unknown>, key: string, required: boolean) {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (required) throw new BeirError(`${file}:${line}: "${key}" is missing`);
    return '';
  }
  if (typeof v !== 'string') throw new BeirError(`${file}:${line}: "${key}" must be a string`);
  return v;
}

function readCorpus(file: string): BeirDocument[] {
  const seen = new Set<string>();
  const docs: BeirDocument[] = [];
  for (const { line, value } of jsonLines(file)) {
    const id = idOf(file, line, value._id);
    if (seen.has(id)) throw new BeirError(`${file}:${line}: duplicate _id ${JSON.stringify(id)}`);
    seen.add(id);
    const title = stringField(file, line, value, 'title', false).trim();
    const text = stringField(file, line, value, 'text', true).trim();
    if (title === '' && text === '') throw new BeirError(`${file}:${line}: document ${id} has neither title nor text`);
    docs.push({ id, title, text });
  }
  if (docs.length === 0) throw new BeirError(`${file}: no documents`);
  return docs;
}

function readQueries(file: string): BeirQuery[] {
  const seen = new Set<string>();
  const out: BeirQuery[] = [];
  for (const { line, value } of jsonLines(file)) {
    const id = idOf(file, line, value._id);
    if (seen.has(id)) throw new BeirError(`${file}:${line}: duplicate _id ${JSON.stringify(id)}`);
    seen.add(id);
    const text = stringField(file, line, value, 'text', true).trim();
    if (text === '') throw new BeirError(`${file}:${line}: query ${id} has an empty text`);
    out.push({ id, text });
  }
  return out;
}

function readQrels(file: string): Map<string, Map<string, number>> {
  const lines = readText(file).split(/\r?\n/);
  const header = (lines[0] ?? '').split('\t').map((h) => h.trim());
  if (header.join('\t') !== QRELS_HEADER.join('\t')) {
    throw new BeirError(`${file}:1: expected the header "${QRELS_HEADER.join('\\t')}" (tab-separated)`);
  }
  const qrels = new Map<string, Map<string, number>>();
  for (const [i, raw] of lines.entries()) {
    if (i === 0 || raw.trim() === '') continue;
    const cols = raw.split('\t');
    if (cols.length !== 3)
      throw new BeirError(`${file}:${i + 1}: expected 3 tab-separated columns, got ${cols.length}`);
    const [queryId, docId, scoreText] = cols.map((c) => c.trim()) as [string, string, string];
    if (queryId === '' || docId === '') throw new BeirError(`${file}:${i + 1}: empty query-id or corpus-id`);
    if (!/^-?\d+$/.test(scoreText))
      throw new BeirError(`${file}:${i + 1}: score ${JSON.stringify(scoreText)} is not an integer`);
    const judged = qrels.get(queryId) ?? new Map<string, number>();
    if (judged.has(docId)) throw new BeirError(`${file}:${i + 1}: ${queryId} judges ${docId} twice`);
    judged.set(docId, Number(scoreText));
    qrels.set(queryId, judged);
  }
  if (qrels.size === 0) throw new BeirError(`${file}: no judgements`);
  return qrels;
}

/** Reads and checks a BEIR directory; `split` picks qrels/<split>.tsv (default `test`). */
export function readBeir(dir: string, opts: { split?: string } = {}): BeirCollection {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new BeirError(`${dir}: not a directory`);
  const qrelsFile = qrelsPath(dir, opts.split ?? 'test');
  const documents = readCorpus(path.join(dir, 'corpus.jsonl'));
  const allQueries = readQueries(path.join(dir, 'queries.jsonl'));
  const qrels = readQrels(path.join(dir, qrelsFile));
  const queryIds = new Set(allQueries.map((q) => q.id));
  const missing = [...qrels.keys()].filter((id) => !queryIds.has(id));
  if (missing.length > 0) {
    throw new BeirError(
      `${path.join(dir, qrelsFile)}: ${missing.length} judged quer${missing.length === 1 ? 'y is' : 'ies are'} not in queries.jsonl (${missing.slice(0, 5).join(', ')})`,
    );
  }
  const docIds = new Set(documents.map((d) => d.id));
  let unknownDocuments = 0;
  for (const judged of qrels.values()) for (const id of judged.keys()) if (!docIds.has(id)) unknownDocuments++;
  const queries = allQueries.filter((q) => qrels.has(q.id));
  return {
    dir,
    qrelsFile,
    documents,
    queries,
    qrels,
    unknownDocuments,
    unjudgedQueries: allQueries.length - queries.length,
  };
}
