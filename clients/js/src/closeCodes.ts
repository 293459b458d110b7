import { CLOSE_CODES, RECONNECT_RANGES, TERMINAL_RANGES, type CloseCodeInfo } from './generated/tables.js';

function inRanges(code: number, ranges: readonly (readonly [number, number])[]): boolean {
  return ranges.some(([lo, hi]) => lo <= code && code <= hi);
}

/** Whether a client that saw close `code` reconnects (with backoff): the server's table. */
export function shouldReconnect(code: number): boolean {
  return inRanges(code, RECONNECT_RANGES);
}

/** 4500-4999: the user or application must change something before retrying. */
export function isTerminal(code: number): boolean {
  return inRanges(code, TERMINAL_RANGES);
}

/** The table row for `code`, if the server defines it. */
export function closeCodeInfo(code: number): CloseCodeInfo | undefined {
  return CLOSE_CODES.find((c) => c.code === code);
}
