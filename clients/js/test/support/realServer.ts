/**
 * The real Python service as a subprocess: `<python> -m football_realtime serve` on
 * 127.0.0.1 and a free port. Python comes from REALTIME_PYTHON, else the repository's
 * .venv (../../.venv/bin/python relative to clients/js).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const UNIT = Number(process.env.REALTIME_TEST_UNIT ?? '1');
export const TIMEOUT = 5000 * UNIT;
export const ADMIN_TOKEN = 'js-test-admin-token';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export function pythonPath(): string {
  const python = process.env.REALTIME_PYTHON || resolve(root, '../../.venv/bin/python');
  if (!process.env.REALTIME_PYTHON && !existsSync(python)) {
    throw new Error(`no Python at ${python}: run scripts/setup.sh at the repository root, or set REALTIME_PYTHON`);
  }
  return python;
}

export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? ok(addr.port) : fail(new Error('no port'))));
    });
  });
}

export class RealServer {
  private proc: ChildProcess | null = null;
  output = '';

  constructor(
    readonly port: number,
    readonly env: Record<string, string> = {},
  ) {}

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/realtime/ws`;
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async start(): Promise<this> {
    const proc = spawn(
      pythonPath(),
      ['-m', 'football_realtime', 'serve', '--host', '127.0.0.1', '--port', String(this.port)],
      {
        env: {
          ...process.env,
          REALTIME_ADMIN_TOKEN: ADMIN_TOKEN,
          REALTIME_LOG_LEVEL: 'warning',
          REALTIME_ACCESS_LOG: 'false',
          // These tests exercise the client's mechanics with token-less connections (as the
          // seed's examples are written); tier policy is tested on the server side.
          REALTIME_DEFAULT_TIER: 'premium',
          ...this.env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    this.proc = proc;
    proc.stdout?.on('data', (b: Buffer) => (this.output += b.toString()));
    proc.stderr?.on('data', (b: Buffer) => (this.output += b.toString()));
    const deadline = Date.now() + 3 * TIMEOUT;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`serve exited early (${proc.exitCode ?? proc.signalCode}): ${this.output}`);
      try {
        const r = await fetch(`${this.httpUrl}/realtime/health`, { signal: AbortSignal.timeout(500) });
        if (r.status === 200) return this;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.stop();
    throw new Error(`serve did not become healthy on port ${this.port}: ${this.output}`);
  }

  /** SIGTERM (graceful: clients get 1012) or SIGKILL (clients see 1006); waits for the exit. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const proc = this.proc;
    if (!proc || !this.running) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 2 * TIMEOUT);
    await exited;
    clearTimeout(timer);
  }

  /** POST /realtime/broadcast; returns the JSON answer, throws on an HTTP error. */
  async broadcast(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    return broadcast(this.httpUrl, body);
  }
}

export async function broadcast(httpUrl: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const r = await fetch(`${httpUrl}/realtime/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`broadcast failed: HTTP ${r.status} ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}
