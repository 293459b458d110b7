/**
 * The dashboard's live data, on our client and its React hooks:
 *
 * - `useViewerService(tier)`: a viewer token from /demo/token and one WebSocketService for
 *   it, shared with the page through <RealtimeProvider service={...}>.
 * - `useDashboard(filters, viewer)`: inside the provider; `useWebSocket` for the connection,
 *   `useRealtimeEvent` for events; a snapshot from /demo/state, then live events; the
 *   subscriptions follow the filters.
 */

import { type StateChange, type Subscription, WebSocketService } from "@football-realtime/client";
import { useRealtimeEvent, useWebSocket } from "@football-realtime/client/react";
import { useEffect, useReducer, useRef, useState } from "react";
import {
  addHistory,
  applyEvent,
  applySnapshot,
  type DashboardState,
  emptyState,
  prune,
  subscriptionsFor,
  type ViewFilters,
} from "./store";
import type { RealtimeEvent, Snapshot, Tier, ViewerToken } from "./types";

type SubscriptionType = Parameters<WebSocketService["subscribe"]>[0] & string;

export type Phase = "connecting" | "live" | "reconnecting" | "recovering" | "closed";

export interface ConnectionView {
  phase: Phase;
  attempt: number;
  retryInMs?: number;
  closeCode?: number;
  connectionId?: string;
  userId?: string;
  error?: string;
  reconnects: number;
}

/** An event and when it arrived (its lag is measured then, not when the UI catches up). */
interface Received {
  ev: RealtimeEvent;
  at: number;
}

type Action =
  | { kind: "snapshot"; snap: Snapshot; now: number }
  | { kind: "events"; events: Received[] }
  | { kind: "history"; events: RealtimeEvent[]; now: number }
  | { kind: "prune"; now: number };

function reducer(state: DashboardState, action: Action): DashboardState {
  switch (action.kind) {
    case "snapshot":
      return applySnapshot(state, action.snap, action.now);
    case "events":
      return action.events.reduce((s, r) => applyEvent(s, r.ev, r.at), state);
    case "history":
      return addHistory(state, action.events, action.now);
    case "prune":
      return prune(state, action.now, Math.max(30000, 15 * state.secondsPerMinute * 1000));
  }
}

const wsUrl = (): string => `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/realtime/ws`;

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return (await r.json()) as T;
}

export interface Viewer {
  service: WebSocketService;
  tier: Tier;
  /** the current token; replaced before a reconnect when close to expiry or refused */
  token: { current: ViewerToken | null };
  refreshToken: () => Promise<void>;
}

/** One connection per viewer tier, with its own signed token. */
export function useViewerService(tier: Tier): { viewer: Viewer | null; error?: string } {
  const [viewer, setViewer] = useState<Viewer | null>(null);
  const [error, setError] = useState<string>();
  useEffect(() => {
    let cancelled = false;
    let service: WebSocketService | null = null;
    const token: { current: ViewerToken | null } = { current: null };
    const refreshToken = async () => {
      token.current = await getJson<ViewerToken>(`/demo/token?tier=${tier}`).catch(() => token.current);
      try {
        if (token.current) localStorage.setItem(`football-demo:token:${tier}`, JSON.stringify(token.current));
      } catch {
        // storage unavailable
      }
    };
    // The viewer's token outlives a reload (as a login would), so its durable session
    // (same user) resumes and the page shows what happened while it reloaded.
    const tokenKey = `football-demo:token:${tier}`;
    const stored = (): ViewerToken | null => {
      try {
        const t = JSON.parse(localStorage.getItem(tokenKey) ?? "null") as ViewerToken | null;
        return t && t.expires_at * 1000 - Date.now() > 60000 ? t : null;
      } catch {
        return null;
      }
    };
    const keep = (t: ViewerToken | null) => {
      try {
        if (t) localStorage.setItem(tokenKey, JSON.stringify(t));
      } catch {
        // storage unavailable: a reload starts a new viewer
      }
    };
    void (async () => {
      try {
        token.current = stored() ?? (await getJson<ViewerToken>(`/demo/token?tier=${tier}`));
        keep(token.current);
      } catch (err) {
        // Without a token the connection still works, as an anonymous (free) viewer.
        setError(String(err));
      }
      if (cancelled) return;
      service = new WebSocketService({
        url: wsUrl(),
        userId: token.current?.user_id,
        // Read before every (re)connect: a token close to expiry is replaced first.
        token: async () => {
          const t = token.current;
          if (t && t.expires_at * 1000 - Date.now() < 60000) await refreshToken();
          return token.current?.token ?? null;
        },
        heartbeatInterval: 15000,
        minReconnectDelay: 250,
        maxReconnectDelay: 5000,
        // A durable session per viewer: a reload resumes it (docs/clients.md).
        session: "auto",
        // Per viewer: a new token (a new user) starts its own session.
        sessionKey: `football-realtime:session:${tier}:${token.current?.user_id ?? "anonymous"}`,
      });
      setViewer({ service, tier, token, refreshToken });
    })();
    return () => {
      cancelled = true;
      service?.disconnect();
      setViewer(null);
    };
  }, [tier]);
  return { viewer, error };
}

export interface Subscribed {
  type: string;
  filters: Record<string, unknown>;
  serverId?: string;
  effective?: Record<string, unknown>;
}

function describe(handles: Map<string, Subscription>): Subscribed[] {
  return [...handles.values()].map((h) => ({
    type: h.subscriptionType ?? h.streams.join(","),
    filters: h.filters as Record<string, unknown>,
    serverId: h.status === "active" ? (h.id ?? undefined) : undefined,
    effective: h.status === "active" ? (h.result?.filters as Record<string, unknown> | undefined) : undefined,
  }));
}

/**
 * How a connection becomes live: after each open, wait for every (re)subscription's
 * ack; load the snapshot on the first connection, or when the service could not replay
 * a gap (it restarted: `recovery_failed`); hold live events while a snapshot loads and
 * keep only those newer than it.
 */
class Pipeline {
  awaiting = new Set<number>();
  needSnapshot = true;
  holding = false;
  held: Received[] = [];
  queue: Received[] = [];
  flushTimer: ReturnType<typeof setTimeout> | null = null;
  everOpen = false;
  reconnects = 0;
  lastTokenRefresh = 0;
  disposed = false;
}

export function useDashboard(filters: ViewFilters, viewer: Viewer) {
  const { service, state: clientState } = useWebSocket({ userId: viewer.token.current?.user_id });
  const [state, dispatch] = useReducer(reducer, undefined, emptyState);
  const [conn, setConn] = useState<ConnectionView>({ phase: "connecting", attempt: 0, reconnects: 0 });
  const [subscribed, setSubscribed] = useState<Subscribed[]>([]);
  const [rttMs, setRttMs] = useState<number | null>(null);
  const handles = useRef(new Map<string, Subscription>());
  const pipe = useRef(new Pipeline()).current;

  const goLive = () => setConn((c) => ({ ...c, phase: service.state === "open" ? "live" : c.phase, error: undefined }));

  const loadSnapshot = async () => {
    pipe.holding = true;
    try {
      const t = viewer.token.current;
      const snap = await getJson<Snapshot>(`/demo/state${t ? `?token=${encodeURIComponent(t.token)}` : ""}`);
      if (pipe.disposed) return;
      const cut = Date.parse(snap.server_time);
      dispatch({ kind: "snapshot", snap, now: Date.now() });
      const fresh = pipe.held.filter((r) => !(Date.parse(r.ev.timestamp) <= cut));
      // A resumed session replayed what happened while the page was away (a reload):
      // the snapshot holds its effect, the feed shows it.
      const missed = pipe.held.filter((r) => Date.parse(r.ev.timestamp) <= cut).map((r) => r.ev);
      if (missed.length && service.session?.resumed) dispatch({ kind: "history", events: missed, now: Date.now() });
      if (fresh.length) dispatch({ kind: "events", events: fresh });
      goLive();
    } catch (err) {
      setConn((c) => ({ ...c, error: String(err) }));
    } finally {
      pipe.holding = false;
      pipe.held = [];
    }
  };

  const settled = () => {
    if (pipe.awaiting.size > 0) return;
    if (pipe.needSnapshot) {
      pipe.needSnapshot = false;
      void loadSnapshot();
    } else {
      goLive();
    }
  };

  useRealtimeEvent("*", (msg) => {
    const ev = msg as unknown as RealtimeEvent;
    if (ev.offset === undefined) return; // replies and connection messages
    const r = { ev, at: Date.now() };
    if (pipe.holding) {
      pipe.held.push(r);
      return;
    }
    pipe.queue.push(r);
    pipe.flushTimer ??= setTimeout(() => {
      pipe.flushTimer = null;
      const events = pipe.queue;
      pipe.queue = [];
      if (events.length) dispatch({ kind: "events", events });
    }, 40);
  });

  useRealtimeEvent("recovery_failed", () => {
    pipe.needSnapshot = true;
    pipe.holding = true;
  });

  useRealtimeEvent("connection_status", () => setConn((c) => ({ ...c, connectionId: service.connectionId ?? c.connectionId })));

  useRealtimeEvent("state", (s: StateChange) => {
    if (s.state === "open") {
      const reconnected = pipe.everOpen;
      pipe.everOpen = true;
      if (reconnected) pipe.reconnects += 1;
      setConn((c) => ({
        ...c,
        phase: reconnected ? "recovering" : "connecting",
        attempt: 0,
        retryInMs: undefined,
        closeCode: undefined,
        reconnects: pipe.reconnects,
      }));
      // First connection: hold events until the snapshot is in. After a reconnect the
      // client replays what was missed, so events flow at once unless recovery fails.
      if (!reconnected) pipe.holding = true;
      pipe.awaiting = new Set(service.subscriptions.map((x) => x.key));
      if (pipe.awaiting.size === 0) settled();
    } else if (s.state === "reconnecting" || s.state === "connecting") {
      setConn((c) => ({
        ...c,
        phase: pipe.everOpen ? "reconnecting" : "connecting",
        attempt: s.attempt ?? c.attempt,
        retryInMs: s.delay,
        closeCode: s.code ?? c.closeCode,
      }));
    } else if (s.state === "closed") {
      setConn((c) => ({ ...c, phase: "closed", closeCode: s.code, error: s.reason }));
      // A refused token (unauthorized, expired): a new one, then again (at most every 10 s).
      if ((s.code === 4501 || s.code === 4502) && Date.now() - pipe.lastTokenRefresh > 10000) {
        pipe.lastTokenRefresh = Date.now();
        void viewer.refreshToken().then(() => pipe.disposed || service.connect());
      }
    }
  });

  useEffect(() => {
    pipe.disposed = false; // StrictMode mounts twice
    setConn((c) => ({ ...c, userId: viewer.token.current?.user_id }));
    const pruner = setInterval(() => dispatch({ kind: "prune", now: Date.now() }), 2000);
    return () => {
      pipe.disposed = true;
      clearInterval(pruner);
      if (pipe.flushTimer) clearTimeout(pipe.flushTimer);
    };
  }, [pipe, viewer]);

  // Heartbeat round trip for the stats panel.
  useEffect(() => {
    const ping = async () => {
      if (service.state !== "open") return;
      const t0 = performance.now();
      try {
        await service.request("heartbeat");
        setRttMs(performance.now() - t0);
      } catch {
        // the connection state already tells
      }
    };
    const i = setInterval(ping, 5000);
    const first = setTimeout(ping, 500);
    return () => {
      clearInterval(i);
      clearTimeout(first);
    };
  }, [service]);

  // Live subscriptions follow the filters: replace only the streams whose filters changed.
  const wantedKey = JSON.stringify(subscriptionsFor(filters));
  useEffect(() => {
    const wanted = JSON.parse(wantedKey) as { type: SubscriptionType; filters: Record<string, unknown> }[];
    for (const w of wanted) {
      const have = handles.current.get(w.type);
      if (have && JSON.stringify(have.filters) === JSON.stringify(w.filters)) continue;
      if (have) service.unsubscribe(have);
      const sub = service.subscribe(w.type, w.filters);
      sub.on("subscribed", () => {
        setSubscribed(describe(handles.current));
        // recovery_failed follows its ack synchronously: decide after it
        if (pipe.awaiting.delete(sub.key)) queueMicrotask(settled);
      });
      sub.on("error", () => {
        // e.g. `forbidden`: a free viewer may not receive that stream at all; the page goes
        // live with what the tier allows instead of waiting for an ack that never comes
        setSubscribed(describe(handles.current));
        if (pipe.awaiting.delete(sub.key)) queueMicrotask(settled);
      });
      handles.current.set(w.type, sub);
    }
    setSubscribed(describe(handles.current));
    // eslint-disable-next-line react-hooks/exhaustive-deps -- settled reads refs only
  }, [service, wantedKey]);

  // Unsubscribe everything when the page stops showing this viewer.
  useEffect(
    () => () => {
      for (const h of handles.current.values()) service.unsubscribe(h);
      handles.current.clear();
    },
    [service],
  );

  return { state, conn, clientState, subscribed, rttMs };
}
