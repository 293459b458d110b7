/**
 * Durable sessions in the TypeScript client, against the real server in Node: a "page
 * reload" (a new service over the same storage) resumes the session, adopts the restored
 * subscription, and delivers what was published meanwhile exactly once.
 */
import WS from 'ws';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { WebSocketService } from '../../src/index.js';
import type { SessionStorageLike } from '../../src/index.js';
import { broadcast, TIMEOUT } from '../support/realServer.js';

const httpUrl = inject('realtimeHttpUrl');
const wsUrl = inject('realtimeWsUrl');

class MemoryStorage implements SessionStorageLike {
  readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
}

function recording() {
  const sent: Record<string, any>[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  const sockets: WS[] = [];
  class Recording extends WS {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
    override send(data: unknown, ...rest: unknown[]): void {
      sent.push(JSON.parse(String(data)));
      (WS.prototype.send as (...a: unknown[]) => void).call(this, data, ...rest);
    }
  }
  return { sent, sockets, WebSocket: Recording };
}

const services: WebSocketService[] = [];
afterEach(() => {
  for (const s of services.splice(0)) s.disconnect();
});

function page(storage: SessionStorageLike) {
  const rec = recording();
  const svc = new WebSocketService({
    url: wsUrl,
    WebSocket: rec.WebSocket,
    heartbeatInterval: 0,
    minReconnectDelay: 50,
    maxReconnectDelay: 300,
    session: 'auto',
    sessionStorage: storage,
  });
  services.push(svc);
  return { svc, rec };
}

async function until(check: () => void | Promise<void>, timeout = TIMEOUT): Promise<void> {
  await vi.waitFor(check, { timeout, interval: 10 });
}

const goal = (match_id: number, home: number) => ({
  event_type: 'match_score_changed',
  data: { match_id, home_score: home, away_score: 0, league: '英超' },
});

let nextMatch = 50_000 + Math.floor(Math.random() * 1000) * 10;

describe('durable sessions', () => {
  for (const how of ['closed cleanly', 'dropped without a close']) {
    it(`a reload resumes and shows what happened meanwhile, once (${how})`, async () => {
      const m = nextMatch++;
      const storage = new MemoryStorage();
      const first = page(storage);
      const seen1: number[] = [];
      const sub1 = first.svc.subscribe('matches', { match_ids: [m] });
      sub1.on('event', (e) => seen1.push(e.data.home_score as number));
      await sub1.ready;
      expect(first.svc.session).toMatchObject({ resumed: false, id: expect.stringMatching(/^[\w-]{32}$/) });
      for (const n of [1, 2, 3]) await broadcast(httpUrl, goal(m, n));
      await until(() => expect(seen1).toEqual([1, 2, 3]));
      await until(() => expect(first.rec.sent.some((x) => x.type === 'ack')).toBe(true));
      const id = first.svc.session?.id;
      if (how === 'closed cleanly') first.svc.disconnect();
      else first.rec.sockets[0]?.terminate();
      for (const n of [4, 5]) await broadcast(httpUrl, goal(m, n)); // during the reload
      if (how !== 'closed cleanly') first.svc.disconnect();

      const second = page(storage);
      const seen2: number[] = [];
      const sub2 = second.svc.subscribe('matches', { match_ids: [m] }); // as on the first load
      sub2.on('event', (e) => seen2.push(e.data.home_score as number));
      const result = await sub2.ready;
      expect(second.svc.session).toMatchObject({ id, resumed: true });
      expect(result.recovered).toBe(true);
      await broadcast(httpUrl, goal(m, 6));
      await until(() => expect(seen2).toEqual([4, 5, 6]));
      // Adopted, not subscribed again: one subscription on the server.
      expect(second.rec.sent.filter((x) => x.type === 'subscribe')).toEqual([]);
      const stats = await second.svc.getStats();
      expect(stats.connection).toMatchObject({ subscriptions: [expect.objectContaining({ subscription_id: sub2.id })] });
    });
  }

  it('a restored subscription the reloaded page does not ask for again is removed', async () => {
    const m = nextMatch++;
    const storage = new MemoryStorage();
    const first = page(storage);
    await first.svc.subscribe('matches', { match_ids: [m] }).ready;
    first.svc.disconnect();
    const second = page(storage);
    const sub = second.svc.subscribe('matches', { match_ids: [m + 1] }); // another filter now
    await sub.ready;
    expect(second.svc.session?.resumed).toBe(true);
    await until(async () =>
      expect((await second.svc.getStats()).connection).toMatchObject({
        subscriptions: [expect.objectContaining({ subscription_id: sub.id, filters: { match_ids: [m + 1] } })],
      }),
    );
  });

  it('acks are coalesced and carry the stream positions the application took', async () => {
    const m = nextMatch++;
    const { svc, rec } = page(new MemoryStorage());
    const sub = svc.subscribe('matches', { match_ids: [m] });
    await sub.ready;
    for (let n = 1; n <= 5; n++) await broadcast(httpUrl, goal(m, n));
    await until(() => expect(svc.session?.taken.matches?.offset).toBeGreaterThan(0));
    await until(() => expect(rec.sent.filter((x) => x.type === 'ack').length).toBeGreaterThan(0));
    const acks = rec.sent.filter((x) => x.type === 'ack');
    expect(acks.length).toBeLessThan(5);
    const last = acks[acks.length - 1]?.data.positions.matches;
    expect(last).toEqual(svc.session?.taken.matches);
    expect(last.epoch).toBe(sub.result?.streams.matches?.epoch);
  });
});
