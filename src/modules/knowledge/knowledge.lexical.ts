/**
 * What lexical search indexes and queries, per knowledge base text search setting.
 *
 * A Postgres text search configuration (`simple`, `english`, ...) splits words at spaces and
 * punctuation, so text in scripts written without spaces (Chinese, Japanese; Korean words
 * are long) would be one huge word. The `cjk` setting indexes such runs as overlapping
 * character bigrams under the `simple` configuration, and writes queries the same way, so
 * `京都` finds `東京都に住む` (bigrams 東京 京都 都に に住 住む). Latin words in the same
 * text stay words.
 */

const CJK_RUN = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]+/gu;

/** The value of the `cjk` setting (every other value names a Postgres configuration). */
export const CJK = 'cjk';

/** Text with each run of CJK characters written as its overlapping bigrams (a single character stays). */
export function cjkBigrams(text: string): string {
  return text.replace(CJK_RUN, (run) => {
    const chars = [...run];
    if (chars.length === 1) return ` ${run} `;
    const grams: string[] = [];
    for (let i = 0; i + 1 < chars.length; i++) grams.push(`${chars[i]}${chars[i + 1]}`);
    return ` ${grams.join(' ')} `;
  });
}

/** How a chunk is indexed: the configuration, and the text when it is not the chunk's own (null). */
export function indexingOf(textSearch: string, text: string): { searchConfig: string; searchText: string | null } {
  if (textSearch !== CJK) return { searchConfig: textSearch, searchText: null };
  const searchText = cjkBigrams(text);
  return { searchConfig: 'simple', searchText: searchText === text ? null : searchText };
}

/**
 * How a query matches: `any` (a chunk with any of its words matches; ts_rank_cd ranks chunks
 * with more of them, closer together, first), what a question in natural language needs; or
 * `websearch` (Postgres' web-search syntax: words ANDed, "a phrase", or, -excluded) when the
 * query uses that syntax.
 */
export type QueryMatch = 'any' | 'websearch';

const WEBSEARCH_SYNTAX = /"|(^|\s)-\S|\sor\s/i;

/** How a query is read: the configuration, the query text and how its words match. */
export function queryOf(textSearch: string, query: string): { config: string; text: string; match: QueryMatch } {
  const match: QueryMatch = WEBSEARCH_SYNTAX.test(query) ? 'websearch' : 'any';
  if (textSearch !== CJK) return { config: textSearch, text: query, match };
  return { config: 'simple', text: cjkBigrams(query), match };
}
