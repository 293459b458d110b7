/**
 * A small WebSocket client for the football-realtime protocol, with the API the design
 * document shows (WebSocketService: connect, on, subscribe). Reconnects with full-jitter
 * backoff, resubscribes everything after a reconnect, and sends application heartbeats.
 *
 * Interim: the dashboard moves to @football-realtime/client (clients/js) once it lands.
 */

import type { RealtimeEvent } from "../types";

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface StateInfo {
  state: ConnectionState;
  attempt: number;
  /** ms until the next reconnect attempt, while reconnecting */
  retryInMs?: number;
  closeCode?: number;
  closeReason?: string;
  connectionId?: string;
  /** true once a connection that had been lost is open again */
  reconnected: boolean;
}

export interface ServiceOptions {
  url: string;
  userId?: string;
  token?: string;
  autoReconnect?: boolean;
  heartbeatInterval?: number;
  maxReconnectAttempts?: number;
}

export type Filters = {
  match_ids?: number[];
  leagues?: string[];
  min_confidence?: number;
  event_types?: string[];
};

export interface SubscriptionHandle {
  readonly key: number;
  readonly subscriptionType: string;
  readonly filters: Filters;
  /** the server's id and effective filters, once acknowledged */
  serverId?: string;
  effective?: Record<string, unknown>;
}

type Handler = (event: RealtimeEvent) => void;

interface Pending {
  resolve: (reply: RealtimeEvent) => void;
  reject: (err: Error) => void;
}

/** Close codes after which reconnecting unchanged cannot help (4500-4999, 1000, 1002, 1003...). */
export function shouldReconnect(code: number): boolean {
  if (code >= 4000 && code < 4500) return true;
  if (code >= 4500 && code < 5000) return false;
  return [1001, 1005, 1006, 1008, 1011, 1012, 1013, 1014].includes(code);
}

export class WebSocketService {
  private opts: Required<Omit<ServiceOptions, "userId" | "token">> & Pick<ServiceOptions, "userId" | "token">;
  private ws: WebSocket | null = null;
  private handlers = new Map<string, Set<Handler>>();
  private stateHandlers = new Set<(s: StateInfo) => void>();
  private subs = new Map<number, SubscriptionHandle>();
  private pending = new Map<string, Pending>();
  private nextKey = 1;
  private nextId = 1;
  private attempt = 0;
  private everOpen = false;
  private wanted = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private info: StateInfo = { state: "idle", attempt: 0, reconnected: false };
  lastRttMs: number | null = null;

  constructor(options: ServiceOptions) {
    this.opts = {
      autoReconnect: true,
      heartbeatInterval: 30000,
      maxReconnectAttempts: Infinity,
      ...options,
    };
  }

  get state(): StateInfo {
    return this.info;
  }

  setToken(token: string | undefined, userId?: string): void {
    this.opts.token = token;
    if (userId !== undefined) this.opts.userId = userId;
  }

  connect(): void {
    this.wanted = true;
    if (this.ws) return;
    this.open();
  }

  disconnect(): void {
    this.wanted = false;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, "client closed");
    }
    this.failPending("disconnected");
    this.setState({ state: "closed", attempt: 0, reconnected: false });
  }

  /** Listen to one event type ("*" for every event); returns the way to stop listening. */
  on(eventType: string, handler: Handler): () => void {
    let set = this.handlers.get(eventType);
    if (!set) this.handlers.set(eventType, (set = new Set()));
    set.add(handler);
    return () => this.off(eventType, handler);
  }

  off(eventType: string, handler: Handler): void {
    this.handlers.get(eventType)?.delete(handler);
  }

  onStateChange(handler: (s: StateInfo) => void): () => void {
    this.stateHandlers.add(handler);
    return () => this.stateHandlers.delete(handler);
  }

  /** Subscribe to a stream with filters; kept across reconnects until unsubscribed. */
  subscribe(subscriptionType: string, filters: Filters = {}): SubscriptionHandle {
    const handle: SubscriptionHandle = { key: this.nextKey++, subscriptionType, filters };
    this.subs.set(handle.key, handle);
    if (this.ws?.readyState === WebSocket.OPEN) void this.sendSubscribe(handle);
    return handle;
  }

  unsubscribe(handle: SubscriptionHandle): void {
    if (!this.subs.delete(handle.key)) return;
    if (handle.serverId && this.ws?.readyState === WebSocket.OPEN) {
      this.request("unsubscribe", { subscription_id: handle.serverId }).catch(() => undefined);
    }
  }

  subscriptions(): SubscriptionHandle[] {
    return [...this.subs.values()];
  }

  /** Send a request and resolve with its reply (message_ack); reject on an error reply. */
  request(type: string, data?: Record<string, unknown>, timeoutMs = 10000): Promise<RealtimeEvent> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("not connected"));
    const id = `m${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${type} timed out`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      ws.send(JSON.stringify(data ? { type, id, data } : { type, id }));
    });
  }

  /** Application heartbeat; resolves with the round trip in ms. */
  async ping(): Promise<number> {
    const t0 = performance.now();
    await this.request("heartbeat");
    this.lastRttMs = performance.now() - t0;
    return this.lastRttMs;
  }

  private url(): string {
    const u = new URL(this.opts.url, typeof location !== "undefined" ? location.href : undefined);
    if (this.opts.userId) u.searchParams.set("user_id", this.opts.userId);
    if (this.opts.token) u.searchParams.set("token", this.opts.token);
    return u.toString();
  }

  private open(): void {
    this.setState({ ...this.info, state: this.everOpen || this.attempt > 0 ? "reconnecting" : "connecting", retryInMs: undefined });
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
    };
    ws.onmessage = (msg) => this.dispatch(msg.data);
    ws.onclose = (ev) => this.closed(ws, ev.code, ev.reason);
    ws.onerror = () => undefined; // a close event always follows
  }

  private dispatch(raw: unknown): void {
    if (typeof raw !== "string") return;
    let event: RealtimeEvent;
    try {
      event = JSON.parse(raw);
    } catch {
      return;
    }
    const type = event.event_type;
    if (type === "message_ack" || type === "error") {
      const id = event.data?.id;
      const p = typeof id === "string" ? this.pending.get(id) : undefined;
      if (p) {
        this.pending.delete(id);
        if (type === "message_ack") p.resolve(event);
        else p.reject(new Error(`${event.data.code}: ${event.data.message}`));
      }
    }
    if (type === "connection_status" && event.data?.status === "connected") {
      const reconnected = this.everOpen;
      this.everOpen = true;
      this.setState({
        state: "open",
        attempt: 0,
        reconnected,
        connectionId: event.data.connection_id,
      });
      for (const h of this.subs.values()) void this.sendSubscribe(h);
      this.startHeartbeat();
    }
    for (const key of [type, "*"]) {
      this.handlers.get(key)?.forEach((h) => {
        try {
          h(event);
        } catch (err) {
          console.warn("handler failed", err);
        }
      });
    }
  }

  private async sendSubscribe(handle: SubscriptionHandle): Promise<void> {
    handle.serverId = undefined;
    try {
      const reply = await this.request("subscribe", {
        subscription_type: handle.subscriptionType,
        filters: handle.filters,
      });
      if (!this.subs.has(handle.key)) {
        // unsubscribed while the request was in flight
        this.request("unsubscribe", { subscription_id: reply.data.result.subscription_id }).catch(() => undefined);
        return;
      }
      handle.serverId = reply.data.result.subscription_id;
      handle.effective = reply.data.result.filters;
      this.emitLocal("subscribed", { handle: handle.key, result: reply.data.result });
    } catch (err) {
      this.emitLocal("subscribe_failed", { handle: handle.key, message: String(err) });
    }
  }

  private emitLocal(type: string, data: Record<string, unknown>): void {
    const ev: RealtimeEvent = { event_type: `client.${type}`, data, timestamp: new Date().toISOString() };
    this.handlers.get(ev.event_type)?.forEach((h) => h(ev));
  }

  private startHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => {
      this.ping().catch(() => undefined);
    }, this.opts.heartbeatInterval);
    this.ping().catch(() => undefined);
  }

  private closed(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.failPending(`connection closed (${code})`);
    const retry =
      this.wanted && this.opts.autoReconnect && shouldReconnect(code) && this.attempt < this.opts.maxReconnectAttempts;
    if (!retry) {
      this.setState({ state: "closed", attempt: this.attempt, closeCode: code, closeReason: reason, reconnected: false });
      return;
    }
    this.attempt += 1;
    // Full jitter: spread reconnects of many clients after a restart.
    const cap = Math.min(10000, 500 * 2 ** Math.min(this.attempt, 8));
    const delay = code === 1012 && this.attempt === 1 ? 100 + Math.random() * 400 : Math.random() * cap;
    this.setState({
      state: "reconnecting",
      attempt: this.attempt,
      retryInMs: delay,
      closeCode: code,
      closeReason: reason,
      reconnected: false,
    });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.wanted && !this.ws) this.open();
    }, delay);
  }

  private failPending(why: string): void {
    for (const p of this.pending.values()) p.reject(new Error(why));
    this.pending.clear();
  }

  private clearTimers(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.retryTimer = this.heartbeatTimer = null;
  }

  private setState(info: StateInfo): void {
    this.info = info;
    this.stateHandlers.forEach((h) => h(info));
  }
}
