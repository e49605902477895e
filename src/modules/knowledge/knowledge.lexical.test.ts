import { describe, expect, it } from 'vitest';
import { cjkBigrams, indexingOf, queryOf } from './knowledge.lexical.ts';

describe('happy', () => {
  it('writes CJK runs as overlapping bigrams and leaves other words alone', () => {
    expect(cjkBigrams('東京都に住む').trim().split(/\s+/)).toEqual(['東京', '京都', '都に', 'に住', '住む']);
    expect(cjkBigrams('API は 速い').trim().split(/\s+/)).toEqual(['API', 'は', '速い']);
    expect(cjkBigrams('서울 특별시').trim().split(/\s+/)).toEqual(['서울', '특별', '별시']);
    expect(cjkBigrams('plain english')).toBe('plain english');
  });

  it('indexes and queries under the simple configuration for cjk, as configured otherwise', () => {
    expect(indexingOf('english', '東京')).toEqual({ searchConfig: 'english', searchText: null });
    expect(indexingOf('cjk', 'plain words')).toEqual({ searchConfig: 'simple', searchText: null });
    expect(indexingOf('cjk', '東京都')).toEqual({ searchConfig: 'simple', searchText: ' 東京 京都 ' });
    expect(queryOf('cjk', '"東京都"')).toEqual({ config: 'simple', text: '" 東京 京都 "', match: 'websearch' });
    expect(queryOf('german', 'Häuser')).toEqual({ config: 'german', text: 'Häuser', match: 'any' });
  });

  it('matches any word of a plain question, and reads web-search syntax as such', () => {
    expect(queryOf('english', 'how do refunds work').match).toBe('any');
    expect(queryOf('english', 'well-known e-mail').match).toBe('any');
    expect(queryOf('english', '"refund policy"').match).toBe('websearch');
    expect(queryOf('english', 'refund or return').match).toBe('websearch');
    expect(queryOf('english', 'refund -shipping').match).toBe('websearch');
    expect(queryOf('english', '-shipping').match).toBe('websearch');
  });
});
