/**
 * The TypeScript client against the real Python server (started by globalSetup, or
 * by a test that needs to restart it), in Node with the `ws` package.
 */
import WS from 'ws';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { WebSocketService } from '../../src/index.js';
import type { RecoveryFailed, StateChange, WebSocketServiceOptions } from '../../src/index.js';
import { broadcast, freePort, RealServer, TIMEOUT } from '../support/realServer.js';
import { RedisServer } from '../support/redisServer.js';

const httpUrl = inject('realtimeHttpUrl');
const wsUrl = inject('realtimeWsUrl');

/** `ws` with a record of every socket and every frame the client sent. */
function recordingWebSocket() {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const rec = { sockets: [] as WS[], sent: [] as Record<string, any>[], extensionHeaders: [] as (string | undefined)[] };
  class RecordingWebSocket extends WS {
    constructor(url: string, protocols?: string | string[], options?: WS.ClientOptions) {
      super(url, protocols, options);
      rec.sockets.push(this);
      this.on('upgrade', (res) => rec.extensionHeaders.push(res.headers['sec-websocket-extensions']));
    }
    override send(data: unknown, ...rest: unknown[]): void {
      rec.sent.push(JSON.parse(String(data)));
      (WS.prototype.send as (...a: unknown[]) => void).call(this, data, ...rest);
    }
  }
  return { rec, WebSocket: RecordingWebSocket };
}

const services: WebSocketService[] = [];
const servers: RealServer[] = [];
const redises: RedisServer[] = [];
afterEach(async () => {
  for (const s of services.splice(0)) s.disconnect();
  for (const s of servers.splice(0)) await s.stop('SIGKILL');
  for (const r of redises.splice(0)) await r.stop();
});

function make(options: Partial<WebSocketServiceOptions> = {}) {
  const { rec, WebSocket } = recordingWebSocket();
  const svc = new WebSocketService({
    url: wsUrl,
    WebSocket,
    heartbeatInterval: 0,
    minReconnectDelay: 50,
    maxReconnectDelay: 300,
    ...options,
  });
  services.push(svc);
  return { svc, rec };
}

async function until(check: () => void, timeout = TIMEOUT): Promise<void> {
  await vi.waitFor(check, { timeout, interval: 10 });
}

let nextMatch = 10_000 + Math.floor(Math.random() * 1000) * 100;
/** Match ids no other test uses on the shared server. */
function matchIds(n: number): number[] {
  nextMatch += 100;
  return Array.from({ length: n }, (_, i) => nextMatch + i);
}

const prediction = (match_id: number, confidence: number, prediction_id = `p${match_id}`) => ({
  event_type: 'prediction_created',
  data: {
    prediction_id,
    match_id,
    home_team: '曼联',
    away_team: '切尔西',
    prediction: 'home_win',
    confidence,
    home_win_prob: 0.65,
    draw_prob: 0.25,
    away_win_prob: 0.1,
  },
});

describe('against the real server', () => {
  it('connects and receives the server connection_status', async () => {
    const { svc } = make({ userId: 'user123' });
    const statuses: string[] = [];
    svc.on('connection_status', (s) => statuses.push(`${s.source ?? 'server'}:${s.data.status}`));
    svc.connect();
    await until(() => expect(svc.connectionId).toMatch(/^c_/));
    expect(svc.state).toBe('open');
    expect(statuses).toEqual(['client:connecting', 'client:open', 'server:connected']);
    const stats = await svc.getStats();
    expect(stats.connection).toMatchObject({ user_id: 'user123', connection_id: svc.connectionId });
  });

  it('offers permessage-deflate by default; with and without it the same events arrive', async () => {
    const on = make();
    const off = make({ compression: false });
    const [m] = matchIds(1) as [number];
    const got: Record<string, number[]> = { on: [], off: [] };
    for (const [name, { svc }] of [['on', on], ['off', off]] as const) {
      svc.on('prediction_created', (e) => got[name]!.push(e.data.match_id));
      await svc.subscribe(['prediction_created'], { match_ids: [m] }).ready;
    }
    expect(on.rec.sockets[0]!.extensions).toBe('permessage-deflate');
    expect(on.rec.extensionHeaders).toEqual([
      'permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12',
    ]);
    expect(off.rec.sockets[0]!.extensions).toBe('');
    expect(off.rec.extensionHeaders).toEqual([undefined]);
    await broadcast(httpUrl, prediction(m, 0.8));
    await broadcast(httpUrl, prediction(m, 0.9, 'second'));
    await until(() => expect(got).toEqual({ on: [m, m], off: [m, m] }));
  });

  it('keeps working with a server that refuses compression', async () => {
    const server = await new RealServer(await freePort(), { REALTIME_COMPRESSION: 'off' }).start();
    servers.push(server);
    const { svc, rec } = make({ url: server.wsUrl });
    const [m] = matchIds(1) as [number];
    const got: number[] = [];
    svc.on('prediction_created', (e) => got.push(e.data.match_id));
    await svc.subscribe(['prediction_created'], { match_ids: [m] }).ready;
    expect(rec.sockets[0]!.extensions).toBe('');
    expect(rec.extensionHeaders).toEqual([undefined]);
    await broadcast(server.httpUrl, prediction(m, 0.8));
    await until(() => expect(got).toEqual([m]));
  });

  it('subscribes with filters (the seed example) and receives only matching events', async () => {
    const { svc } = make({ userId: 'user123' });
    const [m1, m2, m3, other] = matchIds(4) as [number, number, number, number];
    const got: [number, number][] = [];
    svc.on('prediction_created', (event) => got.push([event.data.match_id, event.data.confidence]));
    const sub = svc.subscribe(['prediction_created'], { match_ids: [m1, m2, m3], min_confidence: 0.7 });
    const result = await sub.ready;
    expect(result).toMatchObject({ event_types: ['prediction_created'], streams: { predictions: { offset: expect.any(Number) } } });
    await broadcast(httpUrl, prediction(m1, 0.8));
    await broadcast(httpUrl, prediction(other, 0.99)); // other match
    await broadcast(httpUrl, prediction(m2, 0.5)); // below min_confidence
    await broadcast(httpUrl, { event_type: 'prediction_updated', data: { ...prediction(m3, 0.9).data } }); // other type
    await broadcast(httpUrl, prediction(m3, 0.7));
    await until(() => expect(got).toEqual([[m1, 0.8], [m3, 0.7]]));
  });

  it('subscribes to a whole stream; unsubscribe removes it on the server', async () => {
    const { svc } = make();
    const [m] = matchIds(1) as [number];
    const sub = svc.subscribe('matches', { match_ids: [m], leagues: ['英超'] });
    const types: string[] = [];
    sub.on('event', (e) => types.push(e.event_type));
    await sub.ready;
    await broadcast(httpUrl, { event_type: 'match_started', data: { match_id: m, home_team: '曼联', away_team: '切尔西', league: '英超' } });
    await broadcast(httpUrl, { event_type: 'match_score_changed', data: { match_id: m, home_score: 1, away_score: 0, league: '西甲' } });
    await broadcast(httpUrl, { event_type: 'match_score_changed', data: { match_id: m, home_score: 1, away_score: 0, league: '英超', minute: 25 } });
    await until(() => expect(types).toEqual(['match_started', 'match_score_changed']));
    const st = await svc.getStats();
    expect(st.connection).toMatchObject({ subscriptions: [expect.objectContaining({ subscription_id: sub.id })] });
    sub.unsubscribe();
    await until(async () => expect((await svc.getStats()).connection).toMatchObject({ subscriptions: [] }));
  });

  it('a filter the server refuses rejects ready with its error code', async () => {
    const { svc } = make();
    const errors: string[] = [];
    svc.on('error', (e) => errors.push(e.data.code));
    const sub = svc.subscribe('predictions', { min_confidence: 2 });
    await expect(sub.ready).rejects.toMatchObject({ code: 'invalid_filter' });
    expect(errors).toEqual(['invalid_filter']);
    expect(svc.state).toBe('open');
  });

  it('does not retry after a terminal close code (4500 bad request)', async () => {
    const { svc, rec } = make({ userId: 'bad\u0001id' });
    svc.connect();
    await until(() => expect(svc.state).toBe('closed'));
    expect(svc.lastError).toMatchObject({ code: 'terminal_close', close_code: 4500 });
    await new Promise((r) => setTimeout(r, 600)); // longer than maxReconnectDelay
    expect(rec.sockets).toHaveLength(1);
  });

  it('sends heartbeats and the server answers them', async () => {
    const { svc, rec } = make({ heartbeatInterval: 100, heartbeatTimeout: 2000 });
    const acks: string[] = [];
    svc.on('message_ack', (a) => acks.push(a.data.type));
    svc.connect();
    await until(() => expect(acks.filter((t) => t === 'heartbeat').length).toBeGreaterThanOrEqual(3));
    expect(rec.sent.filter((m) => m.type === 'heartbeat')[0]).toEqual({ type: 'heartbeat' });
    expect(rec.sockets).toHaveLength(1);
  });

  it('recovers what was published while the connection was down, exactly once and in order', async () => {
    const { svc, rec } = make({ minReconnectDelay: 800, maxReconnectDelay: 800 });
    const [m] = matchIds(1) as [number];
    const got: string[] = [];
    const failures: RecoveryFailed[] = [];
    svc.on('recovery_failed', (f) => failures.push(f));
    const sub = svc.subscribe(['prediction_created'], { match_ids: [m] });
    sub.on('prediction_created', (e) => got.push(String(e.data.prediction_id)));
    await sub.ready;
    await broadcast(httpUrl, prediction(m, 0.5, 'a'));
    await until(() => expect(got).toEqual(['a']));
    rec.sockets[0]!.terminate(); // the network drops: no close frame
    await until(() => expect(svc.state).toBe('reconnecting'));
    for (const id of ['b', 'c', 'd']) await broadcast(httpUrl, prediction(m, 0.5, id));
    await until(() => expect(svc.state).toBe('open'));
    await broadcast(httpUrl, prediction(m, 0.5, 'e'));
    await until(() => expect(got).toEqual(['a', 'b', 'c', 'd', 'e']));
    const resub = rec.sent.filter((x) => x.type === 'subscribe')[1]!;
    expect(resub.data.since.predictions).toEqual(expect.objectContaining({ epoch: expect.any(String) }));
    expect(sub.result?.recovered).toBe(true);
    expect(failures).toEqual([]);
  });

  it('reconnects after the server process restarts on the same port; the snapshot rebuilds state', async () => {
    const server = await new RealServer(await freePort()).start();
    servers.push(server);
    const { svc } = make({ url: server.wsUrl, random: () => 0 });
    const states: StateChange[] = [];
    svc.on('state', (s) => states.push(s));
    const failures: RecoveryFailed[] = [];
    svc.on('recovery_failed', (f) => failures.push(f));
    const sub = svc.subscribe('predictions', {}, { snapshot: true });
    const got: string[] = [];
    sub.on('event', (e) => got.push(`${e.event_type}:${String((e.data as { prediction_id: string }).prediction_id)}:${e.offset}`));
    await sub.ready;
    await server.broadcast(prediction(1, 0.5, 'before'));
    await until(() => expect(got).toEqual(['prediction_created:before:1']));
    const epoch1 = svc.position('predictions')?.epoch;

    await server.stop('SIGTERM'); // graceful: 1012
    await until(() => expect(states.some((s) => s.state === 'reconnecting' && s.code === 1012)).toBe(true));
    // keeps trying while nothing listens
    await until(() => expect(states.filter((s) => s.state === 'reconnecting').length).toBeGreaterThan(2));

    await server.start(); // same port, new process: history and epoch are gone
    await server.broadcast(prediction(2, 0.5, 'while-away'));
    await until(() => expect(failures).toHaveLength(1), 3 * TIMEOUT);
    expect(failures[0]!.reason).toMatch(/epoch changed/);
    expect(failures[0]!.streams).toEqual(['predictions']);
    await until(() => expect(got).toContain('prediction_created:while-away:1')); // from the snapshot
    expect(svc.position('predictions')?.epoch).not.toBe(epoch1);
    await server.broadcast(prediction(3, 0.5, 'after'));
    await until(() => expect(got).toEqual(['prediction_created:before:1', 'prediction_created:while-away:1', 'prediction_created:after:2']));

    await server.stop('SIGKILL'); // abrupt: 1006
    await until(() => expect(states.some((s) => s.state === 'reconnecting' && s.code === 1006)).toBe(true));
    await server.start();
    await until(() => expect(svc.state).toBe('open'), 3 * TIMEOUT);
    await until(() => expect(failures).toHaveLength(2));
    await server.broadcast(prediction(4, 0.5, 'again'));
    await until(() => expect(got.at(-1)).toBe('prediction_created:again:1'));
  });

  it('with the redis broker a server restart loses nothing: the missed events are recovered', async () => {
    const redis = await new RedisServer().start();
    redises.push(redis);
    const server = await new RealServer(await freePort(), { REALTIME_BROKER_URL: redis.url }).start();
    servers.push(server);
    const { svc, rec } = make({ url: server.wsUrl, random: () => 0 });
    const failures: RecoveryFailed[] = [];
    svc.on('recovery_failed', (f) => failures.push(f));
    const sub = svc.subscribe(['match_score_changed'], { match_ids: [7] });
    const scores: string[] = [];
    sub.on('match_score_changed', (e) => scores.push(`${e.data.home_score}-${e.data.away_score}`));
    await sub.ready;
    const goal = (home: number, away: number) => ({
      event_type: 'match_score_changed',
      data: { match_id: 7, home_score: home, away_score: away },
    });
    await server.broadcast(goal(1, 0));
    await until(() => expect(scores).toEqual(['1-0']));

    await server.stop('SIGKILL');
    await until(() => expect(svc.state).toBe('reconnecting'));
    // Hold the client off while the restarted server takes two goals.
    svc.disconnect();
    await server.start();
    await server.broadcast(goal(1, 1));
    await server.broadcast({ event_type: 'match_score_changed', data: { match_id: 8, home_score: 0, away_score: 3 } });
    await server.broadcast(goal(2, 1));
    svc.connect();
    await until(() => expect(scores).toEqual(['1-0', '1-1', '2-1']), 3 * TIMEOUT);
    expect(sub.result?.recovered).toBe(true);
    expect(failures).toEqual([]);
    const resub = rec.sent.filter((m) => m.type === 'subscribe').at(-1)!;
    expect(resub.data.since).toEqual({ matches: { epoch: expect.any(String), offset: 1 } });
    await server.broadcast(goal(3, 1));
    await until(() => expect(scores.at(-1)).toBe('3-1'));
    expect(scores).toHaveLength(4);
  });
});
