import type { Reporter, TestModule } from 'vitest/node';

/** Ends the run with a plain `vitest: N passed, N failed, N skipped` line (read by CI). */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const n = { passed: 0, failed: 0, skipped: 0 };
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const state = t.result().state;
        if (state === 'passed') n.passed++;
        else if (state === 'failed') n.failed++;
        else n.skipped++;
      }
    }
    process.stdout.write(`vitest: ${n.passed} passed, ${n.failed} failed, ${n.skipped} skipped\n`);
  }
}
