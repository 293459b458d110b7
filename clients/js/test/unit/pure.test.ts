import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../src/backoff.js';
import { coveredEventTypes, matchesFilter, streamsOf } from '../../src/filters.js';
import { StreamTracker } from '../../src/streams.js';

describe('backoffDelay', () => {
  it('stays within [min, min(max, min * 2^attempt)] and never exceeds max', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (let attempt = 0; attempt < 40; attempt++) {
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt, 500, 20_000, random);
        expect(d).toBeGreaterThanOrEqual(500);
        expect(d).toBeLessThanOrEqual(Math.min(20_000, 500 * 2 ** attempt));
      }
    }
  });

  it('spreads delays (full jitter) rather than clustering at the ceiling', () => {
    const delays = Array.from({ length: 200 }, () => backoffDelay(6, 500, 20_000));
    expect(Math.min(...delays)).toBeLessThan(8000);
    expect(Math.max(...delays)).toBeGreaterThan(12_000);
  });
});

describe('matchesFilter (the server semantics)', () => {
  const types = ['prediction_created'] as const;
  it('needs every set field; any value inside a list; strict on missing fields', () => {
    const f = { match_ids: [1, 2], min_confidence: 0.7 };
    expect(matchesFilter(types, f, 'prediction_created', { match_id: 1, confidence: 0.7 })).toBe(true);
    expect(matchesFilter(types, f, 'prediction_created', { match_id: 3, confidence: 0.9 })).toBe(false);
    expect(matchesFilter(types, f, 'prediction_created', { match_id: 2, confidence: 0.69 })).toBe(false);
    expect(matchesFilter(types, f, 'prediction_created', { match_id: 2 })).toBe(false);
    expect(matchesFilter(types, f, 'prediction_updated', { match_id: 1, confidence: 0.9 })).toBe(false);
    expect(matchesFilter(types, { leagues: ['英超'] }, 'prediction_created', { league: '英超' })).toBe(true);
    expect(matchesFilter(types, { leagues: ['英超'] }, 'prediction_created', {})).toBe(false);
    expect(matchesFilter(types, {}, 'prediction_created', {})).toBe(true);
    expect(matchesFilter(types, { match_ids: [1] }, 'prediction_created', { match_id: '1' })).toBe(false);
  });

  it('derives event types and streams like the server', () => {
    expect(coveredEventTypes('odds', {})).toEqual(['odds_updated', 'odds_significant_change']);
    expect(coveredEventTypes('matches', { event_types: ['match_ended'] })).toEqual(['match_ended']);
    expect(coveredEventTypes(undefined, { event_types: ['match_ended', 'odds_updated'] })).toEqual([
      'match_ended',
      'odds_updated',
    ]);
    expect(streamsOf(['odds_updated', 'match_ended', 'match_started'])).toEqual(['matches', 'odds']);
  });
});

describe('StreamTracker', () => {
  it('suppresses duplicates among many out-of-order offsets, with bounded memory', () => {
    const t = new StreamTracker();
    t.begin(['odds']);
    t.settle(['odds'], { odds: { epoch: 'e', offset: 0 } });
    const delivered: number[] = [];
    const offsets = Array.from({ length: 10_000 }, (_, i) => i + 1);
    for (const o of [...offsets, ...offsets.slice(-100), 5000]) t.receive('odds', o, () => delivered.push(o));
    expect(delivered).toEqual(offsets);
    expect(t.duplicates).toBe(101);
    expect(t.since('odds')).toEqual({ epoch: 'e', offset: 10_000 });
  });

  it('a partial replay from an earlier offset of the same epoch drops what was delivered', () => {
    // A resumed session beyond the history: critical events replayed after the server's
    // acknowledged offset (1), though this client had delivered up to 3.
    const t = new StreamTracker();
    t.restore('matches', 'e', 3);
    t.reset();
    t.begin(['matches']);
    const delivered: number[] = [];
    for (const o of [2, 3, 6, 7]) t.receive('matches', o, () => delivered.push(o));
    const lost = new Set(['matches'] as const);
    t.settle(['matches'], { matches: { epoch: 'e', offset: 7, replay_after: 1 } as never }, { lost });
    t.receive('matches', 8, () => delivered.push(8));
    expect(delivered).toEqual([6, 7, 8]);
    expect(t.duplicates).toBe(2);
    // Under a new epoch the replay counts from its start.
    const n = new StreamTracker();
    n.restore('matches', 'old', 3);
    n.begin(['matches']);
    const fresh: number[] = [];
    for (const o of [1, 2]) n.receive('matches', o, () => fresh.push(o));
    n.settle(['matches'], { matches: { epoch: 'new', offset: 2, replay_after: 0 } as never }, { lost });
    expect(fresh).toEqual([1, 2]);
  });
});
