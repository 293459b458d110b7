import { configure } from '@testing-library/react';

// waitFor's default (1 s) is too tight on a loaded 2-core machine; scale like every other timeout.
configure({ asyncUtilTimeout: 5000 * Number(process.env.REALTIME_TEST_UNIT ?? '1') });
