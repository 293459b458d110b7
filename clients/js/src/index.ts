export { WebSocketService, Subscription, RealtimeError } from './service.js';
export type { SubscribeOptions } from './service.js';
export { shouldReconnect, isTerminal, closeCodeInfo } from './closeCodes.js';
export { backoffDelay } from './backoff.js';
export { matchesFilter, coveredEventTypes, streamOf, streamsOf } from './filters.js';
export {
  CLOSE_CODES,
  CONNECTION_EVENT_TYPES,
  ERROR_CODES,
  EVENT_TYPES,
  RECONNECT_RANGES,
  STREAM_EVENT_TYPES,
  TERMINAL_RANGES,
} from './generated/tables.js';
export type { CloseCodeInfo } from './generated/tables.js';
export type * from './generated/protocol.js';
// Explicit exports win over the star export: RealtimeEvent here is the typed generic.
export type {
  RealtimeEvent,
  StreamEventType,
  ClientState,
  StateChange,
  ClientStatusEvent,
  ClientErrorCode,
  ClientError,
  ClientErrorEvent,
  FromServer,
  RecoveryFailed,
  ServiceEventMap,
  SubscriptionStatus,
  SubscriptionEventMap,
  SubscriptionHandle,
  SubscriptionFilterInput,
  WebSocketLike,
  WebSocketConstructor,
  WebSocketNodeOptions,
  TokenSource,
  WebSocketServiceOptions,
  DurableSession,
  SessionStorageLike,
} from './types.js';
/** The envelope as publishers send it (untyped `data`). */
export type { RealtimeEvent as RealtimeEventEnvelope } from './generated/protocol.js';
