// @vitest-environment jsdom
/**
 * The seed's React component against the real server, in jsdom, using the
 * environment's own WebSocket (no injection) as a browser would.
 */
import { act, cleanup, render, screen, waitFor } from '@testing-library/react';
import { StrictMode } from 'react';
import { afterEach, expect, inject, it } from 'vitest';
import { RealtimeProvider, usePredictionsWebSocket, useWebSocket, type PredictionItem } from '../../src/react/index.js';
import { broadcast, TIMEOUT } from '../support/realServer.js';

const httpUrl = inject('realtimeHttpUrl');
const wsUrl = inject('realtimeWsUrl');

afterEach(() => cleanup());

function PredictionCard({ prediction }: { prediction: PredictionItem }) {
  return <div data-testid="card">{`${prediction.home_team} ${prediction.confidence}`}</div>;
}

function PredictionComponent({ matchIds }: { matchIds: number[] }) {
  const { isConnected, error } = useWebSocket({
    userId: 'user123',
    autoConnect: true,
  });

  const { predictions, loading } = usePredictionsWebSocket(
    matchIds, // match_ids
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
      {loading ? <span>loading</span> : <span>ready</span>}
      {error ? error.message : null}
    </div>
  );
}

it('renders live predictions from the real server, updates replacing entries', async () => {
  expect(typeof globalThis.WebSocket).toBe('function'); // jsdom's, as in a browser
  const base = 50_000 + Math.floor(Math.random() * 10_000) * 10;
  const ids = [base, base + 1, base + 2];
  const event = (match_id: number, confidence: number, prediction_id: string, type = 'prediction_created') => ({
    event_type: type,
    data: {
      prediction_id,
      match_id,
      home_team: '曼联',
      away_team: '切尔西',
      prediction: 'home_win',
      confidence,
      home_win_prob: 0.65,
      draw_prob: 0.25,
      away_win_prob: 0.1,
    },
  });
  // Published before the component mounts: arrives through the snapshot.
  await broadcast(httpUrl, event(base, 0.8, `${base}-a`));

  render(
    <StrictMode>
      <RealtimeProvider url={wsUrl}>
        <PredictionComponent matchIds={ids} />
      </RealtimeProvider>
    </StrictMode>,
  );
  expect(screen.getByText('连接中...')).toBeTruthy();
  await waitFor(() => expect(screen.getByText('ready')).toBeTruthy(), { timeout: TIMEOUT });
  await waitFor(() => expect(screen.getAllByTestId('card').map((c) => c.textContent)).toEqual(['曼联 0.8']), {
    timeout: TIMEOUT,
  });

  await act(async () => {
    await broadcast(httpUrl, event(base + 1, 0.9, `${base}-b`));
    await broadcast(httpUrl, event(base + 2, 0.5, `${base}-c`)); // below 0.7
    await broadcast(httpUrl, event(base, 0.95, `${base}-a`, 'prediction_updated'));
  });
  await waitFor(
    () => expect(screen.getAllByTestId('card').map((c) => c.textContent)).toEqual(['曼联 0.95', '曼联 0.9']),
    { timeout: TIMEOUT },
  );
});
