import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ACK_BATCH, ACK_INTERVAL, ACK_MAX_DELAY, SessionState } from '../../src/session.js';

type Sent = { at: number; offset: number };

function session(): { state: SessionState; sent: Sent[] } {
  const sent: Sent[] = [];
  const state = new SessionState('new', null, 'k', (positions) => {
    sent.push({ at: Date.now(), offset: positions.matches!.offset });
    return true;
  });
  return { state, sent };
}

describe('ack coalescing (SessionState)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(0);
  });
  afterEach(() => vi.useRealTimers());

  it('acks a quiet stream ACK_INTERVAL after its last event', () => {
    const { state, sent } = session();
    state.took('matches', 'e', 1);
    vi.advanceTimersByTime(ACK_INTERVAL - 1);
    expect(sent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([{ at: ACK_INTERVAL, offset: 1 }]);
  });

  it('acks a busy stream at most every ACK_MAX_DELAY, then once it pauses', () => {
    const { state, sent } = session();
    // An event every 40 ms for 1.6 s: never a pause of ACK_INTERVAL.
    for (let i = 1; i <= 40; i++) {
      state.took('matches', 'e', i);
      vi.advanceTimersByTime(40);
    }
    vi.advanceTimersByTime(ACK_INTERVAL);
    expect(sent.map((s) => s.at)).toEqual([ACK_MAX_DELAY, 1600 + ACK_INTERVAL - 40]);
    expect(sent[sent.length - 1]!.offset).toBe(40);
  });

  it('acks at once when ACK_BATCH events are unacknowledged', () => {
    const { state, sent } = session();
    for (let i = 1; i <= ACK_BATCH; i++) state.took('matches', 'e', i);
    expect(sent).toEqual([{ at: 0, offset: ACK_BATCH }]);
  });
});
