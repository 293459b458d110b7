import type { StreamPosition, SubscriptionType } from './generated/protocol.js';

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
  private readonly held = new Map<SubscriptionType, { offset: number; deliver: () => void }[]>();
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

  /** A new connection: forget held events and in-flight subscribes; keep positions. */
  reset(): void {
    this.pending.clear();
    this.held.clear();
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
   * error reply); `lost` names the streams whose history could not be recovered, which
   * restart from the ack's position. Held events are then released in arrival order.
   */
  settle(
    streams: readonly SubscriptionType[],
    positions: Partial<Record<SubscriptionType, StreamPosition>>,
    lost: ReadonlySet<SubscriptionType>,
  ): void {
    for (const [stream, pos] of Object.entries(positions) as [SubscriptionType, StreamPosition][]) {
      const st = this.states.get(stream);
      if (!st || lost.has(stream) || st.epoch !== pos.epoch) {
        // Fresh stream, lost history, or a new epoch: offsets restart from the ack. Events
        // held meanwhile were sent after the server subscribed us, so they all count even
        // when the ack's position (read a moment later) already includes them.
        let floor = pos.offset;
        for (const h of this.held.get(stream) ?? []) floor = Math.min(floor, h.offset - 1);
        this.states.set(stream, { epoch: pos.epoch, offset: pos.offset, floor, seen: new Set() });
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
      for (const h of held ?? []) {
        if (this.accept(s, h.offset)) h.deliver();
      }
    }
  }

  /**
   * An event of `stream` at `offset` arrived: `deliver` runs now, later (held), or never
   * (duplicate).
   */
  receive(stream: SubscriptionType, offset: number, deliver: () => void): void {
    if (this.pending.has(stream)) {
      let list = this.held.get(stream);
      if (!list) this.held.set(stream, (list = []));
      list.push({ offset, deliver });
      return;
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
