import type { SubscriptionType } from './generated/protocol.js';
import type { DurableSession, SessionStorageLike } from './types.js';

type Timer = ReturnType<typeof setTimeout>;
type Position = { epoch: string; offset: number };

/** An ack goes once the application has taken nothing more for this long (ms)... */
export const ACK_INTERVAL = 250;
/** ...and at the latest this long (ms) after the first unacknowledged event... */
export const ACK_MAX_DELAY = 1000;
/** ...or at once when this many events taken by the application are unacknowledged. */
export const ACK_BATCH = 100;

const SESSION_ID = /^[A-Za-z0-9_-]{22,64}$/;

/**
 * The client's half of a durable session (docs/protocol.md, Sessions): the session id,
 * the newest position per stream the application took (its handlers returned), acks
 * to the server coalesced ({@link ACK_INTERVAL} ms after the last event taken, at the
 * latest {@link ACK_MAX_DELAY} ms after the first unacknowledged one, or at once at
 * {@link ACK_BATCH} events: a busy stream is acknowledged once a second),
 * and, with `'auto'`, the id and positions kept in storage so a page reload resumes.
 */
export class SessionState {
  id: string | null;
  resumed = false;
  expiresIn: number | null = null;
  readonly taken = new Map<SubscriptionType, Position>();
  /** Whether positions came from storage (a previous page): a subscription of their
   *  streams that the server does not restore is sent with `since` from them. */
  readonly fromStore: boolean;
  private readonly pending = new Map<SubscriptionType, Position>();
  private unacked = 0;
  private timer: Timer | undefined;
  /** When the application last took an event, and took the first unacknowledged one. */
  private lastTaken = 0;
  private firstUnacked = 0;

  constructor(
    mode: string,
    private readonly storage: SessionStorageLike | null,
    private readonly key: string,
    /** Sends one `ack`; false when no connection is open (it is retried later). */
    private readonly sendAck: (positions: Record<string, Position>) => boolean,
  ) {
    this.id = mode !== 'auto' && SESSION_ID.test(mode) ? mode : null;
    if (mode === 'auto' && storage) {
      try {
        const saved = JSON.parse(storage.getItem(key) ?? 'null') as {
          id?: unknown;
          taken?: Record<string, { epoch?: unknown; offset?: unknown }>;
        } | null;
        if (saved && typeof saved.id === 'string' && SESSION_ID.test(saved.id)) this.id = saved.id;
        for (const [stream, p] of Object.entries(saved?.taken ?? {})) {
          if (typeof p.epoch === 'string' && typeof p.offset === 'number') {
            this.taken.set(stream as SubscriptionType, { epoch: p.epoch, offset: p.offset });
          }
        }
      } catch {
        // unreadable: start afresh
      }
    }
    this.fromStore = this.taken.size > 0;
  }

  /** The handshake's query parameters. */
  params(): [string, string][] {
    return this.id ? [['session_id', this.id], ['resume', '1']] : [['session_id', 'new']];
  }

  /** `connection_status.session` of a new connection. */
  welcome(info: unknown): void {
    if (!info || typeof info !== 'object') return;
    const { id, resumed, expires_in } = info as { id?: unknown; resumed?: unknown; expires_in?: unknown };
    this.resumed = resumed === true;
    this.expiresIn = typeof expires_in === 'number' ? expires_in : null;
    if (typeof id === 'string' && id !== this.id) {
      this.id = id;
      this.save();
    }
  }

  /** The application's handlers returned for this event: acknowledge it soon. */
  took(stream: SubscriptionType, epoch: string, offset: number): void {
    const prev = this.taken.get(stream);
    if (prev && prev.epoch === epoch && prev.offset >= offset) return;
    this.taken.set(stream, { epoch, offset });
    this.pending.set(stream, { epoch, offset });
    this.unacked += 1;
    this.save();
    this.lastTaken = Date.now();
    if (this.unacked >= ACK_BATCH) this.flush();
    else if (this.timer === undefined) {
      this.firstUnacked = this.lastTaken;
      this.timer = setTimeout(() => this.due(), ACK_INTERVAL);
    }
  }

  /** The ack timer: send once nothing was taken for ACK_INTERVAL or ACK_MAX_DELAY
   *  passed since the first unacknowledged event, else wait for the earlier of the two. */
  private due(): void {
    const at = Math.min(this.lastTaken + ACK_INTERVAL, this.firstUnacked + ACK_MAX_DELAY);
    // Capped: Date.now() may jump back with the wall clock.
    const wait = Math.min(at - Date.now(), ACK_MAX_DELAY);
    if (wait > 0) this.timer = setTimeout(() => this.due(), wait);
    else this.flush();
  }

  /** Send what is unacknowledged now (kept for later when no connection is open). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.size === 0) return;
    const body = Object.fromEntries(this.pending) as Record<string, Position>;
    if (this.sendAck(body)) {
      this.pending.clear();
      this.unacked = 0;
    } else {
      this.timer = setTimeout(() => this.flush(), ACK_INTERVAL);
    }
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  snapshot(): DurableSession {
    return {
      id: this.id,
      resumed: this.resumed,
      expiresIn: this.expiresIn,
      taken: Object.fromEntries(this.taken) as DurableSession['taken'],
    };
  }

  private save(): void {
    if (!this.storage) return;
    try {
      this.storage.setItem(this.key, JSON.stringify({ id: this.id, taken: Object.fromEntries(this.taken) }));
    } catch {
      // storage full or unavailable: the session still works for this page's life
    }
  }
}

/** Filters compared the way the server renders them (no empty fields, sorted keys). */
export function filterKey(subscriptionType: string | null | undefined, filters: object | null | undefined): string {
  const clean: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(filters ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
    if (v !== undefined && v !== null) clean[k] = v;
  }
  return JSON.stringify([subscriptionType ?? null, clean]);
}
