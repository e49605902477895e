/**
 * Ranking metrics as BEIR reports them (pytrec_eval / trec_eval conventions): nDCG@k with
 * linear gains (a document's gain is its qrels score, discounted by log2(rank + 1)), the ideal
 * ranking taken from the qrels, not from the run; recall@k over the documents judged with a
 * score above 0. A qrels score of 0 or below is "judged not relevant": no gain, not counted.
 *
 * @example
 * ndcgAt(['d1', 'd9', 'd2'], new Map([['d1', 2], ['d2', 1]]), 10); // (2/1 + 1/2) / (2/1 + 1/log2(3))
 */

/** A query's judgements: document id to graded relevance. */
export type Judgements = ReadonlyMap<string, number>;

const discount = (rank: number) => Math.log2(rank + 1);

/** nDCG@k of one ranking (best first, document ids, duplicates counted at their first rank). */
export function ndcgAt(ranking: readonly string[], judged: Judgements, k: number): number {
  const ideal = [...judged.values()]
    .filter((g) => g > 0)
    .sort((a, b) => b - a)
    .slice(0, k)
    .reduce((sum, g, i) => sum + g / discount(i + 1), 0);
  if (ideal === 0) return 0;
  let dcg = 0;
  for (const [i, id] of dedupe(ranking).slice(0, k).entries()) {
    const g = judged.get(id) ?? 0;
    if (g > 0) dcg += g / discount(i + 1);
  }
  return dcg / ideal;
}

/** Recall@k: the share of the documents judged relevant (score > 0) found in the first k. */
export function recallAt(ranking: readonly string[], judged: Judgements, k: number): number {
  let relevant = 0;
  for (const g of judged.values()) if (g > 0) relevant++;
  if (relevant === 0) return 0;
  let found = 0;
  for (const id of dedupe(ranking).slice(0, k)) if ((judged.get(id) ?? 0) > 0) found++;
  return found / relevant;
}

/** Whether a query counts in the averages: it has at least one document judged relevant. */
export function hasRelevant(judged: Judgements): boolean {
  for (const g of judged.values()) if (g > 0) return true;
  return false;
}

export type Scores = { ndcg10: number; recall100: number; queries: number };

/**
 * Mean nDCG@10 and recall@100 over the queries with at least one relevant document. A query
 * without a ranking (no result at all) scores 0; one without relevant judgements is left out.
 */
export function evaluate(
  rankings: ReadonlyMap<string, readonly string[]>,
  qrels: ReadonlyMap<string, Judgements>,
): Scores {
  let ndcg = 0;
  let recall = 0;
  let n = 0;
  for (const [queryId, judged] of qrels) {
    if (!hasRelevant(judged)) continue;
    const ranking = rankings.get(queryId) ?? [];
    ndcg += ndcgAt(ranking, judged, 10);
    recall += recallAt(ranking, judged, 100);
    n++;
  }
  return n === 0 ? { ndcg10: 0, recall100: 0, queries: 0 } : { ndcg10: ndcg / n, recall100: recall / n, queries: n };
}

function dedupe(ids: readonly string[]): string[] {
  return [...new Set(ids)];
}
