import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, expectTypeOf, it } from 'vitest';
// @ts-expect-error -- plain ESM script without types
import { generate, GENERATED_DIR, readServerSchema } from '../../scripts/generate.mjs';
import { closeCodeInfo, isTerminal, shouldReconnect } from '../../src/closeCodes.js';
import type { ErrorCode, EventPayloadMap, EventType, OddsUpdated, SubscribeResult } from '../../src/generated/protocol.js';
import { WebSocketService } from '../../src/service.js';
import type { ClientErrorCode, RealtimeEvent } from '../../src/types.js';
import { CLOSE_CODES, EVENT_TYPES, STREAM_EVENT_TYPES } from '../../src/generated/tables.js';

describe('generated from the server schema', () => {
  it('is up to date with `football-realtime schema` (run `npm run generate` if not)', async () => {
    const files = (await generate(readServerSchema())) as Record<string, string>;
    expect(Object.keys(files).sort()).toEqual(['protocol.ts', 'schema.json', 'tables.ts']);
    for (const [name, text] of Object.entries(files)) {
      const committed = readFileSync(resolve(GENERATED_DIR as string, name), 'utf8');
      expect(committed, `src/generated/${name} drifted from the server; run npm run generate`).toBe(text);
    }
  });

  it('covers all 15 event types with a payload type each', () => {
    expect(EVENT_TYPES).toHaveLength(15);
    const schema = JSON.parse(readFileSync(resolve(GENERATED_DIR as string, 'schema.json'), 'utf8'));
    expect(Object.keys(schema.$defs.EventPayloadMap.properties).sort()).toEqual([...EVENT_TYPES].sort());
    // compile-time: every event type has an entry in the payload map
    const keys: Record<EventType, true> = Object.fromEntries(EVENT_TYPES.map((t) => [t, true])) as Record<EventType, true>;
    const _check: (keyof EventPayloadMap)[] = Object.keys(keys) as EventType[];
    expect(_check).toHaveLength(15);
    expect(Object.values(STREAM_EVENT_TYPES).flat()).toHaveLength(13);
  });
});

describe('close codes', () => {
  it('follow the server table row by row', () => {
    expect(CLOSE_CODES.length).toBeGreaterThan(20);
    for (const row of CLOSE_CODES) {
      expect(shouldReconnect(row.code), `${row.code} ${row.name}`).toBe(row.reconnect);
      expect(isTerminal(row.code), `${row.code} ${row.name}`).toBe(row.terminal);
    }
  });

  it('use the ranges: 4000-4499 reconnect, 4500-4999 terminal, unknown codes do not reconnect', () => {
    for (let c = 4000; c <= 4499; c++) expect(shouldReconnect(c)).toBe(true);
    for (let c = 4500; c <= 4999; c++) {
      expect(shouldReconnect(c)).toBe(false);
      expect(isTerminal(c)).toBe(true);
    }
    expect([1000, 1002, 1003, 1007, 1008, 1009, 3000, 5000].map(shouldReconnect)).toEqual(Array(8).fill(false));
    expect([1001, 1005, 1006, 1011, 1012, 1013, 1014].map(shouldReconnect)).toEqual(Array(7).fill(true));
    expect(closeCodeInfo(4501)?.name).toBe('UNAUTHORIZED');
  });
});

describe('types', () => {
  it('give handlers the payload type of their event (checked by tsc in npm test)', () => {
    const svc = new WebSocketService({ url: 'ws://x/realtime/ws', WebSocket: class {} as never });
    svc.on('prediction_created', (e) => {
      expectTypeOf(e.event_type).toEqualTypeOf<'prediction_created'>();
      expectTypeOf(e.data.confidence).toEqualTypeOf<number>();
      expectTypeOf(e.data.prediction).toEqualTypeOf<'home_win' | 'draw' | 'away_win'>();
    });
    svc.on('match_score_changed', (e) => expectTypeOf(e.data.home_score).toEqualTypeOf<number>());
    svc.on('error', (e) => {
      if (e.source === 'client') expectTypeOf(e.data.code).toEqualTypeOf<ClientErrorCode>();
      else expectTypeOf(e.data.code).toEqualTypeOf<ErrorCode>();
    });
    expectTypeOf<RealtimeEvent<'odds_updated'>['data']>().toEqualTypeOf<OddsUpdated>();
    const sub = svc.subscribe(['prediction_created'], { match_ids: [1], min_confidence: 0.7 });
    expectTypeOf(sub.ready).resolves.toEqualTypeOf<SubscribeResult>();
    sub.unsubscribe();
  });
});
