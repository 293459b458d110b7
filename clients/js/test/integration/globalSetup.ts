import type { TestProject } from 'vitest/node';
import { freePort, RealServer } from '../support/realServer.js';

declare module 'vitest' {
  export interface ProvidedContext {
    realtimeHttpUrl: string;
    realtimeWsUrl: string;
  }
}

/** One real football-realtime process shared by the integration tests. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await new RealServer(await freePort()).start();
  project.provide('realtimeHttpUrl', server.httpUrl);
  project.provide('realtimeWsUrl', server.wsUrl);
  return async () => {
    await server.stop();
  };
}
