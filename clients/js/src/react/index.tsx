/**
 * React bindings: one shared connection per app (`RealtimeProvider`) and hooks that
 * keep live collections keyed by id, so updates replace rather than duplicate.
 * Safe under StrictMode: every effect undoes exactly what it did.
 */
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from 'react';
import { coveredEventTypes, matchesFilter } from '../filters.js';
import type {
  EventType,
  MatchEnded,
  MatchScoreChanged,
  MatchStarted,
  MatchStatusChanged,
  OddsSignificantChange,
  OddsUpdated,
  PredictionCompleted,
  PredictionUpdated,
  SubscriptionFilter,
  SubscriptionType,
} from '../generated/protocol.js';
import { RealtimeError, WebSocketService, type SubscribeOptions } from '../service.js';
import type {
  ClientError,
  ClientState,
  RealtimeEvent,
  RecoveryFailed,
  ServiceEventMap,
  StreamEventType,
  SubscriptionFilterInput,
  TokenSource,
  WebSocketServiceOptions,
} from '../types.js';

const RealtimeContext = createContext<WebSocketService | null>(null);

export interface RealtimeProviderProps extends Omit<Partial<WebSocketServiceOptions>, 'url' | 'autoConnect'> {
  /** Server URL; required unless `service` is given. */
  url?: string;
  /** Use this service instead of creating one; the provider then leaves its lifecycle alone. */
  service?: WebSocketService;
  /** Connect on mount and disconnect on unmount (default true). */
  autoConnect?: boolean;
  children?: ReactNode;
}

/**
 * Shares one {@link WebSocketService} with every hook below it. Changing `url`,
 * `userId` or `sessionId` reconnects (subscriptions recover); a new `token` is used
 * from the next connect on.
 */
export function RealtimeProvider(props: RealtimeProviderProps): ReactNode {
  const { service: given, children, autoConnect = true, url, userId, sessionId, token, ...rest } = props;
  const tokenRef = useRef<TokenSource | undefined>(token);
  tokenRef.current = token;
  const [owned] = useState(() => {
    if (given) return null;
    if (!url) throw new TypeError('<RealtimeProvider> needs a url (or a service)');
    // The token is read at each connect, so a refreshed token never forces a reconnect.
    const readToken = async () => {
      const t = tokenRef.current;
      return typeof t === 'function' ? await t() : t;
    };
    return new WebSocketService({ ...rest, url, userId, sessionId, token: readToken });
  });
  const service = given ?? owned!;

  // Only props that changed since the last render are applied: a hook's useWebSocket({ userId })
  // must not be undone by a provider that never had a userId.
  const applied = useRef({ url, userId, sessionId });
  useEffect(() => {
    if (!owned) return;
    const changes: Partial<Pick<WebSocketServiceOptions, 'url' | 'userId' | 'sessionId'>> = {};
    if (url !== applied.current.url && url) changes.url = url;
    if (userId !== applied.current.userId) changes.userId = userId;
    if (sessionId !== applied.current.sessionId) changes.sessionId = sessionId;
    applied.current = { url, userId, sessionId };
    if (Object.keys(changes).length) owned.setOptions(changes);
  }, [owned, url, userId, sessionId]);

  useEffect(() => {
    if (!owned || !autoConnect) return;
    owned.connect();
    return () => owned.disconnect();
  }, [owned, autoConnect]);

  return <RealtimeContext.Provider value={service}>{children}</RealtimeContext.Provider>;
}

/** The service of the nearest {@link RealtimeProvider}. */
export function useRealtimeService(): WebSocketService {
  const service = useContext(RealtimeContext);
  if (!service) {
    throw new Error('football-realtime hooks must be used inside <RealtimeProvider url="ws://.../realtime/ws">');
  }
  return service;
}

function useConnectionState(service: WebSocketService): ClientState {
  const subscribe = useCallback((cb: () => void) => service.on('state', cb), [service]);
  return useSyncExternalStore(subscribe, () => service.state, () => service.state);
}

function useLastError(service: WebSocketService): ClientError | null {
  const subscribe = useCallback(
    (cb: () => void) => {
      const offs = [service.on('error', cb), service.on('connection_status', cb)];
      return () => offs.forEach((off) => off());
    },
    [service],
  );
  return useSyncExternalStore(subscribe, () => service.lastError, () => service.lastError);
}

export interface UseWebSocketOptions {
  /** Connect as this user (reconnects if it changes while connected). */
  userId?: string | null;
  /** Connect when mounted (default true). The connection stays up while the provider lives. */
  autoConnect?: boolean;
}

export interface UseWebSocketResult {
  isConnected: boolean;
  state: ClientState;
  /** The last connection-level error (terminal close, attempts used up...); cleared on connect. */
  error: ClientError | null;
  service: WebSocketService;
}

/** The shared connection: `{ isConnected, error, service }` (seed: React Hook集成). */
export function useWebSocket(options: UseWebSocketOptions = {}): UseWebSocketResult {
  const { userId, autoConnect = true } = options;
  const service = useRealtimeService();
  useEffect(() => {
    if (userId !== undefined && userId !== service.userId) service.setOptions({ userId });
  }, [service, userId]);
  useEffect(() => {
    if (autoConnect) service.connect();
  }, [service, autoConnect]);
  const state = useConnectionState(service);
  const error = useLastError(service);
  return { isConnected: state === 'open', state, error, service };
}

/** Call `handler` for every event of `type` on the shared connection (latest handler wins). */
export function useRealtimeEvent<K extends keyof ServiceEventMap>(
  type: K,
  handler: (value: ServiceEventMap[K]) => void,
): void {
  const service = useRealtimeService();
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => service.on(type, (v) => ref.current(v)), [service, type]);
}

export interface LiveCollectionOptions {
  /** Called when events were missed and could not be replayed; the hook's snapshot then
   *  refreshes what it shows, but an app may want to reload other state too. */
  onRecoveryFailed?: (failure: RecoveryFailed) => void;
}

export interface LiveCollection<T> {
  items: T[];
  /** True until the server acknowledged the (current) subscription. */
  loading: boolean;
  /** The server refused the subscription. */
  error: RealtimeError | null;
}

type Key = string | number;

/**
 * Subscribe while mounted and fold matching events into a collection keyed by
 * `keyOf(event)`. `filters === null` subscribes to nothing. Arguments are compared by
 * value, so literal arrays in render do not resubscribe.
 */
export function useLiveCollection<T>(
  target: SubscriptionType | readonly EventType[],
  filters: SubscriptionFilterInput | null,
  keyOf: (event: RealtimeEvent<StreamEventType>) => Key | undefined,
  reduce: (previous: T | undefined, event: RealtimeEvent<StreamEventType>) => T,
  options: LiveCollectionOptions = {},
): LiveCollection<T> {
  const service = useRealtimeService();
  const [items, setItems] = useState<ReadonlyMap<Key, T>>(() => new Map());
  const [loading, setLoading] = useState(filters !== null);
  const [error, setError] = useState<RealtimeError | null>(null);
  const fns = useRef({ keyOf, reduce, options });
  fns.current = { keyOf, reduce, options };
  const argsKey = JSON.stringify([target, filters]);

  useEffect(() => {
    const [t, f] = JSON.parse(argsKey) as [SubscriptionType | EventType[], SubscriptionFilterInput | null];
    if (f === null) {
      setItems(new Map());
      setLoading(false);
      setError(null);
      return;
    }
    let active = true;
    setLoading(true);
    setError(null);
    const clean = Object.fromEntries(Object.entries(f).filter(([, v]) => v != null)) as SubscriptionFilter;
    if (Array.isArray(t)) clean.event_types = t;
    const eventTypes = coveredEventTypes(Array.isArray(t) ? undefined : t, clean);
    // Keep what still matches the new arguments; the snapshot refreshes the rest.
    setItems((prev) => {
      const next = new Map<Key, T>();
      for (const [k, v] of prev) {
        const item = v as Record<string, unknown>;
        const last = String(item['last_event_type'] ?? eventTypes[0]);
        if (matchesFilter(eventTypes, clean, last, item)) next.set(k, v);
      }
      return next.size === prev.size ? prev : next;
    });
    const options: SubscribeOptions = { snapshot: true };
    const sub = service.subscribe(t, f, options);
    sub.on('event', (event) => {
      if (!active) return;
      const k = fns.current.keyOf(event);
      if (k === undefined) return;
      setItems((prev) => {
        const next = new Map(prev);
        next.set(k, fns.current.reduce(prev.get(k), event));
        return next;
      });
    });
    sub.on('recovery_failed', (failure) => {
      if (active) fns.current.options.onRecoveryFailed?.(failure);
    });
    sub.ready.then(
      () => {
        if (active) setLoading(false);
      },
      (err: unknown) => {
        if (!active) return;
        setLoading(false);
        setError(err instanceof RealtimeError ? err : new RealtimeError(String(err), 'internal_error'));
      },
    );
    return () => {
      active = false;
      sub.unsubscribe();
    };
  }, [service, argsKey]);

  const list = useMemo(() => [...items.values()], [items]);
  return { items: list, loading, error };
}

function idList(values: readonly number[] | null | undefined): number[] | null | undefined {
  return values == null ? undefined : values.length === 0 ? null : [...values];
}

function stringList(values: readonly string[] | null | undefined): string[] | null | undefined {
  return values == null ? undefined : values.length === 0 ? null : [...values];
}

function updatedAt(event: RealtimeEvent): string {
  return event.timestamp;
}

// -- predictions --------------------------------------------------------------------

export type PredictionStatus = 'created' | 'updated' | 'completed';

/** A prediction as last seen: the fields of every event about it, merged. */
export type PredictionItem = Partial<PredictionUpdated> &
  Partial<PredictionCompleted> & {
    /** `prediction_id`, for React keys (`key={pred.id}`). */
    id: number | string;
    prediction_id: number | string;
    match_id: number;
    status: PredictionStatus;
    last_event_type: 'prediction_created' | 'prediction_updated' | 'prediction_completed';
    updated_at: string;
  };

const PREDICTION_STATUS: Record<string, PredictionStatus> = {
  prediction_created: 'created',
  prediction_updated: 'updated',
  prediction_completed: 'completed',
};

/**
 * Live predictions for `matchIds` (undefined: all matches; []: none) with
 * `confidence >= minConfidence`, keyed by `prediction_id`.
 */
export function usePredictionsWebSocket(
  matchIds?: readonly number[] | null,
  minConfidence?: number | null,
  options?: LiveCollectionOptions,
): { predictions: PredictionItem[]; loading: boolean; error: RealtimeError | null } {
  const ids = idList(matchIds);
  const filters = ids === null ? null : { match_ids: ids, min_confidence: minConfidence ?? undefined };
  const { items, loading, error } = useLiveCollection<PredictionItem>(
    'predictions',
    filters,
    (e) => (e.data as { prediction_id?: Key }).prediction_id,
    (prev, e) => {
      const data = e.data as PredictionUpdated;
      return {
        ...prev,
        ...(data as object),
        id: data.prediction_id,
        prediction_id: data.prediction_id,
        match_id: data.match_id,
        status: PREDICTION_STATUS[e.event_type] ?? 'updated',
        last_event_type: e.event_type as PredictionItem['last_event_type'],
        updated_at: updatedAt(e),
      } as PredictionItem;
    },
    options,
  );
  return { predictions: items, loading, error };
}

// -- matches ------------------------------------------------------------------------

/** A match as last seen: teams, score, status, merged from its events. */
export type MatchItem = Partial<MatchStarted> &
  Partial<MatchScoreChanged> &
  Partial<MatchStatusChanged> &
  Partial<MatchEnded> & {
    /** `match_id`, for React keys. */
    id: number;
    match_id: number;
    last_event_type: 'match_started' | 'match_score_changed' | 'match_status_changed' | 'match_ended';
    updated_at: string;
  };

/**
 * Live matches for `matchIds` and `leagues` (undefined: any; []: none), keyed by
 * `match_id`. `status` follows `match_status_changed`; `match_started` sets it to
 * `first_half` and `match_ended` to `finished` when no status came with them.
 */
export function useMatchesWebSocket(
  matchIds?: readonly number[] | null,
  leagues?: readonly string[] | null,
  options?: LiveCollectionOptions,
): { matches: MatchItem[]; loading: boolean; error: RealtimeError | null } {
  const ids = idList(matchIds);
  const lgs = stringList(leagues);
  const filters = ids === null || lgs === null ? null : { match_ids: ids, leagues: lgs };
  const { items, loading, error } = useLiveCollection<MatchItem>(
    'matches',
    filters,
    (e) => (e.data as { match_id?: number }).match_id,
    (prev, e) => {
      const data = e.data as MatchItem;
      const next = {
        ...prev,
        ...(data as object),
        id: data.match_id,
        match_id: data.match_id,
        last_event_type: e.event_type as MatchItem['last_event_type'],
        updated_at: updatedAt(e),
      } as MatchItem;
      if (e.event_type === 'match_started' && !data.status) next.status = 'first_half';
      if (e.event_type === 'match_ended' && !data.status) next.status = 'finished';
      return next;
    },
    options,
  );
  return { matches: items, loading, error };
}

// -- odds ---------------------------------------------------------------------------

/** Latest odds of one bookmaker for one match. */
export type OddsItem = Partial<OddsUpdated> & {
  /** `${match_id}:${bookmaker}`, for React keys. */
  id: string;
  match_id: number;
  bookmaker: string;
  /** The latest `odds_significant_change` for this match and bookmaker. */
  last_significant_change?: OddsSignificantChange;
  last_event_type: 'odds_updated' | 'odds_significant_change';
  updated_at: string;
};

/** Live odds for `matchIds` (undefined: all; []: none), keyed by match and bookmaker. */
export function useOddsWebSocket(
  matchIds?: readonly number[] | null,
  options?: LiveCollectionOptions,
): { odds: OddsItem[]; loading: boolean; error: RealtimeError | null } {
  const ids = idList(matchIds);
  const filters = ids === null ? null : { match_ids: ids };
  const { items, loading, error } = useLiveCollection<OddsItem>(
    'odds',
    filters,
    (e) => {
      const d = e.data as { match_id?: number; bookmaker?: string };
      return d.match_id === undefined ? undefined : `${d.match_id}:${d.bookmaker ?? ''}`;
    },
    (prev, e) => {
      const base = {
        ...prev,
        id: `${(e.data as OddsUpdated).match_id}:${(e.data as OddsUpdated).bookmaker}`,
        match_id: (e.data as OddsUpdated).match_id,
        bookmaker: (e.data as OddsUpdated).bookmaker,
        last_event_type: e.event_type as OddsItem['last_event_type'],
        updated_at: updatedAt(e),
      };
      if (e.event_type === 'odds_significant_change') {
        const c = e.data as OddsSignificantChange;
        return { ...base, [`${c.outcome}_odds`]: c.new_odds, last_significant_change: c } as OddsItem;
      }
      return { ...base, ...(e.data as object) } as OddsItem;
    },
    options,
  );
  return { odds: items, loading, error };
}
