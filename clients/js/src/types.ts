import type {
  ConnectionStatusEvent,
  ErrorCode,
  ErrorReply,
  ErrorReplyEvent,
  EventType,
  MessageAckEvent,
  ServerMessage,
  SubscribeResult,
  SubscriptionFilter,
  SubscriptionType,
} from './generated/protocol.js';

/** The envelope of one event type, e.g. `RealtimeEvent<'prediction_created'>`. */
export type RealtimeEvent<T extends EventType = EventType> = Extract<ServerMessage, { event_type: T }>;

/** Event types published on a stream (everything but the connection-level ones). */
export type StreamEventType = Exclude<EventType, 'connection_status' | 'user_subscription_changed'>;

/**
 * Client-side connection state.
 * - `idle`: never connected (the first `subscribe()` connects when `autoConnect` is on).
 * - `connecting`: `connect()` called, the handshake is under way.
 * - `open`: the socket is open; subscriptions are (re)sent.
 * - `reconnecting`: the connection dropped; waiting for the backoff delay or handshaking again.
 * - `closed`: `disconnect()`, a terminal close code, `autoReconnect: false`, or attempts exhausted.
 */
export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StateChange {
  state: ClientState;
  previous: ClientState;
  /** Reconnect attempt number (1 = first retry), while reconnecting. */
  attempt?: number;
  /** Milliseconds until the next attempt, while reconnecting. */
  delay?: number;
  /** Close code that caused the change. */
  code?: number;
  reason?: string;
}

/** A client-side state change, delivered to `connection_status` handlers with `source: 'client'`. */
export interface ClientStatusEvent {
  event_type: 'connection_status';
  source: 'client';
  timestamp: string;
  data: Omit<StateChange, 'state'> & { status: ClientState };
}

/**
 * Errors raised by the client itself (server `error` replies carry an {@link ErrorCode}):
 * - `terminal_close`: the server closed with a code that must not be retried (4500-4999, 1008...);
 * - `reconnect_failed`: `maxReconnectAttempts` used up;
 * - `connection_lost`: the connection dropped and `autoReconnect` is off;
 * - `invalid_server_message`: a frame that is not a JSON envelope (ignored);
 * - `token_error`: the token function threw or rejected (retried with backoff);
 * - `connection_error`: the WebSocket could not be created (bad URL).
 */
export type ClientErrorCode =
  | 'terminal_close'
  | 'reconnect_failed'
  | 'connection_lost'
  | 'invalid_server_message'
  | 'token_error'
  | 'connection_error';

export interface ClientError {
  code: ClientErrorCode;
  message: string;
  close_code?: number;
  reason?: string;
}

/** A client-side error, delivered to `error` handlers with `source: 'client'`. */
export interface ClientErrorEvent {
  event_type: 'error';
  source: 'client';
  timestamp: string;
  data: ClientError;
}

/** History could not be replayed after a reconnect: reload state for these streams. */
export interface RecoveryFailed {
  subscription: SubscriptionHandle;
  streams: SubscriptionType[];
  reason: string;
  result: SubscribeResult;
}

/** The server sends its connection-level messages without `source`, so
 *  `event.source === 'client'` tells the client's own apart. */
export type FromServer<E> = E & { source?: undefined };

/** What `WebSocketService.on()` handlers receive, by name. */
export type ServiceEventMap = { [K in Exclude<EventType, 'connection_status'>]: RealtimeEvent<K> } & {
  /** Server status (`connected`...) and client states (`source: 'client'`). */
  connection_status: FromServer<ConnectionStatusEvent> | ClientStatusEvent;
  /** Every reply to a request, including heartbeats. */
  message_ack: MessageAckEvent;
  /** Server error replies and client errors (`source: 'client'`). */
  error: FromServer<ErrorReplyEvent> | ClientErrorEvent;
  /** A resubscription could not recover what was missed. */
  recovery_failed: RecoveryFailed;
  /** Client state changes. */
  state: StateChange;
  /** Every server message (events after duplicate suppression, acks, errors, status). */
  '*': ServerMessage;
};

export type SubscriptionStatus = 'pending' | 'active' | 'failed' | 'unsubscribed';

/** What `Subscription.on()` handlers receive: events matching this subscription, and its lifecycle. */
export type SubscriptionEventMap = { [K in StreamEventType]: RealtimeEvent<K> } & {
  /** Every event matching this subscription's filters. */
  event: RealtimeEvent<StreamEventType>;
  /** Each ack, the first and every one after a reconnect. */
  subscribed: SubscribeResult;
  /** The server refused the subscription; it is dropped. */
  error: ErrorReply;
  recovery_failed: RecoveryFailed;
};

/** The public face of a subscription (see `Subscription`). */
export interface SubscriptionHandle {
  readonly key: number;
  readonly subscriptionType: SubscriptionType | undefined;
  readonly eventTypes: readonly EventType[];
  readonly filters: Readonly<SubscriptionFilter>;
  readonly streams: readonly SubscriptionType[];
  readonly status: SubscriptionStatus;
  readonly id: string | null;
  readonly ready: Promise<SubscribeResult>;
  on<K extends keyof SubscriptionEventMap>(type: K, handler: (value: SubscriptionEventMap[K]) => void): () => void;
  unsubscribe(): void;
}

/** Filters as an application passes them; null/undefined fields are left out. */
export type SubscriptionFilterInput = {
  [K in keyof SubscriptionFilter]?: SubscriptionFilter[K] | undefined;
};

/**
 * The part of the WebSocket API the client uses: the browser's `WebSocket`, the `ws`
 * package's, or a test double.
 */
export interface WebSocketLike {
  readonly readyState: number;
  /* eslint-disable @typescript-eslint/no-explicit-any -- must accept DOM and ws event types */
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** Options a Node WebSocket implementation may take as its third argument (`ws`);
 *  browsers and Node's built-in WebSocket ignore it. */
export interface WebSocketNodeOptions {
  /** `ws`: offer permessage-deflate (RFC 7692). */
  perMessageDeflate?: boolean;
}

export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: WebSocketNodeOptions,
) => WebSocketLike;

/** The part of the Web Storage API a durable session uses (`localStorage` fits). */
export interface SessionStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** The durable session as the client knows it. */
export interface DurableSession {
  id: string | null;
  /** Whether the server resumed it on the current connection. */
  resumed: boolean;
  /** Seconds the server keeps it after the connection closes. */
  expiresIn: number | null;
  /** Per stream, the newest position the application took (what is acknowledged). */
  taken: Partial<Record<SubscriptionType, { epoch: string; offset: number }>>;
}

export type TokenSource =
  | string
  | null
  | (() => string | null | undefined | Promise<string | null | undefined>);

export interface WebSocketServiceOptions {
  /** `ws://host:8000/realtime/ws` (or a dedicated `/realtime/ws/<type>`); in a browser a
   *  relative path such as `/realtime/ws` resolves against the page. */
  url: string;
  /** Sent as `?user_id=`. */
  userId?: string | null | undefined;
  /** Sent as `?session_id=` (a label; for a durable session use `session`). */
  sessionId?: string | null | undefined;
  /**
   * A durable session (docs/protocol.md, Sessions): the server keeps the subscriptions
   * and the acknowledged positions between connections, so a reload or a crash misses
   * nothing. `'auto'`: the id and the positions the application took are kept in
   * `sessionStorage` (default `localStorage` where it exists), under `sessionKey`; a
   * string: that session id (kept in memory); `false` (default): none.
   */
  session?: 'auto' | string | false | undefined;
  /** Where `session: 'auto'` keeps its state (default `globalThis.localStorage`). */
  sessionStorage?: SessionStorageLike | null | undefined;
  /** The storage key (default `football-realtime:session:` + the URL without its query). */
  sessionKey?: string | undefined;
  /** Sent as `?token=`. A function is called before every (re)connect, so it can refresh. */
  token?: TokenSource | undefined;
  /** Reconnect after a non-terminal close (default true). */
  autoReconnect?: boolean | undefined;
  /** Milliseconds between heartbeats (default 10000; 0 turns them off). A dead server is noticed within heartbeatInterval + heartbeatTimeout (docs/reliability.md). */
  heartbeatInterval?: number | undefined;
  /** Milliseconds without any frame after a heartbeat before the connection counts as dead (default 5000). */
  heartbeatTimeout?: number | undefined;
  /** Reconnect attempts after a drop before giving up (default Infinity). */
  maxReconnectAttempts?: number | undefined;
  /** Backoff bounds in milliseconds (defaults 500 and 5000). */
  minReconnectDelay?: number | undefined;
  maxReconnectDelay?: number | undefined;
  /** Milliseconds for the WebSocket handshake (default 10000). */
  connectTimeout?: number | undefined;
  /** Milliseconds to wait for the reply to `request()` / `join()` / `getStats()` (default 10000). */
  requestTimeout?: number | undefined;
  /** The first `subscribe()` on a never-connected service connects it (default true). */
  autoConnect?: boolean | undefined;
  /** WebSocket implementation; defaults to `globalThis.WebSocket` (Node 20: pass `ws`). */
  WebSocket?: WebSocketConstructor | undefined;
  /** Offer permessage-deflate compression (default true, as every implementation
   *  does by itself). `false` is given to a Node `ws` implementation as
   *  `perMessageDeflate: false`; browsers (and Node's built-in WebSocket) always offer
   *  it and ignore this. A server that does not accept the offer sends plain frames;
   *  the client works the same. */
  compression?: boolean | undefined;
  /** Source of randomness for backoff jitter (tests). */
  random?: (() => number) | undefined;
}

export type { ErrorCode };
