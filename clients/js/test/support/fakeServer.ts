/**
 * An in-process stand-in for football-realtime (like centrifuge-js's fakeServer): a
 * WebSocket class to inject into WebSocketService plus a server that speaks the
 * protocol (connection_status, acks, errors, streams with epoch/offset, optional
 * history for recovery). Every delivery is a microtask (the network is fast but never
 * synchronous), so tests with fake timers control time and flush microtasks.
 */
import { coveredEventTypes, matchesFilter, streamOf, streamsOf } from '../../src/filters.js';
import type { EventType, SubscriptionFilter, SubscriptionType } from '../../src/generated/protocol.js';
import type { WebSocketLike } from '../../src/types.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface FakeSub {
  id: string;
  eventTypes: EventType[];
  filters: SubscriptionFilter;
  subscriptionType: SubscriptionType | null;
}

export class FakeSocket implements WebSocketLike {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  /** Every frame the client sent, parsed. */
  readonly sent: Json[] = [];
  readonly subs = new Map<string, FakeSub>();
  readonly rooms = new Set<string>();
  readonly connectionId: string;
  /** How the client closed it, if it did. */
  closedByClient: { code?: number; reason?: string } | null = null;

  constructor(
    readonly server: FakeServer,
    readonly url: string,
  ) {
    this.connectionId = `c_${server.sockets.length + 1}`;
  }

  get query(): URLSearchParams {
    return new URL(this.url).searchParams;
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('InvalidStateError: socket is not open');
    const msg = JSON.parse(data) as Json;
    this.sent.push(msg);
    this.server.handle(this, msg);
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.closedByClient = { code, reason };
    this.readyState = 2;
    this.later(() => this.finish(code ?? 1005, reason ?? ''));
  }

  // -- the server's side --------------------------------------------------------

  /** Complete the handshake. */
  accept(): void {
    if (this.readyState !== 0) return;
    this.readyState = 1;
    this.onopen?.({});
    if (this.server.autoStatus) {
      this.push({
        event_type: 'connection_status',
        data: {
          status: 'connected',
          connection_id: this.connectionId,
          user_id: this.query.get('user_id'),
          subscriptions: [],
          heartbeat_interval: 30,
        },
        timestamp: new Date().toISOString(),
      });
    }
  }

  /** A frame from the server (delivered on the next tick). */
  push(msg: Json | string): void {
    const text = typeof msg === 'string' ? msg : JSON.stringify(msg);
    this.later(() => {
      if (this.readyState === 1) this.onmessage?.({ data: text });
    });
  }

  /** The server closes with a close frame. */
  serverClose(code: number, reason = ''): void {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this.later(() => this.finish(code, reason));
  }

  /** The connection vanishes (no close frame): the client sees 1006. */
  drop(): void {
    if (this.readyState >= 3) return;
    this.readyState = 3;
    this.later(() => {
      this.onerror?.({});
      this.onclose?.({ code: 1006, reason: '' });
    });
  }

  private finish(code: number, reason: string): void {
    this.readyState = 3;
    this.subs.clear();
    this.onclose?.({ code, reason });
  }

  private later(fn: () => void): void {
    queueMicrotask(fn);
  }
}

export class FakeServer {
  readonly sockets: FakeSocket[] = [];
  /** Complete handshakes by themselves. */
  autoAccept = true;
  /** Send `connection_status: connected` on accept. */
  autoStatus = true;
  /** Answer heartbeats (false: a silent, half-open server). */
  answerHeartbeats = true;
  /** New connections fail at once with 1006 (server down). */
  down = false;
  /** New connections are accepted, then closed with this code (e.g. 4501). */
  refuseWith: number | null = null;
  /** Replay history on `since` (true) or answer `recovered: false` like a server without recovery. */
  recovery = false;
  /** Send replayed events before the ack instead of after it. */
  replayBeforeAck = false;
  /** Reply with this error code to every subscribe. */
  subscribeError: string | null = null;
  epoch = 'epoch-1';
  private offsets = new Map<SubscriptionType, number>();
  private history = new Map<SubscriptionType, Json[]>();
  /** Latest event per (event type, match id), for snapshots. */
  private latest = new Map<string, Json>();
  private nextSub = 1;

  /** The class to pass as `WebSocket` in the service options. */
  readonly WebSocket: new (url: string) => FakeSocket;

  constructor() {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const server = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url: string) {
        super(server, url);
        server.sockets.push(this);
        server.opened(this);
      }
    };
  }

  get last(): FakeSocket {
    const s = this.sockets[this.sockets.length - 1];
    if (!s) throw new Error('no socket yet');
    return s;
  }

  get openSockets(): FakeSocket[] {
    return this.sockets.filter((s) => s.readyState === 1);
  }

  /** Lose every stream's history and start a new epoch, like a restarted memory broker. */
  restart(epoch = `epoch-${Math.random().toString(36).slice(2, 8)}`): void {
    this.epoch = epoch;
    this.offsets.clear();
    this.history.clear();
    this.latest.clear();
    for (const s of this.openSockets) s.serverClose(1012, 'server shutting down');
  }

  position(stream: SubscriptionType): number {
    return this.offsets.get(stream) ?? 0;
  }

  /** Publish an event: next offset of its stream, kept in history, sent to matching subscribers. */
  publish(eventType: EventType, data: Json): Json {
    const stream = streamOf(eventType);
    if (!stream) throw new Error(`${eventType} is not publishable`);
    const offset = this.position(stream) + 1;
    this.offsets.set(stream, offset);
    const env = { event_type: eventType, data, timestamp: new Date().toISOString(), stream, offset };
    let list = this.history.get(stream);
    if (!list) this.history.set(stream, (list = []));
    list.push(env);
    const key = `${eventType}:${Number.isInteger(data.match_id) ? data.match_id : ''}`;
    this.latest.delete(key);
    this.latest.set(key, env);
    for (const s of this.openSockets) {
      if ([...s.subs.values()].some((sub) => matchesFilter(sub.eventTypes, sub.filters, eventType, data))) {
        s.push(env);
      }
    }
    return env;
  }

  private opened(sock: FakeSocket): void {
    queueMicrotask(() => {
      if (sock.readyState !== 0) return;
      if (this.down) {
        sock.drop();
        return;
      }
      if (!this.autoAccept) return;
      sock.accept();
      if (this.refuseWith !== null) sock.serverClose(this.refuseWith, 'refused');
    });
  }

  /** @internal the protocol */
  handle(sock: FakeSocket, msg: Json): void {
    const id = msg.id ?? null;
    const reply = (type: string, result: Json) =>
      sock.push({ event_type: 'message_ack', data: { id, type, result }, timestamp: new Date().toISOString() });
    const error = (type: string | null, code: string, message: string) =>
      sock.push({ event_type: 'error', data: { id, type, code, message }, timestamp: new Date().toISOString() });
    const data: Json = msg.data ?? {};
    switch (msg.type) {
      case 'heartbeat':
        if (this.answerHeartbeats) reply('heartbeat', { server_time: new Date().toISOString() });
        return;
      case 'subscribe': {
        if (this.subscribeError) return error('subscribe', this.subscribeError, 'refused by the fake server');
        const filters: SubscriptionFilter = data.filters ?? {};
        const st: SubscriptionType | null = data.subscription_type ?? null;
        if (!st && !filters.event_types) {
          return error('subscribe', 'invalid_message', 'data.subscription_type is required unless filters.event_types is given');
        }
        const sub: FakeSub = {
          id: `sub_${this.nextSub++}`,
          eventTypes: coveredEventTypes(st ?? undefined, filters),
          filters,
          subscriptionType: st,
        };
        sock.subs.set(sub.id, sub);
        const streams: Json = {};
        for (const s of streamsOf(sub.eventTypes)) streams[s] = { epoch: this.epoch, offset: this.position(s) };
        const result: Json = {
          subscription_id: sub.id,
          subscription_type: st,
          event_types: sub.eventTypes,
          filters,
          streams,
        };
        let replay: Json[] = [];
        if (data.since) {
          const foreign = Object.keys(data.since).filter((s) => !(s in streams));
          if (foreign.length) {
            sock.subs.delete(sub.id);
            return error('subscribe', 'invalid_since', `since names stream(s) this subscription does not cover: ${foreign}`);
          }
          const ok =
            this.recovery &&
            Object.values(data.since as Record<string, { epoch: string }>).every((p) => p.epoch === this.epoch);
          result.recovered = ok;
          if (!ok) {
            result.reason = this.recovery
              ? 'epoch changed (history was lost): the new epoch is replayed from offset 1'
              : 'recovery is not available on this server';
          }
          if (this.recovery) {
            // Like the server: a stream of the same epoch is replayed after the client's
            // offset, a stream whose epoch changed from the new epoch's start.
            for (const [s, pos] of Object.entries(data.since as Record<string, { epoch: string; offset: number }>)) {
              const same = pos.epoch === this.epoch;
              const after = same ? pos.offset : 0;
              Object.assign(streams[s], { recovered: same, replay_after: after });
              for (const ev of this.history.get(s as SubscriptionType) ?? []) {
                if (ev.offset > after && matchesFilter(sub.eventTypes, sub.filters, ev.event_type, ev.data)) {
                  replay.push(ev);
                }
              }
            }
            replay = replay.sort((a, b) => a.offset - b.offset);
          }
        }
        if (data.snapshot && result.recovered !== true) {
          replay = [...this.latest.values()]
            .filter((ev) => matchesFilter(sub.eventTypes, sub.filters, ev.event_type, ev.data))
            .sort((a, b) => a.offset - b.offset);
        }
        if (this.replayBeforeAck) replay.forEach((ev) => sock.push(ev));
        reply('subscribe', result);
        if (!this.replayBeforeAck) replay.forEach((ev) => sock.push(ev));
        return;
      }
      case 'unsubscribe': {
        const sid = data.subscription_id;
        const sub = sock.subs.get(sid);
        if (!sub) return error('unsubscribe', 'not_found', `no subscription '${sid}' on this connection`);
        sock.subs.delete(sid);
        return reply('unsubscribe', { removed: [{ subscription_id: sid }], subscriptions: [] });
      }
      case 'join':
        sock.rooms.add(data.room);
        return reply('join', { room: data.room, rooms: [...sock.rooms] });
      case 'leave':
        if (!sock.rooms.delete(data.room)) return error('leave', 'not_found', `not in room '${data.room}'`);
        return reply('leave', { room: data.room, rooms: [...sock.rooms] });
      case 'get_stats':
        return reply('get_stats', { connection: { connection_id: sock.connectionId }, server: {} });
      default:
        return error(null, 'unknown_type', `unknown message type '${msg.type}'`);
    }
  }
}
