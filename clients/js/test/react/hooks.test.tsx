import { act, cleanup, render, renderHook, screen, waitFor } from '@testing-library/react';
import { StrictMode, type ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  RealtimeProvider,
  useMatchesWebSocket,
  useOddsWebSocket,
  usePredictionsWebSocket,
  useRealtimeEvent,
  useWebSocket,
  type PredictionItem,
} from '../../src/react/index.js';
import { FakeServer } from '../support/fakeServer.js';

let server: FakeServer;
beforeEach(() => {
  server = new FakeServer();
});
afterEach(() => cleanup());

const URL = 'ws://fake.test/realtime/ws';

function Wrapper({ children, strict = true }: { children?: ReactNode; strict?: boolean }) {
  const tree = (
    <RealtimeProvider url={URL} WebSocket={server.WebSocket} heartbeatInterval={0}>
      {children}
    </RealtimeProvider>
  );
  return strict ? <StrictMode>{tree}</StrictMode> : tree;
}

const PRED = (match_id: number, confidence: number, prediction_id: number | string = match_id * 10) => ({
  prediction_id,
  match_id,
  home_team: '曼联',
  away_team: '切尔西',
  prediction: 'home_win',
  confidence,
  home_win_prob: 0.65,
  draw_prob: 0.25,
  away_win_prob: 0.1,
});

/** Subscriptions the server holds on its open sockets. */
function serverSubs() {
  return server.openSockets.flatMap((s) => [...s.subs.values()]);
}

// The seed's component (section 客户端集成), as written.
function PredictionCard({ prediction }: { prediction: PredictionItem }) {
  return (
    <div data-testid="card">
      {prediction.home_team} vs {prediction.away_team}: {prediction.prediction} {prediction.confidence}
    </div>
  );
}

function PredictionComponent() {
  const { isConnected, error } = useWebSocket({
    userId: 'user123',
    autoConnect: true,
  });

  const { predictions, loading } = usePredictionsWebSocket(
    [1, 2, 3], // match_ids
    0.7, // min_confidence
  );

  if (!isConnected) {
    return <div>连接中...</div>;
  }

  return (
    <div>
      {predictions.map((pred) => (
        <PredictionCard key={pred.id} prediction={pred} />
      ))}
      {loading ? 'loading' : ''}
      {error ? error.message : ''}
    </div>
  );
}

describe('the seed component', () => {
  it('connects once, shows predictions, and replaces a prediction on update (StrictMode)', async () => {
    render(
      <Wrapper>
        <PredictionComponent />
      </Wrapper>,
    );
    expect(screen.getByText('连接中...')).toBeTruthy();
    await waitFor(() => expect(screen.queryByText('连接中...')).toBeNull());
    await waitFor(() => expect(serverSubs()).toHaveLength(1));
    // StrictMode mounted, unmounted and mounted again: one socket left open, one subscription
    expect(server.openSockets).toHaveLength(1);
    expect(server.openSockets[0]!.query.get('user_id')).toBe('user123');
    expect(serverSubs()[0]!.filters).toEqual({ match_ids: [1, 2, 3], min_confidence: 0.7 });

    act(() => {
      server.publish('prediction_created', PRED(1, 0.8));
      server.publish('prediction_created', PRED(4, 0.9)); // not subscribed
      server.publish('prediction_created', PRED(2, 0.75));
    });
    await waitFor(() => expect(screen.getAllByTestId('card')).toHaveLength(2));
    act(() => {
      server.publish('prediction_updated', { ...PRED(1, 0.85), minute: 30 });
    });
    await waitFor(() => expect(screen.getAllByTestId('card')[0]!.textContent).toContain('0.85'));
    const cards = screen.getAllByTestId('card').map((c) => c.textContent);
    expect(cards).toEqual(['曼联 vs 切尔西: home_win 0.85', '曼联 vs 切尔西: home_win 0.75']);
  });

  it('unmounting the app closes the connection and leaves no subscription', async () => {
    const view = render(
      <Wrapper>
        <PredictionComponent />
      </Wrapper>,
    );
    await waitFor(() => expect(serverSubs()).toHaveLength(1));
    view.unmount();
    await waitFor(() => expect(server.openSockets).toHaveLength(0));
    expect(server.sockets.every((s) => s.readyState === 3)).toBe(true);
  });
});

describe('hooks', () => {
  it('useWebSocket needs a provider', () => {
    expect(() => renderHook(() => useWebSocket())).toThrow(/inside <RealtimeProvider/);
  });

  it('useWebSocket reports a terminal error and stays disconnected', async () => {
    server.refuseWith = 4501;
    const { result } = renderHook(() => useWebSocket({ userId: 'u' }), { wrapper: Wrapper });
    await waitFor(() => expect(result.current.error?.code).toBe('terminal_close'));
    expect(result.current.error?.close_code).toBe(4501);
    expect(result.current.isConnected).toBe(false);
    expect(result.current.state).toBe('closed');
  });

  it('loading until the ack; the snapshot shows what was published before mounting', async () => {
    // a first client publishes state before the hook mounts
    const first = renderHook(() => useWebSocket(), { wrapper: Wrapper });
    await waitFor(() => expect(first.result.current.isConnected).toBe(true));
    server.publish('prediction_created', PRED(1, 0.9));
    server.publish('prediction_updated', PRED(1, 0.95));
    server.publish('prediction_created', PRED(2, 0.9));
    first.unmount();

    const { result } = renderHook(() => usePredictionsWebSocket([1]), { wrapper: Wrapper });
    expect(result.current.loading).toBe(true);
    await waitFor(() => expect(result.current.loading).toBe(false));
    await waitFor(() => expect(result.current.predictions).toHaveLength(1));
    expect(result.current.predictions[0]).toMatchObject({ id: 10, match_id: 1, confidence: 0.95, status: 'updated' });
  });

  it('argument changes swap the subscription; equal arrays do not resubscribe', async () => {
    const { result, rerender } = renderHook(({ ids }: { ids: number[] }) => usePredictionsWebSocket(ids), {
      wrapper: Wrapper,
      initialProps: { ids: [1, 2] },
    });
    await waitFor(() => expect(serverSubs()).toHaveLength(1));
    act(() => {
      server.publish('prediction_created', PRED(1, 0.5));
      server.publish('prediction_created', PRED(2, 0.5));
    });
    await waitFor(() => expect(result.current.predictions).toHaveLength(2));
    const subscribes = () => server.openSockets[0]!.sent.filter((m) => m.type === 'subscribe').length;
    const before = subscribes();
    rerender({ ids: [1, 2] }); // a new array with the same values
    rerender({ ids: [1, 2] });
    expect(subscribes()).toBe(before);

    rerender({ ids: [2, 3] });
    await waitFor(() => expect(serverSubs().map((s) => s.filters.match_ids)).toEqual([[2, 3]]));
    // match 1 no longer belongs: dropped at once, match 2 kept
    expect(result.current.predictions.map((p) => p.match_id)).toEqual([2]);
    act(() => {
      server.publish('prediction_created', PRED(1, 0.6, 'late'));
      server.publish('prediction_created', PRED(3, 0.6));
    });
    await waitFor(() => expect(result.current.predictions.map((p) => p.match_id)).toEqual([2, 3]));

    rerender({ ids: [] }); // nothing
    await waitFor(() => expect(serverSubs()).toHaveLength(0));
    expect(result.current.predictions).toEqual([]);
    expect(result.current.loading).toBe(false);
  });

  it('unmounting a hook removes its subscription but keeps the shared connection', async () => {
    function Two({ showOdds }: { showOdds: boolean }) {
      usePredictionsWebSocket();
      return showOdds ? <Odds /> : null;
    }
    function Odds() {
      useOddsWebSocket([7]);
      return null;
    }
    const view = render(
      <Wrapper>
        <Two showOdds />
      </Wrapper>,
    );
    await waitFor(() => expect(serverSubs().map((s) => s.subscriptionType).sort()).toEqual(['odds', 'predictions']));
    view.rerender(
      <Wrapper>
        <Two showOdds={false} />
      </Wrapper>,
    );
    await waitFor(() => expect(serverSubs().map((s) => s.subscriptionType)).toEqual(['predictions']));
    expect(server.openSockets).toHaveLength(1);
  });

  it('useMatchesWebSocket merges a match’s events into one entry', async () => {
    const { result } = renderHook(() => useMatchesWebSocket([456], ['英超']), { wrapper: Wrapper });
    await waitFor(() => expect(result.current.loading).toBe(false));
    expect(serverSubs()[0]).toMatchObject({ subscriptionType: 'matches', filters: { match_ids: [456], leagues: ['英超'] } });
    act(() => {
      server.publish('match_started', { match_id: 456, home_team: '曼联', away_team: '切尔西', league: '英超' });
      server.publish('match_score_changed', { match_id: 456, league: '英超', home_score: 1, away_score: 0, minute: 25 });
      server.publish('match_score_changed', { match_id: 456, league: '英超', home_score: 2, away_score: 0, minute: 70 });
    });
    await waitFor(() => expect(result.current.matches[0]?.home_score).toBe(2));
    expect(result.current.matches).toHaveLength(1);
    expect(result.current.matches[0]).toMatchObject({ id: 456, home_team: '曼联', status: 'first_half', minute: 70 });
    act(() => {
      server.publish('match_ended', { match_id: 456, league: '英超', home_score: 2, away_score: 0 });
    });
    await waitFor(() => expect(result.current.matches[0]?.status).toBe('finished'));
  });

  it('useOddsWebSocket keeps one entry per match and bookmaker', async () => {
    const { result } = renderHook(() => useOddsWebSocket([9]), { wrapper: Wrapper });
    await waitFor(() => expect(result.current.loading).toBe(false));
    act(() => {
      server.publish('odds_updated', { match_id: 9, bookmaker: 'a', home_odds: 2, draw_odds: 3, away_odds: 4 });
      server.publish('odds_updated', { match_id: 9, bookmaker: 'b', home_odds: 2.1, draw_odds: 3, away_odds: 4 });
      server.publish('odds_significant_change', {
        match_id: 9,
        bookmaker: 'a',
        outcome: 'home',
        old_odds: 2,
        new_odds: 1.5,
        change_pct: -25,
      });
    });
    await waitFor(() => expect(result.current.odds.find((o) => o.id === '9:a')?.home_odds).toBe(1.5));
    expect(result.current.odds.map((o) => o.id)).toEqual(['9:a', '9:b']);
    expect(result.current.odds[0]).toMatchObject({ draw_odds: 3, last_significant_change: { change_pct: -25 } });
  });

  it('useRealtimeEvent calls the latest handler', async () => {
    const seen: string[] = [];
    const { rerender } = renderHook(
      ({ tag }: { tag: string }) => {
        useRealtimeEvent('system_alert', (e) => seen.push(`${tag}:${e.data.message}`));
        useRealtimeEvent('connection_status', () => undefined);
        return useWebSocket();
      },
      { wrapper: Wrapper, initialProps: { tag: 'a' } },
    );
    await waitFor(() => expect(server.openSockets).toHaveLength(1));
    rerender({ tag: 'b' });
    act(() => {
      server.openSockets[0]!.push({
        event_type: 'system_alert',
        data: { alert_type: 'info', message: 'hi', severity: 'low', component: 'x' },
        timestamp: new Date().toISOString(),
      });
    });
    await waitFor(() => expect(seen).toEqual(['b:hi']));
  });

  it('a reconnect resubscribes every hook and keeps their state', async () => {
    const { result } = renderHook(() => usePredictionsWebSocket([1]), { wrapper: Wrapper });
    await waitFor(() => expect(result.current.loading).toBe(false));
    act(() => {
      server.publish('prediction_created', PRED(1, 0.5));
    });
    await waitFor(() => expect(result.current.predictions).toHaveLength(1));
    act(() => server.openSockets[0]!.drop());
    await waitFor(() => expect(server.openSockets).toHaveLength(1));
    await waitFor(() => expect(serverSubs()).toHaveLength(1));
    act(() => {
      server.publish('prediction_updated', PRED(1, 0.6));
    });
    await waitFor(() => expect(result.current.predictions[0]?.confidence).toBe(0.6));
    expect(result.current.predictions).toHaveLength(1);
  });

  it('changing the provider’s userId reconnects as that user and resubscribes', async () => {
    function App({ userId }: { userId: string }) {
      return (
        <StrictMode>
          <RealtimeProvider url={URL} userId={userId} WebSocket={server.WebSocket} heartbeatInterval={0}>
            <Hook />
          </RealtimeProvider>
        </StrictMode>
      );
    }
    function Hook() {
      usePredictionsWebSocket([1]);
      return null;
    }
    const view = render(<App userId="alice" />);
    await waitFor(() => expect(serverSubs()).toHaveLength(1));
    expect(server.openSockets[0]!.query.get('user_id')).toBe('alice');
    view.rerender(<App userId="bob" />);
    await waitFor(() => expect(server.openSockets.map((s) => s.query.get('user_id'))).toEqual(['bob']));
    await waitFor(() => expect(serverSubs()).toHaveLength(1));
  });

  it('a token function is asked again at each connect, without forcing a reconnect', async () => {
    let n = 0;
    const token = () => `t${++n}`;
    const { result } = renderHook(() => useWebSocket(), {
      wrapper: ({ children }) => (
        <RealtimeProvider url={URL} token={token} WebSocket={server.WebSocket} heartbeatInterval={0}>
          {children}
        </RealtimeProvider>
      ),
    });
    await waitFor(() => expect(result.current.isConnected).toBe(true));
    expect(server.sockets.map((s) => s.query.get('token'))).toEqual(['t1']);
    act(() => server.openSockets[0]!.drop());
    await waitFor(() => expect(server.openSockets).toHaveLength(1));
    expect(server.sockets.map((s) => s.query.get('token'))).toEqual(['t1', 't2']);
  });
});
