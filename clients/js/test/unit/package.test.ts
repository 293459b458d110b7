import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

it('the built package resolves by name, with the react subpath, in plain Node', () => {
  expect(existsSync(resolve(root, 'dist/index.js')), 'dist/ missing: run npm run build (npm test does)').toBe(true);
  expect(existsSync(resolve(root, 'dist/index.d.ts'))).toBe(true);
  expect(existsSync(resolve(root, 'dist/react/index.d.ts'))).toBe(true);
  const script = `
    const core = await import('@football-realtime/client');
    const react = await import('@football-realtime/client/react');
    const { default: WebSocket } = await import('ws');
    const svc = new core.WebSocketService({ url: 'ws://127.0.0.1:9/realtime/ws', WebSocket });
    console.log(JSON.stringify({
      core: Object.keys(core).sort(),
      react: Object.keys(react).sort(),
      state: svc.state,
      reconnect4001: core.shouldReconnect(4001),
    }));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
  const got = JSON.parse(out);
  expect(got.core).toEqual(expect.arrayContaining(['WebSocketService', 'RealtimeError', 'shouldReconnect', 'CLOSE_CODES']));
  expect(got.react).toEqual(
    expect.arrayContaining([
      'RealtimeProvider',
      'useWebSocket',
      'usePredictionsWebSocket',
      'useMatchesWebSocket',
      'useOddsWebSocket',
    ]),
  );
  expect(got).toMatchObject({ state: 'idle', reconnect4001: true });
});
