/**
 * Durable sessions in the TypeScript client, against the real server in Node: a "page
 * reload" (a new service over the same storage) resumes the session, adopts the restored
 * subscription, and delivers what was published meanwhile exactly once.
 */
import WS from 'ws';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { WebSocketService } from '../../src/index.js';
import type { SessionStorageLike } from '../../src/index.js';
import type { RecoveryFailed } from '../../src/index.js';
import { broadcast, freePort, RealServer, TIMEOUT } from '../support/realServer.js';

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

/** A WebSocket that records what the client sends; `drop` swallows some messages. */
function recording(drop: (msg: Record<string, any>) => boolean = () => false) { // eslint-disable-line @typescript-eslint/no-explicit-any
  const sent: Record<string, any>[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  const sockets: WS[] = [];
  class Recording extends WS {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
    override send(data: unknown, ...rest: unknown[]): void {
      const msg = JSON.parse(String(data));
      sent.push(msg);
      if (drop(msg)) return;
      (WS.prototype.send as (...a: unknown[]) => void).call(this, data, ...rest);
    }
  }
  return { sent, sockets, WebSocket: Recording };
}

const services: WebSocketService[] = [];
const servers: RealServer[] = [];
afterEach(async () => {
  for (const s of services.splice(0)) s.disconnect();
  for (const s of servers.splice(0)) await s.stop('SIGKILL');
});

function page(
  storage: SessionStorageLike,
  url = wsUrl,
  drop?: (msg: Record<string, any>) => boolean, // eslint-disable-line @typescript-eslint/no-explicit-any
) {
  const rec = recording(drop);
  const svc = new WebSocketService({
    url,
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

const kickOff = (match_id: number) => ({
  event_type: 'match_started',
  data: { match_id, home_team: '曼联', away_team: '切尔西', league: '英超' },
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

  it('a session the server no longer holds falls back to the stored positions (since)', async () => {
    const m = nextMatch++;
    const storage = new MemoryStorage();
    const first = page(storage);
    const sub1 = first.svc.subscribe('matches', { match_ids: [m] });
    const seen1: number[] = [];
    sub1.on('event', (e) => seen1.push(e.data.home_score as number));
    await sub1.ready;
    for (const n of [1, 2, 3]) await broadcast(httpUrl, goal(m, n));
    await until(() => expect(seen1).toEqual([1, 2, 3]));
    const taken = first.svc.session?.taken.matches;
    first.svc.disconnect();
    for (const n of [4, 5]) await broadcast(httpUrl, goal(m, n)); // during the reload
    // The service forgot the session (expired): a stored id it does not know.
    for (const [key, value] of storage.items) {
      storage.setItem(key, JSON.stringify({ ...JSON.parse(value), id: 'x'.repeat(32) }));
    }

    const second = page(storage);
    const seen2: number[] = [];
    const failures: RecoveryFailed[] = [];
    second.svc.on('recovery_failed', (f) => failures.push(f));
    const sub2 = second.svc.subscribe('matches', { match_ids: [m] });
    sub2.on('event', (e) => seen2.push(e.data.home_score as number));
    const result = await sub2.ready;
    expect(second.svc.session).toMatchObject({ id: 'x'.repeat(32), resumed: false });
    const subscribes = second.rec.sent.filter((x) => x.type === 'subscribe');
    expect(subscribes.map((x) => x.data.since)).toEqual([{ matches: taken }]);
    expect(result.recovered).toBe(true);
    await broadcast(httpUrl, goal(m, 6));
    await until(() => expect(seen2).toEqual([4, 5, 6]));
    expect(failures).toEqual([]);
  });

  it('critical events beyond the history come again on resume; what the page took is dropped', async () => {
    // Its own server with a history of 3 events per stream (goals kept for the session).
    const server = await new RealServer(await freePort(), { REALTIME_HISTORY_SIZE: '3' }).start();
    servers.push(server);
    const m = nextMatch++;
    const storage = new MemoryStorage();
    // The first page's acks after offset 1 never reach the server.
    const first = page(storage, server.wsUrl, (x) => x.type === 'ack' && x.data.positions.matches?.offset > 1);
    const seen1: string[] = [];
    const sub1 = first.svc.subscribe('matches', { match_ids: [m] });
    sub1.on('event', (e) => seen1.push(`${e.event_type}:${e.offset}`));
    await sub1.ready;
    await server.broadcast(goal(m, 1)); // 1: acknowledged
    await until(() => expect(first.rec.sent.some((x) => x.type === 'ack')).toBe(true));
    await server.broadcast(kickOff(m)); // 2
    await server.broadcast(goal(m, 2)); // 3: taken by the page, its ack lost
    await until(() => expect(seen1).toEqual(['match_score_changed:1', 'match_started:2', 'match_score_changed:3']));
    await until(() => expect(first.svc.session?.taken.matches?.offset).toBe(3));
    first.svc.disconnect();
    await server.broadcast(goal(m + 1, 1)); // 4: another match's goal
    for (let i = 0; i < 3; i++) await server.broadcast(kickOff(m)); // 5, 6, 7: the history

    const second = page(storage, server.wsUrl);
    const seen2: string[] = [];
    const failures: RecoveryFailed[] = [];
    second.svc.on('recovery_failed', (f) => failures.push(f));
    const sub2 = second.svc.subscribe('matches', { match_ids: [m] });
    sub2.on('event', (e) => seen2.push(`${e.event_type}:${e.offset}`));
    const result = await sub2.ready;
    expect(second.svc.session?.resumed).toBe(true);
    expect(result.recovered).toBe(false);
    expect(result.reason).toMatch(/history no longer reaches back to offset 2; its critical events \(match_score_changed, match_status_changed, match_ended\) after offset 1 were replayed, then every event from offset 5/);
    expect(result.streams.matches).toMatchObject({ replay_after: 1, history_from: 5 });
    await server.broadcast(goal(m, 3)); // 8: live
    await until(() => expect(seen2).toEqual(['match_started:5', 'match_started:6', 'match_started:7', 'match_score_changed:8']));
    expect(second.svc.duplicatesDropped).toBe(1); // the goal at 3, sent again, taken before
    expect(failures.map((f) => f.streams)).toEqual([['matches']]);
  });
});
