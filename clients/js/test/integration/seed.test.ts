// @vitest-environment jsdom
/**
 * The seed's basic TypeScript example (section 客户端集成 / 基础连接), as written, with
 * only the URL pointed at the test server. jsdom supplies WebSocket as a browser does.
 */
import { afterEach, expect, inject, it, vi } from 'vitest';
import { WebSocketService } from '../../src/index.js';
import { broadcast, TIMEOUT } from '../support/realServer.js';

const httpUrl = inject('realtimeHttpUrl');
const wsUrl = inject('realtimeWsUrl');
const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));

it('runs the seed example as written', async () => {
  const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  cleanups.push(() => log.mockRestore());

  // --- seed code (url changed) ---
  const wsService = new WebSocketService({
    url: wsUrl,
    userId: 'user123',
    autoReconnect: true,
    heartbeatInterval: 30000,
  });

  // 连接事件监听
  wsService.on('connection_status', (status) => {
    console.log('连接状态:', status);
  });

  // 订阅预测事件
  wsService.subscribe(['prediction_created'], {
    match_ids: [1, 2, 3],
    min_confidence: 0.7,
  });

  // 监听预测事件
  wsService.on('prediction_created', (event) => {
    console.log('新预测:', event.data);
  });

  // 启用消息确认 (seed: 故障排除)
  wsService.on('message_ack', (ack) => {
    console.log('消息确认:', ack);
  });
  // --- end of seed code ---
  cleanups.push(() => wsService.disconnect());

  const logged = (label: string) => log.mock.calls.filter((c) => c[0] === label).map((c) => c[1]);
  await vi.waitFor(() => expect(logged('消息确认:')).toHaveLength(1), { timeout: TIMEOUT });
  expect(logged('连接状态:').map((s) => s.data.status)).toEqual(['connecting', 'open', 'connected']);
  expect(logged('消息确认:')[0].data).toMatchObject({ type: 'subscribe', result: { filters: { match_ids: [1, 2, 3] } } });

  const data = {
    prediction_id: 123,
    match_id: 2,
    home_team: '曼联',
    away_team: '切尔西',
    prediction: 'home_win',
    confidence: 0.75,
    home_win_prob: 0.65,
    draw_prob: 0.25,
    away_win_prob: 0.1,
    expected_value: 0.12,
    strategy: 'ml_ensemble',
  };
  await broadcast(httpUrl, { event_type: 'prediction_created', data: { ...data, confidence: 0.6 } });
  await broadcast(httpUrl, { event_type: 'prediction_created', data });
  await vi.waitFor(() => expect(logged('新预测:')).toEqual([data]), { timeout: TIMEOUT });
});
