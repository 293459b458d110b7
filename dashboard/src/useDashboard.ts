/**
 * One live connection for the dashboard: a viewer token from /demo/token, a snapshot from
 * /demo/state, then live events over the WebSocket. Subscriptions follow the filters.
 */

import { useEffect, useReducer, useRef, useState } from "react";
import { type StateInfo, type SubscriptionHandle, WebSocketService } from "./realtime/client";
import {
  applyEvent,
  applySnapshot,
  type DashboardState,
  emptyState,
  prune,
  subscriptionsFor,
  type ViewFilters,
} from "./store";
import type { RealtimeEvent, Snapshot, Tier, ViewerToken } from "./types";

export type Phase = "connecting" | "live" | "reconnecting" | "recovering" | "closed";

export interface ConnectionView {
  phase: Phase;
  attempt: number;
  retryInMs?: number;
  closeCode?: number;
  connectionId?: string;
  userId?: string;
  tier: Tier;
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
  | { kind: "prune"; now: number }
  | { kind: "reset" };

function reducer(state: DashboardState, action: Action): DashboardState {
  switch (action.kind) {
    case "snapshot":
      return applySnapshot(state, action.snap, action.now);
    case "events":
      return action.events.reduce((s, r) => applyEvent(s, r.ev, r.at), state);
    case "prune":
      return prune(state, action.now, Math.max(30000, 15 * state.secondsPerMinute * 1000));
    case "reset":
      return emptyState();
  }
}

const wsUrl = (): string => {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/realtime/ws`;
};

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return (await r.json()) as T;
}

export interface Subscribed {
  type: string;
  filters: Record<string, unknown>;
  serverId?: string;
  effective?: Record<string, unknown>;
}

export function useDashboard(tier: Tier, filters: ViewFilters) {
  const [state, dispatch] = useReducer(reducer, undefined, emptyState);
  const [conn, setConn] = useState<ConnectionView>({ phase: "connecting", attempt: 0, tier, reconnects: 0 });
  const [service, setService] = useState<WebSocketService | null>(null);
  const [subscribed, setSubscribed] = useState<Subscribed[]>([]);
  const handles = useRef(new Map<string, SubscriptionHandle>());

  // Connection lifecycle, once per viewer tier.
  useEffect(() => {
    let cancelled = false;
    let svc: WebSocketService | null = null;
    let token: ViewerToken | null = null;
    let recovering = false;
    let held: Received[] = [];
    let queue: Received[] = [];
    let flushTimer: ReturnType<typeof setTimeout> | null = null;
    let reconnects = 0;
    let lastTokenRefresh = 0;
    handles.current = new Map();
    dispatch({ kind: "reset" });
    setConn({ phase: "connecting", attempt: 0, tier, reconnects: 0 });

    const flush = () => {
      flushTimer = null;
      if (queue.length === 0) return;
      const events = queue;
      queue = [];
      dispatch({ kind: "events", events });
    };

    const loadSnapshot = async () => {
      recovering = true;
      held = [];
      setConn((c) => ({ ...c, phase: c.phase === "connecting" ? "connecting" : "recovering" }));
      try {
        const q = token ? `?token=${encodeURIComponent(token.token)}` : "";
        const snap = await getJson<Snapshot>(`/demo/state${q}`);
        if (cancelled) return;
        const cut = Date.parse(snap.server_time);
        dispatch({ kind: "snapshot", snap, now: Date.now() });
        // Events that raced the snapshot: keep only those newer than it.
        const fresh = held.filter((r) => !(Date.parse(r.ev.timestamp) <= cut));
        held = [];
        recovering = false;
        if (fresh.length) dispatch({ kind: "events", events: fresh });
        setConn((c) => ({ ...c, phase: svc?.state.state === "open" ? "live" : c.phase, error: undefined }));
      } catch (err) {
        recovering = false;
        setConn((c) => ({ ...c, error: String(err) }));
      }
    };

    const onState = (s: StateInfo) => {
      if (cancelled) return;
      if (s.state === "open") {
        if (s.reconnected) reconnects += 1;
        setConn((c) => ({
          ...c,
          phase: "recovering",
          attempt: 0,
          retryInMs: undefined,
          closeCode: undefined,
          connectionId: s.connectionId,
          reconnects,
        }));
        void loadSnapshot();
      } else if (s.state === "reconnecting" || s.state === "connecting") {
        setConn((c) => ({
          ...c,
          phase: s.state === "connecting" ? "connecting" : "reconnecting",
          attempt: s.attempt,
          retryInMs: s.retryInMs,
          closeCode: s.closeCode,
        }));
      } else if (s.state === "closed") {
        setConn((c) => ({ ...c, phase: "closed", closeCode: s.closeCode, error: s.closeReason }));
        // Unauthorized or expired: a new token, then try again (not more than every 10 s).
        if ((s.closeCode === 4501 || s.closeCode === 4502) && Date.now() - lastTokenRefresh > 10000) {
          lastTokenRefresh = Date.now();
          void (async () => {
            token = await getJson<ViewerToken>(`/demo/token?tier=${tier}`);
            if (cancelled || !svc) return;
            svc.setToken(token.token, token.user_id);
            svc.connect();
          })();
        }
      }
    };

    (async () => {
      try {
        token = await getJson<ViewerToken>(`/demo/token?tier=${tier}`);
      } catch (err) {
        // Without a token the connection still works as an anonymous (free) viewer.
        setConn((c) => ({ ...c, error: String(err) }));
      }
      if (cancelled) return;
      svc = new WebSocketService({
        url: wsUrl(),
        userId: token?.user_id,
        token: token?.token,
        autoReconnect: true,
        heartbeatInterval: 5000,
      });
      svc.on("*", (ev) => {
        if (ev.offset === undefined) return; // replies and connection messages
        const r = { ev, at: Date.now() };
        if (recovering) {
          held.push(r);
          return;
        }
        queue.push(r);
        if (!flushTimer) flushTimer = setTimeout(flush, 40);
      });
      svc.on("client.subscribed", () => setSubscribed(describe(handles.current)));
      svc.onStateChange(onState);
      setConn((c) => ({ ...c, userId: token?.user_id }));
      setService(svc);
      svc.connect();
    })();

    const pruner = setInterval(() => dispatch({ kind: "prune", now: Date.now() }), 2000);
    return () => {
      cancelled = true;
      clearInterval(pruner);
      if (flushTimer) clearTimeout(flushTimer);
      svc?.disconnect();
      setService(null);
    };
  }, [tier]);

  // Live subscriptions follow the filters: replace only the streams whose filters changed.
  const wantedKey = JSON.stringify(subscriptionsFor(filters));
  useEffect(() => {
    if (!service) return;
    const wanted = JSON.parse(wantedKey) as { type: string; filters: Record<string, unknown> }[];
    for (const w of wanted) {
      const have = handles.current.get(w.type);
      if (have && JSON.stringify(have.filters) === JSON.stringify(w.filters)) continue;
      if (have) service.unsubscribe(have);
      handles.current.set(w.type, service.subscribe(w.type, w.filters));
    }
    setSubscribed(describe(handles.current));
  }, [service, wantedKey]);

  return { state, conn, service, subscribed };
}

function describe(handles: Map<string, SubscriptionHandle>): Subscribed[] {
  return [...handles.values()].map((h) => ({
    type: h.subscriptionType,
    filters: h.filters as Record<string, unknown>,
    serverId: h.serverId,
    effective: h.effective,
  }));
}
