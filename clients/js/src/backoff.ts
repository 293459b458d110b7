/**
 * Full-jitter exponential backoff (as centrifuge-js): a random delay in
 * [min, min(max, min * 2^attempt)], never above `max`. `attempt` counts from 0.
 */
export function backoffDelay(
  attempt: number,
  min: number,
  max: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 31));
  return Math.min(max, min + Math.floor(random() * Math.max(0, ceiling - min + 1)));
}
