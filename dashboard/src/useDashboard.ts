/**
 * One live connection for the dashboard: a viewer token from /demo/token, a snapshot from
 * /demo/state, then live events over the WebSocket. Subscriptions follow the filters.
 */

import { type StateChange, type Subscription, WebSocketService } from "@football-realtime/client";
import { useEffect, useReducer, useRef, useState } from "react";
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

type SubscriptionType = Parameters<WebSocketService["subscribe"]>[0] & string;

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
  const [rttMs, setRttMs] = useState<number | null>(null);
  const handles = useRef(new Map<string, Subscription>());
  const subscribedHook = useRef<((key: number) => void) | null>(null);

  // Connection lifecycle, once per viewer tier.
  useEffect(() => {
    let cancelled = false;
    let svc: WebSocketService | null = null;
    let token: ViewerToken | null = null;
    // Live events wait here while the snapshot loads; only those newer than it are applied.
    let loadingSnapshot = false;
    let held: Received[] = [];
    let queue: Received[] = [];
    let flushTimer: ReturnType<typeof setTimeout> | null = null;
    let reconnects = 0;
    let everOpen = false;
    let lastTokenRefresh = 0;
    // After each open: subscriptions not yet acknowledged, and whether the state must be
    // (re)loaded: on the first connection, or when the service could not replay a gap.
    let awaiting = new Set<number>();
    let needSnapshot = true;
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

    const goLive = () => setConn((c) => ({ ...c, phase: svc?.state === "open" ? "live" : c.phase, error: undefined }));

    const loadSnapshot = async () => {
      loadingSnapshot = true;
      try {
        const q = token ? `?token=${encodeURIComponent(token.token)}` : "";
        const snap = await getJson<Snapshot>(`/demo/state${q}`);
        if (cancelled) return;
        const cut = Date.parse(snap.server_time);
        dispatch({ kind: "snapshot", snap, now: Date.now() });
        const fresh = held.filter((r) => !(Date.parse(r.ev.timestamp) <= cut));
        if (fresh.length) dispatch({ kind: "events", events: fresh });
        goLive();
      } catch (err) {
        setConn((c) => ({ ...c, error: String(err) }));
      } finally {
        loadingSnapshot = false;
        held = [];
      }
    };

    // Every subscription acknowledged after a reconnect: live again, after reloading the
    // state if the service could not replay what was missed (e.g. it restarted).
    const settled = () => {
      if (awaiting.size > 0) return;
      if (needSnapshot) {
        needSnapshot = false;
        void loadSnapshot();
      } else {
        goLive();
      }
    };

    const onState = (s: StateChange) => {
      if (cancelled || !svc) return;
      if (s.state === "open") {
        const reconnected = everOpen;
        everOpen = true;
        if (reconnected) reconnects += 1;
        setConn((c) => ({
          ...c,
          phase: reconnected ? "recovering" : "connecting",
          attempt: 0,
          retryInMs: undefined,
          closeCode: undefined,
          reconnects,
        }));
        // Hold live events until the first snapshot is in; after a reconnect the client
        // replays what was missed, so events flow at once unless recovery fails.
        if (!reconnected) loadingSnapshot = true;
        awaiting = new Set(svc.subscriptions.map((x) => x.key));
        if (awaiting.size === 0) settled();
      } else if (s.state === "reconnecting" || s.state === "connecting") {
        setConn((c) => ({
          ...c,
          phase: s.state === "connecting" && !everOpen ? "connecting" : "reconnecting",
          attempt: s.attempt ?? c.attempt,
          retryInMs: s.delay,
          closeCode: s.code ?? c.closeCode,
        }));
      } else if (s.state === "closed") {
        setConn((c) => ({ ...c, phase: "closed", closeCode: s.code, error: s.reason }));
        // Refused token (unauthorized, expired): a new one, then try again (at most every 10 s).
        if ((s.code === 4501 || s.code === 4502) && Date.now() - lastTokenRefresh > 10000) {
          lastTokenRefresh = Date.now();
          void (async () => {
            token = await getJson<ViewerToken>(`/demo/token?tier=${tier}`).catch(() => token);
            if (!cancelled) svc?.connect();
          })();
        }
      }
    };

    (async () => {
      try {
        token = await getJson<ViewerToken>(`/demo/token?tier=${tier}`);
      } catch (err) {
        // Without a token the connection still works, as an anonymous (free) viewer.
        setConn((c) => ({ ...c, error: String(err) }));
      }
      if (cancelled) return;
      svc = new WebSocketService({
        url: wsUrl(),
        userId: token?.user_id,
        // Called before every (re)connect: a token close to expiry is replaced first.
        token: async () => {
          if (token && token.expires_at * 1000 - Date.now() < 60000) {
            token = await getJson<ViewerToken>(`/demo/token?tier=${tier}`).catch(() => token);
          }
          return token?.token ?? null;
        },
        autoReconnect: true,
        heartbeatInterval: 15000,
        minReconnectDelay: 250,
        maxReconnectDelay: 5000,
      });
      const s = svc;
      s.on("*", (msg) => {
        const ev = msg as unknown as RealtimeEvent;
        if (ev.offset === undefined) return; // replies and connection messages
        const r = { ev, at: Date.now() };
        if (loadingSnapshot) {
          held.push(r);
          return;
        }
        queue.push(r);
        if (!flushTimer) flushTimer = setTimeout(flush, 40);
      });
      s.on("connection_status", () => setConn((c) => ({ ...c, connectionId: s.connectionId ?? c.connectionId })));
      s.on("recovery_failed", () => {
        needSnapshot = true;
        loadingSnapshot = true;
      });
      s.on("state", onState);
      setConn((c) => ({ ...c, userId: token?.user_id }));
      // The first subscription (the filters effect) connects: every stream is then
      // subscribed before the snapshot is taken, so nothing falls between the two.
      setService(s);
    })();

    // Acks of resubscriptions after a reconnect (recovery_failed follows its ack at once).
    const onSubscribed = (key: number) => {
      setSubscribed(describe(handles.current));
      if (awaiting.delete(key)) queueMicrotask(settled);
    };
    subscribedHook.current = onSubscribed;

    const pruner = setInterval(() => dispatch({ kind: "prune", now: Date.now() }), 2000);
    return () => {
      cancelled = true;
      subscribedHook.current = null;
      clearInterval(pruner);
      if (flushTimer) clearTimeout(flushTimer);
      svc?.disconnect();
      setService(null);
    };
  }, [tier]);

  // Heartbeat round trip for the stats panel.
  useEffect(() => {
    if (!service) return;
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
    if (!service) return;
    const wanted = JSON.parse(wantedKey) as { type: SubscriptionType; filters: Record<string, unknown> }[];
    for (const w of wanted) {
      const have = handles.current.get(w.type);
      if (have && JSON.stringify(have.filters) === JSON.stringify(w.filters)) continue;
      if (have) service.unsubscribe(have);
      const sub = service.subscribe(w.type, w.filters);
      sub.on("subscribed", () => subscribedHook.current?.(sub.key));
      sub.on("error", () => setSubscribed(describe(handles.current)));
      handles.current.set(w.type, sub);
    }
    setSubscribed(describe(handles.current));
  }, [service, wantedKey]);

  return { state, conn, service, subscribed, rttMs };
}

function describe(handles: Map<string, Subscription>): Subscribed[] {
  return [...handles.values()].map((h) => ({
    type: h.subscriptionType ?? h.streams.join(","),
    filters: h.filters as Record<string, unknown>,
    serverId: h.status === "active" ? h.id ?? undefined : undefined,
    effective: h.status === "active" ? (h.result?.filters as Record<string, unknown> | undefined) : undefined,
  }));
}
