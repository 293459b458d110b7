import { defineConfig } from 'vitest/config';

// Every timeout derives from REALTIME_TEST_UNIT (like the Python suite): scale it on a slow machine.
const unit = Number(process.env.REALTIME_TEST_UNIT ?? '1');

export default defineConfig({
  test: {
    reporters: ['default', './test/support/summaryReporter.ts'],
    testTimeout: 20_000 * unit,
    hookTimeout: 30_000 * unit,
    projects: [
      {
        extends: true,
        test: { name: 'unit', environment: 'node', include: ['test/unit/**/*.test.ts'] },
      },
      {
        extends: true,
        test: {
          name: 'react',
          environment: 'jsdom',
          include: ['test/react/**/*.test.tsx'],
          setupFiles: ['test/support/setupDom.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          environment: 'node',
          include: ['test/integration/**/*.test.{ts,tsx}'],
          globalSetup: ['test/integration/globalSetup.ts'],
          setupFiles: ['test/support/setupDom.ts'],
          // The tests share one real server; run files one after another.
          fileParallelism: false,
        },
      },
    ],
  },
});
