import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RealtimeError, WebSocketService } from '../../src/service.js';
import type { ServiceEventMap, StateChange, WebSocketServiceOptions } from '../../src/types.js';
import { FakeServer } from '../support/fakeServer.js';

let server: FakeServer;
const services: WebSocketService[] = [];

function make(options: Partial<WebSocketServiceOptions> = {}): WebSocketService {
  const svc = new WebSocketService({
    url: 'ws://fake.test/realtime/ws',
    WebSocket: server.WebSocket,
    heartbeatInterval: 0,
    ...options,
  });
  services.push(svc);
  return svc;
}

/** Let the fake network and the client's timers run for `ms` of fake time. */
async function tick(ms = 0): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  // Chains of deliveries (socket open -> status -> ack -> replay...) at the same instant.
  for (let i = 0; i < 50; i++) await Promise.resolve();
}

function record<K extends keyof ServiceEventMap>(svc: WebSocketService, type: K): ServiceEventMap[K][] {
  const out: ServiceEventMap[K][] = [];
  svc.on(type, (v) => out.push(v));
  return out;
}

const PRED = (match_id: number, confidence: number, prediction_id = match_id * 10) => ({
  prediction_id,
  match_id,
  prediction: 'home_win',
  confidence,
  home_win_prob: 0.6,
  draw_prob: 0.3,
  away_win_prob: 0.1,
});

beforeEach(() => {
  vi.useFakeTimers();
  server = new FakeServer();
});

afterEach(() => {
  for (const s of services.splice(0)) s.disconnect();
  vi.useRealTimers();
});

describe('connecting', () => {
  it('refuses to start without a WebSocket implementation (Node 20 has no global one)', () => {
    expect(globalThis.WebSocket).toBeUndefined();
    expect(() => new WebSocketService({ url: 'ws://x/realtime/ws' })).toThrow(/pass \{ WebSocket \}/);
  });

  it('connects with user_id and token in the query and reports every state', async () => {
    const svc = make({ userId: 'user123', token: 'tok' });
    const states = record(svc, 'state');
    const statuses = record(svc, 'connection_status');
    expect(svc.state).toBe('idle');
    svc.connect();
    await tick();
    expect(server.last.query.get('user_id')).toBe('user123');
    expect(server.last.query.get('token')).toBe('tok');
    expect(svc.state).toBe('open');
    expect(svc.connectionId).toBe('c_1');
    expect(states.map((s) => s.state)).toEqual(['connecting', 'open']);
    // client states and the server's own status arrive on the seed's `connection_status`
    expect(statuses.map((s) => [s.source ?? 'server', s.data.status])).toEqual([
      ['client', 'connecting'],
      ['client', 'open'],
      ['server', 'connected'],
    ]);
  });

  it('asks a token function again on every connect', async () => {
    let n = 0;
    const svc = make({ token: async () => `t${++n}` });
    svc.connect();
    await tick();
    server.last.drop();
    await tick(1000);
    expect(server.sockets.map((s) => s.query.get('token'))).toEqual(['t1', 't2']);
  });

  it('disconnect() closes, stops reconnecting, and connect() later resubscribes', async () => {
    const svc = make();
    svc.subscribe('odds');
    await tick();
    svc.disconnect();
    await tick(60_000);
    expect(svc.state).toBe('closed');
    expect(server.sockets).toHaveLength(1);
    expect(server.sockets[0]!.closedByClient).toEqual({ code: 1000, reason: undefined });
    svc.connect();
    await tick();
    expect(server.sockets).toHaveLength(2);
    expect(server.last.sent.map((m) => m.type)).toEqual(['subscribe']);
  });
});

describe('subscribing', () => {
  it('sends the seed subscription exactly, connecting on first use, and delivers typed events', async () => {
    const svc = make({ userId: 'user123' });
    const got: unknown[] = [];
    svc.on('prediction_created', (event) => got.push(event.data.confidence));
    const sub = svc.subscribe(['prediction_created'], { match_ids: [1, 2, 3], min_confidence: 0.7 });
    expect(svc.state).toBe('connecting');
    await tick();
    expect(server.last.sent).toEqual([
      {
        type: 'subscribe',
        id: 1,
        data: { filters: { match_ids: [1, 2, 3], min_confidence: 0.7, event_types: ['prediction_created'] } },
      },
    ]);
    const result = await sub.ready;
    expect(result.subscription_id).toBe('sub_1');
    expect(sub.status).toBe('active');
    expect(sub.streams).toEqual(['predictions']);
    server.publish('prediction_created', PRED(1, 0.8));
    server.publish('prediction_created', PRED(9, 0.9)); // other match: not sent
    server.publish('prediction_created', PRED(2, 0.75));
    await tick();
    expect(got).toEqual([0.8, 0.75]);
  });

  it('accepts a subscription type and leaves out empty filter fields', async () => {
    const svc = make();
    svc.subscribe('matches', { leagues: ['英超', '西甲'], match_ids: undefined, min_confidence: null });
    await tick();
    expect(server.last.sent[0]).toEqual({
      type: 'subscribe',
      id: 1,
      data: { subscription_type: 'matches', filters: { leagues: ['英超', '西甲'] } },
    });
  });

  it('throws at once on an unknown subscription or event type', () => {
    const svc = make();
    expect(() => svc.subscribe('nope' as never)).toThrow(/unknown subscription type "nope"/);
    expect(() => svc.subscribe(['connection_status'])).toThrow(/not subscribable/);
    expect(() => svc.subscribe([])).toThrow(/at least one/);
  });

  it('routes each event to the subscriptions whose filters it matches', async () => {
    const svc = make();
    const a = svc.subscribe('predictions', { match_ids: [1] });
    const b = svc.subscribe('predictions', { min_confidence: 0.9 });
    const gotA: number[] = [];
    const gotB: number[] = [];
    a.on('event', (e) => gotA.push(e.offset!));
    b.on('prediction_created', (e) => gotB.push(e.offset!));
    await tick();
    server.publish('prediction_created', PRED(1, 0.5)); // a
    server.publish('prediction_created', PRED(2, 0.95)); // b
    server.publish('prediction_created', PRED(1, 0.95)); // both, sent once
    await tick();
    expect(gotA).toEqual([1, 3]);
    expect(gotB).toEqual([2, 3]);
  });

  it('a refused subscription rejects ready, emits error, and is dropped', async () => {
    const svc = make();
    server.subscribeError = 'limit_exceeded';
    const errors = record(svc, 'error');
    const sub = svc.subscribe('odds');
    await tick();
    await expect(sub.ready).rejects.toMatchObject({ name: 'RealtimeError', code: 'limit_exceeded' });
    expect(sub.status).toBe('failed');
    expect(svc.subscriptions).toHaveLength(0);
    expect(errors[0]?.data.code).toBe('limit_exceeded');
  });

  it('unsubscribe tells the server, and an unsubscribe before the ack is completed after it', async () => {
    const svc = make();
    const early = svc.subscribe('odds');
    const late = svc.subscribe('matches');
    early.unsubscribe(); // still idle: nothing sent for it at all
    await tick();
    expect(server.last.sent.map((m) => m.data.subscription_type)).toEqual(['matches']);
    await late.ready;
    const racing = svc.subscribe('predictions');
    racing.unsubscribe(); // subscribe is in flight
    late.unsubscribe();
    await tick();
    const sent = server.last.sent.filter((m) => m.type === 'unsubscribe').map((m) => m.data.subscription_id);
    expect(sent.sort()).toEqual(['sub_1', 'sub_2']);
    expect(server.last.subs.size).toBe(0);
    await expect(racing.ready).rejects.toBeInstanceOf(RealtimeError);
    const seen: unknown[] = [];
    svc.on('*', (m) => seen.push(m.event_type));
    server.publish('odds_updated', { match_id: 1, bookmaker: 'b', home_odds: 2, draw_odds: 3, away_odds: 4 });
    await tick();
    expect(seen).not.toContain('odds_updated');
  });

  it('on() returns an unsubscribe function and off() removes handlers', async () => {
    const svc = make();
    const got: number[] = [];
    const off = svc.on('match_started', () => got.push(1));
    const h = () => got.push(2);
    svc.on('match_started', h);
    svc.subscribe('matches');
    await tick();
    server.publish('match_started', { match_id: 1, home_team: 'A', away_team: 'B' });
    await tick();
    off();
    svc.off('match_started', h);
    server.publish('match_started', { match_id: 2, home_team: 'A', away_team: 'B' });
    await tick();
    expect(got).toEqual([1, 2]);
  });

  it('emits message_ack for every reply and error for server errors', async () => {
    const svc = make();
    const acks = record(svc, 'message_ack');
    const errors = record(svc, 'error');
    svc.connect();
    await tick();
    await expect(svc.join('match:1')).resolves.toEqual({ room: 'match:1', rooms: ['match:1'] });
    await expect(svc.leave('other')).rejects.toMatchObject({ code: 'not_found' });
    expect(acks.map((a) => a.data.type)).toEqual(['join']);
    expect(errors.map((e) => e.data.code)).toEqual(['not_found']);
  });

  it('a request without a reply rejects after requestTimeout', async () => {
    const svc = make({ requestTimeout: 2000 });
    svc.connect();
    await tick();
    server.handle = () => {}; // the server swallows everything
    const stats = svc.getStats();
    await tick(1999);
    let settled = false;
    stats.then(
      () => (settled = true),
      () => (settled = true),
    );
    await tick();
    expect(settled).toBe(false);
    await tick(1);
    await expect(stats).rejects.toMatchObject({ code: 'timeout' });
  });

  it('ignores a frame that is not JSON and reports it', async () => {
    const svc = make();
    const errors = record(svc, 'error');
    svc.subscribe('odds');
    await tick();
    server.last.push('not json{');
    await tick();
    expect(errors.map((e) => e.data.code)).toEqual(['invalid_server_message']);
    expect(svc.state).toBe('open');
  });
});

describe('reconnecting', () => {
  it('backs off with full jitter between 0.5 s and 5 s', async () => {
    const svc = make({ random: () => 0.999999 });
    const states = record(svc, 'state');
    server.down = true;
    svc.connect();
    await tick(200_000);
    const delays = states.filter((s) => s.state === 'reconnecting').map((s) => s.delay);
    // random ~1: the ceiling of each step, min(5000, 500 * 2^n)
    expect(delays.slice(0, 6)).toEqual([500, 1000, 2000, 4000, 5000, 5000]);
    const attempts = states.filter((s) => s.state === 'reconnecting').map((s) => s.attempt);
    expect(attempts.slice(0, 3)).toEqual([1, 2, 3]);
  });

  it('never waits less than the minimum, whatever the jitter', async () => {
    const svc = make({ random: () => 0 });
    const states = record(svc, 'state');
    server.down = true;
    svc.connect();
    await tick(10_000);
    const delays = states.filter((s) => s.state === 'reconnecting').map((s) => s.delay);
    expect(delays.length).toBeGreaterThan(5);
    expect(new Set(delays)).toEqual(new Set([500]));
  });

  it('opens the next socket only when the delay has passed', async () => {
    const svc = make({ random: () => 0.5 });
    svc.connect();
    await tick();
    server.last.drop();
    await tick();
    const wait = (svc as unknown as { state: string }).state === 'reconnecting';
    expect(wait).toBe(true);
    // attempt 0: delay = 500 + floor(0.5 * 1) = 500
    await tick(499);
    expect(server.sockets).toHaveLength(1);
    await tick(1);
    expect(server.sockets).toHaveLength(2);
    await tick();
    expect(svc.state).toBe('open');
  });

  it('gives up after maxReconnectAttempts', async () => {
    const svc = make({ maxReconnectAttempts: 3, random: () => 0 });
    const errors = record(svc, 'error');
    server.down = true;
    svc.connect();
    await tick(60_000);
    expect(server.sockets).toHaveLength(4); // the first try and 3 reconnects
    expect(svc.state).toBe('closed');
    expect(errors.map((e) => e.data.code)).toEqual(['reconnect_failed']);
    expect(svc.lastError?.code).toBe('reconnect_failed');
  });

  it('counts attempts from zero again after a successful connection', async () => {
    const svc = make({ maxReconnectAttempts: 2, random: () => 0 });
    svc.connect();
    await tick();
    for (let i = 0; i < 4; i++) {
      server.last.drop();
      await tick(1000);
      expect(svc.state).toBe('open');
    }
    expect(server.sockets).toHaveLength(5);
  });

  it.each([4500, 4501, 4502, 4503, 4504, 4505, 4506, 4999, 1002, 1003, 1008])(
    'does not reconnect after terminal close code %i',
    async (code) => {
      const svc = make();
      const errors = record(svc, 'error');
      svc.connect();
      await tick();
      server.last.serverClose(code, 'no');
      await tick(120_000);
      expect(server.sockets).toHaveLength(1);
      expect(svc.state).toBe('closed');
      expect(errors.map((e) => [e.data.code, e.data.close_code])).toEqual([['terminal_close', code]]);
    },
  );

  it.each([1001, 1006, 1011, 1012, 1013, 4000, 4001, 4002, 4003, 4499])(
    'reconnects after close code %i',
    async (code) => {
      const svc = make({ random: () => 0 });
      svc.connect();
      await tick();
      server.last.serverClose(code, 'again');
      await tick(600);
      expect(server.sockets).toHaveLength(2);
      expect(svc.state).toBe('open');
    },
  );

  it('a server that refuses at connect time with a terminal code is not retried', async () => {
    server.refuseWith = 4501;
    const svc = make();
    svc.connect();
    await tick(60_000);
    expect(server.sockets).toHaveLength(1);
    expect(svc.lastError).toMatchObject({ code: 'terminal_close', close_code: 4501 });
  });

  it('with autoReconnect off, a drop closes for good', async () => {
    const svc = make({ autoReconnect: false });
    svc.connect();
    await tick();
    server.last.drop();
    await tick(60_000);
    expect(svc.state).toBe('closed');
    expect(server.sockets).toHaveLength(1);
    expect(svc.lastError?.code).toBe('connection_lost');
  });

  it('gives up on a handshake that never completes and tries again', async () => {
    server.autoAccept = false;
    const svc = make({ connectTimeout: 3000, random: () => 0 });
    const states = record(svc, 'state');
    svc.connect();
    await tick(2999);
    expect(server.sockets).toHaveLength(1);
    await tick(1);
    expect(states.at(-1)).toMatchObject({ state: 'reconnecting', code: 1006 });
    expect(server.sockets[0]!.closedByClient).not.toBeNull();
    server.autoAccept = true;
    await tick(500);
    expect(server.sockets).toHaveLength(2);
    expect(svc.state).toBe('open');
  });

  it('resubscribes everything and rejoins rooms after a reconnect', async () => {
    const svc = make({ random: () => 0 });
    const a = svc.subscribe(['prediction_created'], { match_ids: [1, 2, 3], min_confidence: 0.7 });
    svc.subscribe('matches', { leagues: ['英超'] });
    await tick();
    await svc.join('match:1');
    expect(a.id).toBe('sub_1');
    server.last.drop();
    await tick(500);
    const again = server.last.sent;
    expect(again.map((m) => [m.type, m.data.subscription_type ?? m.data.filters?.event_types ?? m.data.room])).toEqual([
      ['subscribe', ['prediction_created']],
      ['subscribe', 'matches'],
      ['join', 'match:1'],
    ]);
    expect(again[0]!.data.filters).toEqual({ match_ids: [1, 2, 3], min_confidence: 0.7, event_types: ['prediction_created'] });
    await tick();
    expect(a.id).toBe('sub_3');
    expect(a.status).toBe('active');
    expect(server.last.subs.size).toBe(2);
  });
});

describe('recovery and duplicates', () => {
  it('sends since with the last epoch/offset per stream after a reconnect', async () => {
    const svc = make({ random: () => 0 });
    svc.subscribe('predictions');
    await tick();
    server.publish('prediction_created', PRED(1, 0.5));
    server.publish('prediction_created', PRED(2, 0.5));
    await tick();
    expect(svc.position('predictions')).toEqual({ epoch: 'epoch-1', offset: 2 });
    server.last.drop();
    await tick(500);
    expect(server.last.sent[0]!.data.since).toEqual({ predictions: { epoch: 'epoch-1', offset: 2 } });
  });

  it('a brand-new subscription does not ask for history', async () => {
    const svc = make();
    svc.subscribe('predictions');
    await tick();
    server.publish('prediction_created', PRED(1, 0.5));
    await tick();
    svc.subscribe('predictions', { match_ids: [1] });
    await tick();
    expect(server.last.sent[1]!.data.since).toBeUndefined();
  });

  it.each([false, true])('replays missed events exactly once, in order (replay before ack: %s)', async (before) => {
    server.recovery = true;
    server.replayBeforeAck = before;
    const svc = make({ random: () => 0 });
    const a = svc.subscribe('predictions', { match_ids: [1] });
    const b = svc.subscribe('predictions', { min_confidence: 0.9 });
    const got: number[] = [];
    svc.on('prediction_created', (e) => got.push(e.offset!));
    const failures = record(svc, 'recovery_failed');
    await tick();
    server.publish('prediction_created', PRED(1, 0.95)); // 1: both
    await tick();
    server.last.drop();
    await tick();
    server.publish('prediction_created', PRED(1, 0.5)); // 2: a
    server.publish('prediction_created', PRED(2, 0.95)); // 3: b
    server.publish('prediction_created', PRED(1, 0.99)); // 4: both -> replayed twice
    server.publish('prediction_created', PRED(3, 0.1)); // 5: neither
    await tick(500);
    await tick();
    server.publish('prediction_created', PRED(1, 0.96)); // 6: live
    await tick();
    // a's replay (2, 4) then b's (3, 4): 4 once; order within each replay kept
    expect(got).toEqual([1, 2, 4, 3, 6]);
    expect(failures).toEqual([]);
    expect(svc.duplicatesDropped).toBe(1);
    expect(a.status).toBe('active');
    expect(b.result?.recovered).toBe(true);
  });

  it('drops events at or below the last delivered offset', async () => {
    const svc = make();
    const got: number[] = [];
    svc.on('odds_updated', (e) => got.push(e.offset!));
    svc.subscribe('odds');
    await tick();
    const ev = (offset: number) => ({
      event_type: 'odds_updated',
      data: { match_id: 1, bookmaker: 'b', home_odds: 2, draw_odds: 3, away_odds: 4 },
      timestamp: new Date().toISOString(),
      stream: 'odds',
      offset,
    });
    for (const o of [1, 2, 2, 1, 3, 3]) server.last.push(ev(o));
    await tick();
    expect(got).toEqual([1, 2, 3]);
    expect(svc.duplicatesDropped).toBe(3);
  });

  it('reports recovery_failed when the server cannot recover, and restarts from the new epoch', async () => {
    const svc = make({ random: () => 0 });
    const sub = svc.subscribe(['prediction_created'], { match_ids: [1] });
    const failures = record(svc, 'recovery_failed');
    const perSub: string[] = [];
    sub.on('recovery_failed', (f) => perSub.push(f.reason));
    const got: number[] = [];
    svc.on('prediction_created', (e) => got.push(e.offset!));
    await tick();
    for (let i = 0; i < 5; i++) server.publish('prediction_created', PRED(1, 0.5));
    await tick();
    expect(got).toEqual([1, 2, 3, 4, 5]);
    server.restart('epoch-2'); // closes with 1012, offsets start again at 1
    await tick(500);
    await tick();
    expect(server.last.sent[0]!.data.since).toEqual({ predictions: { epoch: 'epoch-1', offset: 5 } });
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ streams: ['predictions'], reason: 'recovery is not available on this server' });
    expect(failures[0]!.subscription).toBe(sub);
    expect(perSub).toEqual(['recovery is not available on this server']);
    expect(svc.position('predictions')).toEqual({ epoch: 'epoch-2', offset: 0 });
    server.publish('prediction_created', PRED(1, 0.5)); // offset 1 of the new epoch: new, not a duplicate
    await tick();
    expect(got).toEqual([1, 2, 3, 4, 5, 1]);
  });

  it('after a new epoch delivers its replay from the start once, in order, after recovery_failed', async () => {
    server.recovery = true;
    const svc = make({ random: () => 0 });
    svc.subscribe(['prediction_created'], { match_ids: [1] });
    const seen: string[] = [];
    svc.on('recovery_failed', (f) => seen.push(`failed:${f.streams.join(',')}`));
    svc.on('prediction_created', (e) => seen.push(String(e.offset)));
    await tick();
    for (let i = 0; i < 3; i++) server.publish('prediction_created', PRED(1, 0.5));
    await tick();
    server.restart('epoch-2');
    for (let i = 0; i < 4; i++) server.publish('prediction_created', PRED(1, 0.5)); // before we are back
    await tick(500);
    await tick();
    expect(server.last.sent[0]!.data.since).toEqual({ predictions: { epoch: 'epoch-1', offset: 3 } });
    server.publish('prediction_created', PRED(1, 0.5));
    await tick();
    expect(seen).toEqual(['1', '2', '3', 'failed:predictions', '1', '2', '3', '4', '5']);
    expect(svc.position('predictions')).toEqual({ epoch: 'epoch-2', offset: 5 });
  });

  it('holds events that race the subscribe ack until it names their epoch', async () => {
    const svc = make({ random: () => 0 });
    svc.subscribe('odds');
    const got: number[] = [];
    svc.on('odds_updated', (e) => got.push(e.offset!));
    await tick();
    for (let i = 0; i < 3; i++) {
      server.publish('odds_updated', { match_id: 1, bookmaker: 'b', home_odds: 2, draw_odds: 3, away_odds: 4 });
    }
    await tick();
    server.restart('epoch-2');
    // the new server delivers offset 1 of epoch-2 before its ack, whose position already counts it
    const origHandle = server.handle.bind(server);
    server.handle = (sock, msg) => {
      if (msg.type === 'subscribe') {
        server.publish('odds_updated', { match_id: 1, bookmaker: 'b', home_odds: 2, draw_odds: 3, away_odds: 4 });
        sock.push({
          event_type: 'odds_updated',
          data: { match_id: 1, bookmaker: 'b', home_odds: 2, draw_odds: 3, away_odds: 4 },
          timestamp: new Date().toISOString(),
          stream: 'odds',
          offset: 1,
        });
      }
      origHandle(sock, msg);
    };
    await tick(500);
    await tick();
    expect(got).toEqual([1, 2, 3, 1]);
  });

  it('falls back to a plain subscribe when the server refuses our position', async () => {
    const svc = make({ random: () => 0 });
    const sub = svc.subscribe('odds');
    const failures = record(svc, 'recovery_failed');
    await tick();
    const origHandle = server.handle.bind(server);
    server.handle = (sock, msg) => {
      if (msg.type === 'subscribe' && msg.data.since) {
        sock.push({
          event_type: 'error',
          data: { id: msg.id, type: 'subscribe', code: 'invalid_since', message: 'bad' },
          timestamp: new Date().toISOString(),
        });
        return;
      }
      origHandle(sock, msg);
    };
    server.last.drop();
    await tick(500);
    await tick();
    expect(server.last.sent.map((m) => m.data.since)).toEqual([{ odds: { epoch: 'epoch-1', offset: 0 } }, undefined]);
    expect(sub.status).toBe('active');
    expect(failures.map((f) => f.streams)).toEqual([['odds']]);
  });
});

describe('snapshots', () => {
  it('delivers the latest event per match right after subscribing, then live events', async () => {
    const svc = make();
    svc.connect();
    await tick();
    server.publish('prediction_created', PRED(1, 0.5)); // 1
    server.publish('prediction_created', PRED(2, 0.5)); // 2
    server.publish('prediction_updated', PRED(1, 0.6)); // 3
    server.publish('prediction_updated', PRED(1, 0.7)); // 4: replaces 3
    const other = svc.subscribe('predictions'); // no snapshot, sees live events only
    await tick();
    const sub = svc.subscribe('predictions', { match_ids: [1] }, { snapshot: true });
    const mine: number[] = [];
    const theirs: number[] = [];
    const global: number[] = [];
    sub.on('event', (e) => mine.push(e.offset!));
    other.on('event', (e) => theirs.push(e.offset!));
    svc.on('*', (e) => 'offset' in e && global.push(e.offset as number));
    await tick();
    expect(server.last.sent.at(-1)!.data.snapshot).toBe(true);
    expect(mine).toEqual([1, 4]);
    expect(theirs).toEqual([]);
    server.publish('prediction_created', PRED(1, 0.9)); // 5
    await tick();
    expect(mine).toEqual([1, 4, 5]);
    expect(theirs).toEqual([5]);
    expect(global).toEqual([1, 4, 5]);
  });

  it('sends the snapshot again when recovery fails, so state is rebuilt', async () => {
    const svc = make({ random: () => 0 });
    const sub = svc.subscribe('predictions', {}, { snapshot: true });
    const got: [number, number][] = [];
    sub.on('event', (e) => got.push([(e.data as { match_id: number }).match_id, e.offset!]));
    await tick();
    server.publish('prediction_created', PRED(1, 0.5));
    await tick();
    server.restart('epoch-2');
    server.publish('prediction_created', PRED(7, 0.5)); // offset 1 of epoch-2, before we are back
    server.publish('prediction_created', PRED(8, 0.5)); // 2
    await tick(500);
    await tick();
    expect(server.last.sent[0]!.data).toMatchObject({ since: { predictions: { epoch: 'epoch-1', offset: 1 } }, snapshot: true });
    expect(got).toEqual([[1, 1], [7, 1], [8, 2]]);
    server.publish('prediction_created', PRED(9, 0.5));
    await tick();
    expect(got.at(-1)).toEqual([9, 3]);
  });

  it('recovers instead of sending a snapshot when the history allows', async () => {
    server.recovery = true;
    const svc = make({ random: () => 0 });
    const sub = svc.subscribe('predictions', {}, { snapshot: true });
    const got: number[] = [];
    sub.on('event', (e) => got.push(e.offset!));
    await tick();
    server.publish('prediction_created', PRED(1, 0.5));
    await tick();
    server.last.drop();
    await tick();
    server.publish('prediction_created', PRED(2, 0.5));
    await tick(500);
    await tick();
    expect(got).toEqual([1, 2]);
  });
});

describe('heartbeats', () => {
  it('sends {"type":"heartbeat"} every interval while the server answers', async () => {
    const svc = make({ heartbeatInterval: 1000, heartbeatTimeout: 500 });
    const acks = record(svc, 'message_ack');
    svc.connect();
    await tick();
    await tick(3000);
    expect(server.last.sent).toEqual([{ type: 'heartbeat' }, { type: 'heartbeat' }, { type: 'heartbeat' }]);
    expect(acks.map((a) => a.data.type)).toEqual(['heartbeat', 'heartbeat', 'heartbeat']);
    expect(server.sockets).toHaveLength(1);
    expect(svc.state).toBe('open');
  });

  it('sends nothing on a socket already closing (no browser console error)', async () => {
    const svc = make({ heartbeatInterval: 1000, heartbeatTimeout: 500 });
    svc.connect();
    await tick();
    const socket = server.last;
    const send = vi.spyOn(socket, 'send');
    // the server's close frame arrived; onclose has not fired yet
    socket.readyState = 2;
    await tick(1000);
    expect(send).not.toHaveBeenCalled();
    expect(svc.state).toBe('open');
  });

  it('treats a silent server as dead and reconnects', async () => {
    const svc = make({ heartbeatInterval: 1000, heartbeatTimeout: 500, random: () => 0 });
    const states: StateChange[] = record(svc, 'state');
    svc.subscribe('odds');
    await tick();
    server.answerHeartbeats = false;
    await tick(1499);
    expect(server.sockets).toHaveLength(1);
    await tick(1);
    expect(states.at(-1)).toMatchObject({ state: 'reconnecting', code: 1006, reason: expect.stringMatching(/heartbeat/) });
    server.answerHeartbeats = true;
    await tick(500);
    await tick();
    expect(server.sockets).toHaveLength(2);
    expect(svc.state).toBe('open');
    expect(server.last.sent[0]!.type).toBe('subscribe');
  });

  it('with the default options, notices a silent server within 15 s', async () => {
    const svc = make({ heartbeatInterval: undefined, heartbeatTimeout: undefined, random: () => 0 });
    const states: StateChange[] = record(svc, 'state');
    svc.subscribe('odds');
    await tick();
    server.answerHeartbeats = false; // frozen: nothing more arrives
    await tick(14_999);
    expect(server.sockets).toHaveLength(1);
    await tick(1);
    expect(states.at(-1)).toMatchObject({ state: 'reconnecting', code: 1006 });
  });

  it('any traffic counts as a sign of life', async () => {
    const svc = make({ heartbeatInterval: 1000, heartbeatTimeout: 500 });
    svc.subscribe('odds');
    await tick();
    server.answerHeartbeats = false;
    await tick(1000); // first heartbeat out, no reply coming
    for (let i = 0; i < 5; i++) {
      await tick(200);
      server.publish('odds_updated', { match_id: 1, bookmaker: 'b', home_odds: 2, draw_odds: 3, away_odds: 4 });
      await tick(800); // next heartbeat
    }
    expect(server.last.sent.filter((m) => m.type === 'heartbeat')).toHaveLength(6);
    expect(server.sockets).toHaveLength(1);
    expect(svc.state).toBe('open');
  });
});
