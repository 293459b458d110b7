import type { StreamPosition, SubscriptionType } from './generated/protocol.js';

/** Runs an event's handlers; `snapshotFor` names the subscription a snapshot event is for. */
export type Deliver = (snapshotFor?: number) => void;

interface Held {
  offset: number;
  deliver: Deliver;
  /** The snapshot window open when it arrived. */
  window: Window | undefined;
}

interface Window {
  upTo: number;
  key: number;
}

/** Offsets remembered per stream to drop duplicates that arrive out of order. */
const SEEN_LIMIT = 4096;

interface StreamState {
  /** Unknown until a subscribe ack names it; `since` needs it. */
  epoch: string | undefined;
  /** Highest offset delivered: the position sent as `since`. */
  offset: number;
  /** Offsets at or below this were delivered (or are not ours to receive). */
  floor: number;
  /** Offsets above `floor` already delivered (replays of two subscriptions interleave). */
  seen: Set<number>;
}

/**
 * Per-stream positions for recovery and duplicate suppression.
 *
 * Recovery works per stream: after a reconnect each subscription is sent again with
 * `since: {stream: {epoch, offset}}`, and the server replays what was missed. An event
 * is a duplicate when its offset is at or below the position the connection started
 * from, or was already delivered since. Events of a stream whose subscribe ack is still
 * outstanding are held back until the ack says which epoch they belong to.
 */
export class StreamTracker {
  private readonly states = new Map<SubscriptionType, StreamState>();
  private readonly pending = new Map<SubscriptionType, number>();
  private readonly held = new Map<SubscriptionType, Held[]>();
  /** After a snapshot ack: events up to the ack's offset are the snapshot, for one subscription. */
  private readonly windows = new Map<SubscriptionType, Window>();
  duplicates = 0;

  /** Where to resume `stream`, if its epoch is known. */
  since(stream: SubscriptionType): StreamPosition | undefined {
    const st = this.states.get(stream);
    return st?.epoch !== undefined ? { epoch: st.epoch, offset: st.offset } : undefined;
  }

  position(stream: SubscriptionType): { epoch: string | undefined; offset: number } | undefined {
    const st = this.states.get(stream);
    return st && { epoch: st.epoch, offset: st.offset };
  }

  /** Start `stream` from a position the application took before (a durable session's
   *  storage): nothing at or below it is delivered again. */
  restore(stream: SubscriptionType, epoch: string, offset: number): void {
    this.states.set(stream, { epoch, offset, floor: offset, seen: new Set() });
  }

  /** A new connection: forget held events and in-flight subscribes; keep positions. */
  reset(): void {
    this.pending.clear();
    this.held.clear();
    this.windows.clear();
    for (const st of this.states.values()) {
      st.floor = st.offset;
      st.seen.clear();
    }
  }

  /** A subscribe covering `streams` was sent; hold their events until it is answered. */
  begin(streams: readonly SubscriptionType[]): void {
    for (const s of streams) this.pending.set(s, (this.pending.get(s) ?? 0) + 1);
  }

  /**
   * The subscribe was answered. `positions` are the ack's `result.streams` (empty on an
   * error reply). `recovering` names the streams sent with `since` that the server
   * recovered (their replay follows); `lost` those it could not, which restart from the
   * ack's position (or from its `replay_after` when a partial replay follows). Held
   * events are then released in arrival order. With `snapshotFor`, events up to the
   * ack's position that follow are that subscription's snapshot.
   */
  settle(
    streams: readonly SubscriptionType[],
    positions: Partial<Record<SubscriptionType, StreamPosition>>,
    opts: { lost?: ReadonlySet<SubscriptionType>; recovering?: ReadonlySet<SubscriptionType>; snapshotFor?: number } = {},
  ): void {
    for (const [stream, pos] of Object.entries(positions) as [SubscriptionType, StreamPosition][]) {
      const st = this.states.get(stream);
      if (!st || opts.lost?.has(stream) || st.epoch !== pos.epoch) {
        // Fresh stream, lost history, or a new epoch: offsets restart from the ack. Events
        // held meanwhile were sent after the server subscribed us, so they all count even
        // when the ack's position (read a moment later) already includes them.
        // A replay that follows the ack (`replay_after`, e.g. a new epoch replayed from
        // its start) starts after that offset.
        const after = (pos as { replay_after?: unknown }).replay_after;
        let floor = typeof after === 'number' && after >= 0 ? Math.min(pos.offset, after) : pos.offset;
        for (const h of this.held.get(stream) ?? []) floor = Math.min(floor, h.offset - 1);
        // Same epoch (a resumed session replaying its critical events beyond the history,
        // from its acknowledged offset): what was delivered here stays delivered.
        const known = st && st.epoch === pos.epoch ? st.offset : undefined;
        if (known !== undefined) floor = Math.max(floor, known);
        this.states.set(stream, { epoch: pos.epoch, offset: Math.max(pos.offset, known ?? 0), floor, seen: new Set() });
      } else if (!opts.recovering?.has(stream) && pos.offset > st.offset) {
        // A new subscription starts now: what came before it is not ours to recover.
        st.offset = pos.offset;
      }
    }
    for (const s of streams) {
      const n = (this.pending.get(s) ?? 1) - 1;
      if (n > 0) {
        this.pending.set(s, n);
        continue;
      }
      this.pending.delete(s);
      const held = this.held.get(s);
      this.held.delete(s);
      for (const h of held ?? []) this.route(s, h.offset, h.deliver, h.window);
    }
    if (opts.snapshotFor !== undefined) {
      for (const [stream, pos] of Object.entries(positions) as [SubscriptionType, StreamPosition][]) {
        this.windows.set(stream, { upTo: pos.offset, key: opts.snapshotFor });
      }
    }
  }

  /**
   * An event of `stream` at `offset` arrived: `deliver` runs now, later (held), or never
   * (duplicate). A snapshot event runs it with the key of the subscription that asked.
   */
  receive(stream: SubscriptionType, offset: number, deliver: Deliver): void {
    if (this.pending.has(stream)) {
      let list = this.held.get(stream);
      if (!list) this.held.set(stream, (list = []));
      list.push({ offset, deliver, window: this.windows.get(stream) });
      return;
    }
    this.route(stream, offset, deliver, this.windows.get(stream));
  }

  private route(stream: SubscriptionType, offset: number, deliver: Deliver, w: Window | undefined): void {
    if (w) {
      if (offset <= w.upTo) {
        deliver(w.key);
        return;
      }
      // Live events follow the snapshot.
      if (this.windows.get(stream) === w) this.windows.delete(stream);
    }
    if (this.accept(stream, offset)) deliver();
  }

  private accept(stream: SubscriptionType, offset: number): boolean {
    let st = this.states.get(stream);
    if (!st) {
      st = { epoch: undefined, offset: 0, floor: 0, seen: new Set() };
      this.states.set(stream, st);
    }
    if (offset <= st.floor || st.seen.has(offset)) {
      this.duplicates += 1;
      return false;
    }
    st.seen.add(offset);
    if (offset > st.offset) st.offset = offset;
    if (st.seen.size > SEEN_LIMIT) {
      const sorted = [...st.seen].sort((a, b) => a - b);
      const drop = sorted.slice(0, sorted.length - SEEN_LIMIT / 2);
      st.floor = drop[drop.length - 1] ?? st.floor;
      for (const o of drop) st.seen.delete(o);
    }
    return true;
  }
}
