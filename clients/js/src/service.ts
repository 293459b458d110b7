import { backoffDelay } from './backoff.js';
import { closeCodeInfo, shouldReconnect } from './closeCodes.js';
import { Emitter } from './emitter.js';
import { coveredEventTypes, matchesFilter, streamsOf } from './filters.js';
import type {
  ClientMessageType,
  ErrorReply,
  EventType,
  GetStatsResult,
  MessageAck,
  RoomResult,
  ServerMessage,
  StreamPosition,
  SubscribeData,
  SubscribeResult,
  SubscriptionFilter,
  SubscriptionType,
} from './generated/protocol.js';
import { STREAM_EVENT_TYPES } from './generated/tables.js';
import { StreamTracker } from './streams.js';
import { filterKey, SessionState } from './session.js';
import type {
  ClientError,
  ClientErrorCode,
  ClientState,
  DurableSession,
  FromServer,
  RealtimeEvent,
  RecoveryFailed,
  ServiceEventMap,
  StateChange,
  StreamEventType,
  SubscriptionEventMap,
  SubscriptionFilterInput,
  SubscriptionHandle,
  SubscriptionStatus,
  TokenSource,
  WebSocketConstructor,
  WebSocketLike,
  WebSocketServiceOptions,
  SessionStorageLike,
} from './types.js';

type Timer = ReturnType<typeof setTimeout>;

/** A request that failed: the server's `error` reply, or the connection went away first. */
export class RealtimeError extends Error {
  override readonly name = 'RealtimeError';
  constructor(
    message: string,
    /** The server's error code, or `disconnected` / `unsubscribed` / `timeout`. */
    readonly code: string,
    readonly reply?: ErrorReply,
  ) {
    super(message);
  }
}

function noop(): void {}

/** `source: 'client'` marks the client's own events; a server message never carries it. */
function fromServer<E extends { source?: string }>(msg: E): FromServer<E> {
  if (msg.source !== undefined) delete msg.source;
  return msg as FromServer<E>;
}

export interface SubscribeOptions {
  /** Receive the latest event per (event type, match) right after subscribing, and again
   *  when recovery fails after a reconnect (see docs/protocol.md, Snapshot). */
  snapshot?: boolean;
}

function now(): string {
  return new Date().toISOString();
}

/**
 * One subscription, kept across reconnects: it is sent again after every reconnect,
 * with `since` so the server can replay what was missed.
 */
export class Subscription implements SubscriptionHandle {
  readonly eventTypes: readonly EventType[];
  readonly streams: readonly SubscriptionType[];
  /** The server's id for it on the current connection (changes after a reconnect). */
  id: string | null = null;
  status: SubscriptionStatus = 'pending';
  /** The latest ack. */
  result: SubscribeResult | null = null;
  /** Resolves with the first ack; rejects if the server refuses or it is unsubscribed first. */
  readonly ready: Promise<SubscribeResult>;
  /** Whether it was ever acknowledged: only then does a resubscription ask for recovery. */
  confirmed = false;
  private readonly emitter = new Emitter<SubscriptionEventMap>();
  private settle: { resolve(r: SubscribeResult): void; reject(e: Error): void } | null;

  constructor(
    private readonly service: WebSocketService,
    readonly key: number,
    readonly subscriptionType: SubscriptionType | undefined,
    readonly filters: Readonly<SubscriptionFilter>,
    /** Ask for the latest event per (event type, match) on subscribe, and again whenever
     *  recovery fails after a reconnect. */
    readonly snapshot: boolean = false,
  ) {
    this.eventTypes = coveredEventTypes(subscriptionType, filters);
    this.streams = streamsOf(this.eventTypes);
    let settle!: { resolve(r: SubscribeResult): void; reject(e: Error): void };
    this.ready = new Promise<SubscribeResult>((resolve, reject) => {
      settle = { resolve, reject };
    });
    // Nobody has to await `ready`: an unobserved rejection is not an error here.
    this.ready.catch(noop);
    this.settle = settle;
  }

  on<K extends keyof SubscriptionEventMap>(type: K, handler: (value: SubscriptionEventMap[K]) => void): () => void {
    return this.emitter.on(type, handler);
  }

  off<K extends keyof SubscriptionEventMap>(type: K, handler?: (value: SubscriptionEventMap[K]) => void): void {
    this.emitter.off(type, handler);
  }

  /** Stop receiving; the server is told if it knows this subscription. Idempotent. */
  unsubscribe(): void {
    this.service.unsubscribe(this);
  }

  /** Whether an event belongs to this subscription (the server's filter semantics). */
  matches(eventType: string, data: Record<string, unknown>): boolean {
    return matchesFilter(this.eventTypes, this.filters, eventType, data);
  }

  /** @internal */
  _emit<K extends keyof SubscriptionEventMap>(type: K, value: SubscriptionEventMap[K]): void {
    this.emitter.emit(type, value);
  }

  /** @internal */
  _resolve(result: SubscribeResult): void {
    this.settle?.resolve(result);
    this.settle = null;
  }

  /** @internal */
  _reject(err: Error): void {
    this.settle?.reject(err);
    this.settle = null;
  }

  /** @internal */
  _clear(): void {
    this.emitter.clear();
  }
}

interface PendingRequest {
  type: ClientMessageType;
  resolve(result: MessageAck['result']): void;
  reject(err: Error): void;
  subscription?: Subscription;
  since?: Partial<Record<SubscriptionType, StreamPosition>>;
  /** Recovery was abandoned for this resubscription: every stream restarts from the ack. */
  abandoned?: boolean;
}

const DEFAULTS = {
  autoReconnect: true,
  heartbeatInterval: 10_000,
  heartbeatTimeout: 5_000,
  maxReconnectAttempts: Infinity,
  minReconnectDelay: 500,
  maxReconnectDelay: 5_000,
  connectTimeout: 10_000,
  requestTimeout: 10_000,
  autoConnect: true,
  compression: true,
};

/**
 * A connection to football-realtime that hides reconnection, heartbeats,
 * resubscription and recovery.
 *
 * ```ts
 * const ws = new WebSocketService({ url: 'ws://localhost:8000/realtime/ws', userId: 'user123' });
 * ws.subscribe(['prediction_created'], { match_ids: [1, 2, 3], min_confidence: 0.7 });
 * ws.on('prediction_created', (event) => console.log(event.data.confidence));
 * ```
 */
export class WebSocketService {
  private readonly options: WebSocketServiceOptions & typeof DEFAULTS;
  private readonly WS: WebSocketConstructor;
  private readonly emitter = new Emitter<ServiceEventMap>();
  private readonly subs = new Map<number, Subscription>();
  private readonly rooms = new Set<string>();
  private readonly requests = new Map<number, PendingRequest>();
  private readonly tracker = new StreamTracker();
  /** The durable session (option `session`), or null. */
  private readonly durable: SessionState | null = null;
  /** Subscriptions the resumed session restored on this connection, not yet adopted. */
  private restored: Record<string, unknown>[] = [];
  /** Waiting for the restored subscriptions' announcements (a heartbeat round). */
  private resuming = false;
  private ws: WebSocketLike | null = null;
  private _state: ClientState = 'idle';
  private _connectionId: string | null = null;
  private _lastError: ClientError | null = null;
  private wanted = false;
  private attempt = 0;
  private generation = 0;
  private nextKey = 1;
  private nextRequestId = 1;
  private reconnectTimer: Timer | undefined;
  private connectTimer: Timer | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private deadTimer: Timer | undefined;

  constructor(options: WebSocketServiceOptions) {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.options = { ...DEFAULTS, ...given } as WebSocketServiceOptions & typeof DEFAULTS;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError(
        'no WebSocket implementation: pass { WebSocket } in the options (in Node 20: import WebSocket from "ws")',
      );
    }
    if (!options.url) throw new TypeError('url is required, e.g. ws://localhost:8000/realtime/ws');
    this.WS = WS;
    const mode = options.session;
    if (mode) {
      const g = globalThis as { localStorage?: SessionStorageLike };
      let storage: SessionStorageLike | null = null;
      if (mode === 'auto') {
        try {
          storage = options.sessionStorage !== undefined ? options.sessionStorage : (g.localStorage ?? null);
        } catch {
          storage = null; // localStorage may throw (privacy settings)
        }
      }
      const key = options.sessionKey ?? `football-realtime:session:${options.url.split('?')[0]}`;
      this.durable = new SessionState(mode, storage, key, (positions) =>
        this.send({ type: 'ack', data: { positions } }),
      );
      for (const [stream, p] of this.durable.taken) this.tracker.restore(stream, p.epoch, p.offset);
    }
  }

  /** The durable session (option `session`): its id, whether the server resumed it,
   *  and the positions the application took; null without one. */
  get session(): DurableSession | null {
    return this.durable?.snapshot() ?? null;
  }

  // -- observation ------------------------------------------------------------------

  get state(): ClientState {
    return this._state;
  }

  get isConnected(): boolean {
    return this._state === 'open';
  }

  /** The server's id for the current connection (from `connection_status`). */
  get connectionId(): string | null {
    return this._connectionId;
  }

  /** The last client-side error; cleared when a connection is established. */
  get lastError(): ClientError | null {
    return this._lastError;
  }

  get userId(): string | null | undefined {
    return this.options.userId;
  }

  /** Live subscriptions, in the order they were made. */
  get subscriptions(): readonly Subscription[] {
    return [...this.subs.values()];
  }

  /** Last delivered position of a stream, as sent in `since` after a reconnect. */
  position(stream: SubscriptionType): { epoch: string | undefined; offset: number } | undefined {
    return this.tracker.position(stream);
  }

  /** Events dropped as duplicates (already delivered) so far. */
  get duplicatesDropped(): number {
    return this.tracker.duplicates;
  }

  /**
   * Listen to an event type (`prediction_created`...), `connection_status`,
   * `message_ack`, `error`, `recovery_failed`, `state`, or `*` (every server message).
   * Returns a function that removes the handler.
   */
  on<K extends keyof ServiceEventMap>(type: K, handler: (value: ServiceEventMap[K]) => void): () => void {
    return this.emitter.on(type, handler);
  }

  /** Remove one handler, or every handler of `type`. */
  off<K extends keyof ServiceEventMap>(type: K, handler?: (value: ServiceEventMap[K]) => void): void {
    this.emitter.off(type, handler);
  }

  // -- lifecycle --------------------------------------------------------------------

  /** Open the connection (no-op while connecting, open or reconnecting). */
  connect(): void {
    if (this._state === 'connecting' || this._state === 'open' || this._state === 'reconnecting') return;
    this.wanted = true;
    this.attempt = 0;
    this.openSocket('connecting');
  }

  /** Close the connection and stop reconnecting. Subscriptions are kept for a later `connect()`. */
  disconnect(): void {
    this.durable?.flush();
    this.durable?.stop();
    this.wanted = false;
    this.dropSocket();
    this.connectionGone();
    if (this._state !== 'closed') this.setState('closed', { code: 1000, reason: 'client disconnect' });
  }

  /** Drop the current connection and connect again at once (subscriptions recover). */
  reconnect(): void {
    this.dropSocket();
    this.connectionGone();
    this.wanted = true;
    this.attempt = 0;
    this.openSocket('reconnecting');
  }

  /**
   * Change connection parameters. If the connection is up (or coming up), it is
   * re-established with them; subscriptions recover.
   */
  setOptions(changes: Partial<Pick<WebSocketServiceOptions, 'url' | 'userId' | 'sessionId' | 'token'>>): void {
    let changed = false;
    for (const k of ['url', 'userId', 'sessionId', 'token'] as const) {
      if (k in changes && changes[k] !== this.options[k]) {
        (this.options as unknown as Record<string, unknown>)[k] = changes[k];
        changed = true;
      }
    }
    if (changed && (this._state === 'open' || this._state === 'connecting' || this._state === 'reconnecting')) {
      this.reconnect();
    }
  }

  // -- subscriptions ----------------------------------------------------------------

  /**
   * Subscribe to event types (`['prediction_created']`) or a whole stream
   * (`'predictions'`), with filters. Kept across reconnects until unsubscribed.
   * Sends `{"type":"subscribe","id":n,"data":{"subscription_type"?, "filters":{..., "event_types"?}}}`.
   */
  subscribe(
    target: SubscriptionType | readonly EventType[],
    filters: SubscriptionFilterInput = {},
    options: SubscribeOptions = {},
  ): Subscription {
    const wire: SubscriptionFilter = {};
    for (const [k, v] of Object.entries(filters)) {
      if (v !== undefined && v !== null) (wire as Record<string, unknown>)[k] = Array.isArray(v) ? [...v] : v;
    }
    let subscriptionType: SubscriptionType | undefined;
    if (typeof target === 'string') {
      if (!(target in STREAM_EVENT_TYPES)) {
        throw new TypeError(
          `unknown subscription type ${JSON.stringify(target)}; expected one of ${Object.keys(STREAM_EVENT_TYPES).join(', ')}`,
        );
      }
      subscriptionType = target;
    } else if (Array.isArray(target)) {
      if (target.length === 0) throw new TypeError('subscribe needs at least one event type');
      wire.event_types = [...target];
    } else {
      throw new TypeError('subscribe(target): give a subscription type or an array of event types');
    }
    if (wire.event_types) {
      const known = new Set<string>(Object.values(STREAM_EVENT_TYPES).flat());
      const bad = wire.event_types.filter((t) => !known.has(t));
      if (bad.length) throw new TypeError(`not subscribable event type(s): ${bad.join(', ')}`);
    }
    const sub = new Subscription(this, this.nextKey++, subscriptionType, wire, options.snapshot === true);
    this.subs.set(sub.key, sub);
    if (this._state === 'open' && !this.resuming) this.adoptOrSend(sub);
    else if (this._state === 'idle' && this.options.autoConnect) this.connect();
    return sub;
  }

  /**
   * Remove a subscription, or every subscription of a stream type. The server is
   * told about those it has acknowledged; one still awaiting its ack is removed
   * on the server as soon as the ack arrives.
   */
  unsubscribe(target: SubscriptionHandle | SubscriptionType): void {
    const victims =
      typeof target === 'string'
        ? [...this.subs.values()].filter((s) => s.subscriptionType === target)
        : [this.subs.get(target.key)].filter((s): s is Subscription => s !== undefined);
    for (const sub of victims) {
      this.subs.delete(sub.key);
      const serverId = sub.status === 'active' ? sub.id : null;
      sub.status = 'unsubscribed';
      sub._reject(new RealtimeError('unsubscribed before the server confirmed', 'unsubscribed'));
      sub._clear();
      if (serverId) this.request('unsubscribe', { subscription_id: serverId }).catch(noop);
    }
  }

  // -- requests ---------------------------------------------------------------------

  /** Join a room (kept across reconnects). */
  join(room: string): Promise<RoomResult> {
    this.rooms.add(room);
    return this.request('join', { room }) as Promise<RoomResult>;
  }

  leave(room: string): Promise<RoomResult> {
    this.rooms.delete(room);
    return this.request('leave', { room }) as Promise<RoomResult>;
  }

  getStats(): Promise<GetStatsResult> {
    return this.request('get_stats') as Promise<GetStatsResult>;
  }

  /**
   * Send a request and resolve with its ack's `result`; rejects with a
   * {@link RealtimeError} on an `error` reply, when the connection is not open or drops
   * first, or after `requestTimeout` ms without a reply (code `timeout`).
   */
  request(type: ClientMessageType, data?: Record<string, unknown>): Promise<MessageAck['result']> {
    return new Promise((resolve, reject) => {
      if (!this.ws || this._state !== 'open') {
        reject(new RealtimeError(`cannot send ${type}: not connected`, 'disconnected'));
        return;
      }
      const id = this.nextRequestId++;
      const timer = setTimeout(() => {
        if (this.requests.delete(id)) {
          reject(new RealtimeError(`no reply to ${type} within ${this.options.requestTimeout} ms`, 'timeout'));
        }
      }, this.options.requestTimeout);
      this.requests.set(id, {
        type,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.send(data === undefined ? { type, id } : { type, id, data });
    });
  }

  // -- socket -----------------------------------------------------------------------

  private openSocket(kind: 'connecting' | 'reconnecting'): void {
    const gen = ++this.generation;
    if (this._state !== kind) this.setState(kind);
    this.resolveToken().then(
      (token) => {
        if (gen !== this.generation) return;
        let ws: WebSocketLike;
        try {
          const url = this.buildUrl(token);
          // Offering compression is the default of every implementation (browsers, Node's
          // built-in WebSocket, `ws`): only a refusal is passed, as `ws` takes it. An empty
          // protocol list is "no subprotocol" everywhere (browsers ignore the options).
          ws = this.options.compression
            ? new this.WS(url)
            : new this.WS(url, [], { perMessageDeflate: false });
        } catch (err) {
          this.wanted = false;
          this.clientError('connection_error', `cannot open ${this.options.url}: ${String(err)}`);
          this.setState('closed', { reason: String(err) });
          return;
        }
        this.ws = ws;
        ws.onopen = () => gen === this.generation && this.onOpen();
        ws.onmessage = (ev: { data: unknown }) => gen === this.generation && this.onMessage(ev.data);
        ws.onclose = (ev: { code: number; reason: string }) =>
          gen === this.generation && this.onClose(ev.code, ev.reason);
        ws.onerror = noop; // a close event always follows
        this.connectTimer = setTimeout(() => {
          if (gen === this.generation) this.fail(`no connection within ${this.options.connectTimeout} ms`);
        }, this.options.connectTimeout);
      },
      (err: unknown) => {
        if (gen !== this.generation) return;
        this.clientError('token_error', `token: ${String(err)}`);
        this.scheduleReconnect(1006, 'token unavailable');
      },
    );
  }

  private async resolveToken(): Promise<string | null | undefined> {
    const t: TokenSource | undefined = this.options.token;
    return typeof t === 'function' ? await t() : t;
  }

  private buildUrl(token: string | null | undefined): string {
    const g = globalThis as { location?: { href: string } };
    const u = new URL(this.options.url, g.location?.href);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    if (u.protocol === 'https:') u.protocol = 'wss:';
    const params: [string, string | null | undefined][] = [
      ['user_id', this.options.userId],
      ['session_id', this.options.sessionId],
      ['token', token],
    ];
    for (const [k, v] of params) if (v) u.searchParams.set(k, v);
    if (this.durable) for (const [k, v] of this.durable.params()) u.searchParams.set(k, v);
    return u.toString();
  }

  private onOpen(): void {
    clearTimeout(this.connectTimer);
    this.tracker.reset();
    this.restored = [];
    this.setState('open');
    this.startHeartbeat();
    if (this.durable?.id) {
      // A resumed session restores its subscriptions and announces them before the
      // server reads anything: once a heartbeat is answered, all are in. Events of
      // their streams wait meanwhile; each subscription is then adopted or sent.
      this.resuming = true;
      const gen = this.generation;
      for (const sub of this.subs.values()) this.tracker.begin(sub.streams);
      const done = () => {
        if (gen !== this.generation) return;
        for (const sub of this.subs.values()) {
          if (!this.adopt(sub)) {
            this.tracker.settle(sub.streams, {});
            this.sendSubscribe(sub);
          }
        }
        // The page declared what it wants (subscriptions made before the connection
        // opened): a restored subscription nobody asked for again is removed.
        for (const entry of this.restored.splice(0)) {
          const id = (entry.subscription as { subscription_id?: unknown } | undefined)?.subscription_id;
          if (typeof id === 'string') this.request('unsubscribe', { subscription_id: id }).catch(noop);
        }
        this.resuming = false;
        this.durable?.flush();
      };
      this.request('heartbeat').then(done, done);
    } else {
      for (const sub of this.subs.values()) this.sendSubscribe(sub);
    }
    for (const room of this.rooms) this.request('join', { room }).catch(noop);
  }

  private adoptOrSend(sub: Subscription): void {
    if (!this.adopt(sub)) this.sendSubscribe(sub);
  }

  /** Take a subscription the resumed session restored with `sub`'s type and filters as
   *  `sub`'s own (no `subscribe` sent): its announcement is its ack. */
  private adopt(sub: Subscription): boolean {
    const want = filterKey(sub.subscriptionType, sub.filters);
    const i = this.restored.findIndex((e) => {
      const s = e.subscription as { subscription_type?: string | null; filters?: object } | undefined;
      return s !== undefined && filterKey(s.subscription_type, s.filters) === want;
    });
    if (i < 0) return false;
    const entry = this.restored.splice(i, 1)[0] as {
      subscription: SubscribeResult;
      streams: Record<string, StreamPosition>;
      recovered?: boolean;
      reason?: string;
    };
    const result = {
      ...entry.subscription,
      streams: entry.streams,
      recovered: entry.recovered === true,
      ...(entry.reason ? { reason: entry.reason } : {}),
    } as SubscribeResult;
    const since = Object.fromEntries(
      Object.entries(entry.streams).map(([k, p]) => [k, { epoch: p.epoch, offset: p.offset }]),
    ) as Partial<Record<SubscriptionType, StreamPosition>>;
    const req: PendingRequest = { type: 'subscribe', subscription: sub, resolve: noop, reject: noop, since };
    if (!this.resuming) this.tracker.begin(sub.streams); // (while resuming: begun in onOpen)
    this.onSubscribed(sub, result, req);
    return true;
  }

  private onMessage(raw: unknown): void {
    clearTimeout(this.deadTimer);
    this.deadTimer = undefined;
    let msg: ServerMessage;
    try {
      if (typeof raw !== 'string') throw new Error('binary frame');
      msg = JSON.parse(raw) as ServerMessage;
      if (!msg || typeof msg !== 'object' || typeof msg.event_type !== 'string' || typeof msg.data !== 'object') {
        throw new Error('not an event envelope');
      }
    } catch (err) {
      this.clientError('invalid_server_message', `ignored a server frame: ${String(err)}`);
      return;
    }
    switch (msg.event_type) {
      case 'message_ack':
        this.onAck(msg.data);
        this.emitter.emit('message_ack', msg);
        this.emitter.emit('*', msg);
        return;
      case 'error':
        this.onErrorReply(msg.data);
        this.emitter.emit('error', fromServer(msg));
        this.emitter.emit('*', msg);
        return;
      case 'connection_status':
        if (msg.data.status === 'connected') {
          this.attempt = 0;
          this._connectionId = msg.data.connection_id ?? null;
          this._lastError = null;
          this.durable?.welcome((msg.data as { session?: unknown }).session);
        }
        this.emitter.emit('connection_status', fromServer(msg));
        this.emitter.emit('*', msg);
        return;
    }
    if (msg.event_type === 'user_subscription_changed' && this.durable) {
      const d = msg.data as { restored?: unknown; connection_id?: unknown };
      if (d.restored === true && d.connection_id === this._connectionId) {
        this.restored.push(msg.data as unknown as Record<string, unknown>);
      }
    }
    const { stream, offset } = msg as { stream?: unknown; offset?: unknown };
    if (typeof stream === 'string' && typeof offset === 'number') {
      this.tracker.receive(stream as SubscriptionType, offset, (snapshotFor) => this.dispatch(msg, snapshotFor));
    } else {
      this.dispatch(msg);
    }
  }

  /** Handlers of the event type, `*`, and each matching subscription (only the one that
   *  asked, for a snapshot event: the others may have had it already). */
  private dispatch(msg: ServerMessage, snapshotFor?: number): void {
    this.emitter.emit(msg.event_type as Exclude<EventType, 'connection_status'>, msg as never);
    this.emitter.emit('*', msg);
    const targets = snapshotFor === undefined ? [...this.subs.values()] : [this.subs.get(snapshotFor)];
    for (const sub of targets) {
      if (!sub || sub.status === 'unsubscribed') continue;
      if (sub.matches(msg.event_type, msg.data as Record<string, unknown>)) {
        const ev = msg as RealtimeEvent<StreamEventType>;
        sub._emit(ev.event_type, ev as never);
        sub._emit('event', ev);
      }
    }
    // Every handler returned: the application took it (a durable session acks it).
    const { stream, offset } = msg as { stream?: unknown; offset?: unknown };
    if (this.durable && typeof stream === 'string' && typeof offset === 'number') {
      const epoch = this.tracker.since(stream as SubscriptionType)?.epoch;
      if (epoch !== undefined) this.durable.took(stream as SubscriptionType, epoch, offset);
    }
  }

  private onAck(ack: MessageAck): void {
    const req = typeof ack.id === 'number' ? this.requests.get(ack.id) : undefined;
    if (!req) return;
    this.requests.delete(ack.id as number);
    if (req.subscription && ack.type === 'subscribe') this.onSubscribed(req.subscription, ack.result, req);
    req.resolve(ack.result);
  }

  private onSubscribed(
    sub: Subscription,
    result: SubscribeResult,
    req: PendingRequest,
  ): void {
    const positions = (result.streams ?? {}) as Partial<Record<SubscriptionType, StreamPosition & { recovered?: boolean }>>;
    const lost = new Set<SubscriptionType>(req.abandoned ? sub.streams : []);
    const recovering = new Set<SubscriptionType>();
    for (const stream of Object.keys(req.since ?? {}) as SubscriptionType[]) {
      // Only an explicit `recovered: true` counts: a server that ignores `since` loses events.
      // A stream the server says it recovered (per stream) is recovering even when
      // another stream was not.
      const mine = positions[stream]?.recovered;
      if (mine === true || (result.recovered === true && mine !== false)) recovering.add(stream);
      else lost.add(stream);
    }
    // The server sends a requested snapshot unless it recovered instead.
    const snapshotFor = sub.snapshot && result.recovered !== true && sub.status !== 'unsubscribed' ? sub.key : undefined;
    const unsubscribed = sub.status === 'unsubscribed';
    if (unsubscribed) {
      this.request('unsubscribe', { subscription_id: result.subscription_id }).catch(noop);
    } else {
      sub.id = result.subscription_id;
      sub.status = 'active';
      sub.result = result;
      sub.confirmed = true;
    }
    this.tracker.settle(sub.streams, positions, snapshotFor === undefined ? { lost, recovering } : { lost, recovering, snapshotFor });
    if (unsubscribed) return;
    sub._emit('subscribed', result);
    sub._resolve(result);
    if (lost.size > 0) {
      const failure: RecoveryFailed = {
        subscription: sub,
        streams: [...lost].sort(),
        reason: result.reason ?? 'the server did not confirm recovery',
        result,
      };
      sub._emit('recovery_failed', failure);
      this.emitter.emit('recovery_failed', failure);
    }
  }

  private onErrorReply(err: ErrorReply): void {
    const req = typeof err.id === 'number' ? this.requests.get(err.id) : undefined;
    if (!req) return;
    this.requests.delete(err.id as number);
    const sub = req.subscription;
    if (sub) {
      this.tracker.settle(sub.streams, {});
      if (err.code === 'invalid_since' && req.since && sub.status !== 'unsubscribed') {
        // Our position was refused: subscribe afresh and report the gap.
        this.sendSubscribe(sub, false);
        return;
      }
      if (sub.status !== 'unsubscribed') {
        this.subs.delete(sub.key);
        sub.status = 'failed';
        sub._emit('error', err);
        sub._reject(new RealtimeError(err.message, err.code, err));
      }
    }
    req.reject(new RealtimeError(err.message, err.code, err));
  }

  private sendSubscribe(sub: Subscription, withSince = true): void {
    const data: SubscribeData = { filters: { ...sub.filters } };
    if (sub.subscriptionType) data.subscription_type = sub.subscriptionType;
    if (sub.snapshot) data.snapshot = true;
    let since: Partial<Record<SubscriptionType, StreamPosition>> | undefined;
    // A confirmed subscription recovers from where it was. A new one recovers from the
    // positions a previous page took (durable session storage) when the server did not
    // restore it (the session expired, or it was not one of the session's): what the
    // history still holds after them is replayed, as for a reconnect.
    const stored = this.durable?.fromStore === true ? this.durable.taken : undefined;
    if (withSince) {
      for (const stream of sub.streams) {
        if (!sub.confirmed && !stored?.has(stream)) continue;
        const pos = this.tracker.since(stream);
        if (pos) (since ??= {})[stream] = pos;
      }
    }
    if (since) data.since = since;
    const id = this.nextRequestId++;
    sub.status = 'pending';
    sub.id = null;
    this.tracker.begin(sub.streams);
    const req: PendingRequest = { type: 'subscribe', subscription: sub, resolve: noop, reject: noop };
    if (since) req.since = since;
    if (!withSince && sub.confirmed) req.abandoned = true;
    this.requests.set(id, req);
    this.send({ type: 'subscribe', id, data });
  }

  private send(message: Record<string, unknown>): boolean {
    const ws = this.ws;
    // readyState too: between the server's close frame and onclose the socket is
    // CLOSING while the service still says open, and a send then only makes the browser
    // log "WebSocket is already in CLOSING or CLOSED state" (an ack timer firing then).
    if (!ws || this._state !== 'open' || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  private startHeartbeat(): void {
    const { heartbeatInterval, heartbeatTimeout } = this.options;
    if (!(heartbeatInterval > 0)) return;
    this.heartbeatTimer = setInterval(() => {
      if (!this.send({ type: 'heartbeat' })) return;
      if (this.deadTimer === undefined) {
        this.deadTimer = setTimeout(
          () => this.fail(`no reply to heartbeat within ${heartbeatTimeout} ms`),
          heartbeatTimeout,
        );
      }
    }, heartbeatInterval);
  }

  /** The connection is dead without a close frame (timeouts): treat it as 1006. */
  private fail(reason: string): void {
    this.dropSocket();
    this.onClose(1006, reason);
  }

  private onClose(code: number, reason: string): void {
    this.ws = null;
    this.generation++;
    this.clearTimers();
    this.connectionGone();
    if (!this.wanted) {
      this.setState('closed', { code, reason });
      return;
    }
    if (!shouldReconnect(code)) {
      this.wanted = false;
      this.setState('closed', { code, reason });
      if (code !== 1000) {
        const name = closeCodeInfo(code)?.name ?? 'unknown';
        this.clientError('terminal_close', `closed by the server with ${code} (${name}): ${reason}`, code, reason);
      }
      return;
    }
    if (!this.options.autoReconnect) {
      this.wanted = false;
      this.setState('closed', { code, reason });
      this.clientError('connection_lost', `connection closed with ${code}: ${reason}`, code, reason);
      return;
    }
    this.scheduleReconnect(code, reason);
  }

  private scheduleReconnect(code: number, reason: string): void {
    const { maxReconnectAttempts, minReconnectDelay, maxReconnectDelay, random } = this.options;
    if (this.attempt >= maxReconnectAttempts) {
      this.wanted = false;
      this.setState('closed', { code, reason });
      this.clientError('reconnect_failed', `gave up after ${this.attempt} reconnect attempt(s)`, code, reason);
      return;
    }
    const delay = backoffDelay(this.attempt, minReconnectDelay, maxReconnectDelay, random);
    this.attempt += 1;
    this.setState('reconnecting', { attempt: this.attempt, delay, code, reason });
    const gen = this.generation;
    this.reconnectTimer = setTimeout(() => {
      if (gen === this.generation && this.wanted) this.openSocket('reconnecting');
    }, delay);
  }

  /** Detach and close the current socket without reacting to its close event. */
  private dropSocket(): void {
    this.generation++;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = noop;
    ws.onmessage = noop;
    ws.onclose = noop;
    ws.onerror = noop;
    try {
      ws.close(1000);
    } catch {
      // already closing
    }
  }

  /** Per-connection state is void: pending requests fail, subscriptions wait for the next one. */
  private connectionGone(): void {
    this._connectionId = null;
    const pending = [...this.requests.values()];
    this.requests.clear();
    for (const req of pending) req.reject(new RealtimeError('connection closed before the reply', 'disconnected'));
    for (const sub of this.subs.values()) {
      sub.status = 'pending';
      sub.id = null;
    }
    this.tracker.reset();
  }

  private clearTimers(): void {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.deadTimer);
    this.reconnectTimer = this.connectTimer = this.heartbeatTimer = this.deadTimer = undefined;
  }

  private setState(state: ClientState, info: Omit<StateChange, 'state' | 'previous'> = {}): void {
    const previous = this._state;
    this._state = state;
    const change: StateChange = { state, previous, ...info };
    this.emitter.emit('state', change);
    const { state: status, ...rest } = change;
    this.emitter.emit('connection_status', {
      event_type: 'connection_status',
      source: 'client',
      timestamp: now(),
      data: { status, ...rest },
    });
  }

  private clientError(code: ClientErrorCode, message: string, closeCode?: number, reason?: string): void {
    const data: ClientError = { code, message };
    if (closeCode !== undefined) data.close_code = closeCode;
    if (reason !== undefined) data.reason = reason;
    if (code !== 'invalid_server_message') this._lastError = data;
    this.emitter.emit('error', { event_type: 'error', source: 'client', timestamp: now(), data });
  }
}
