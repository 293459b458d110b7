import type { EventType, SubscriptionFilter, SubscriptionType } from './generated/protocol.js';
import { STREAM_EVENT_TYPES } from './generated/tables.js';

/** The event types a subscription covers: its type's, narrowed by `filters.event_types`. */
export function coveredEventTypes(
  subscriptionType: SubscriptionType | undefined,
  filters: SubscriptionFilter,
): EventType[] {
  const base: readonly EventType[] | undefined = subscriptionType
    ? STREAM_EVENT_TYPES[subscriptionType]
    : undefined;
  const narrowed = filters.event_types ?? undefined;
  if (!base) return [...(narrowed ?? [])];
  return narrowed ? base.filter((t) => narrowed.includes(t)) : [...base];
}

const STREAM_OF = new Map<EventType, SubscriptionType>();
for (const [stream, types] of Object.entries(STREAM_EVENT_TYPES) as [SubscriptionType, readonly EventType[]][]) {
  for (const t of types) STREAM_OF.set(t, stream);
}

/** The stream an event type is published on (undefined for connection-level types). */
export function streamOf(eventType: EventType): SubscriptionType | undefined {
  return STREAM_OF.get(eventType);
}

/** The streams a set of event types spans, sorted. */
export function streamsOf(eventTypes: readonly EventType[]): SubscriptionType[] {
  const out = new Set<SubscriptionType>();
  for (const t of eventTypes) {
    const s = STREAM_OF.get(t);
    if (s) out.add(s);
  }
  return [...out].sort();
}

/**
 * Whether an event matches a subscription, with the server's semantics
 * (core/subscriptions.py): every set field must match; inside a list any value
 * matches; a set field constrains strictly (an event without `match_id` does not
 * match a filter that sets `match_ids`); `min_confidence` means `confidence >= min`.
 */
export function matchesFilter(
  eventTypes: readonly EventType[],
  filters: SubscriptionFilter,
  eventType: string,
  data: Record<string, unknown>,
): boolean {
  if (!eventTypes.includes(eventType as EventType)) return false;
  const { match_ids, leagues, min_confidence } = filters;
  if (match_ids != null) {
    const m = data['match_id'];
    if (typeof m !== 'number' || !Number.isInteger(m) || !match_ids.includes(m)) return false;
  }
  if (leagues != null) {
    const lg = data['league'];
    if (typeof lg !== 'string' || !leagues.includes(lg)) return false;
  }
  if (min_confidence != null) {
    const c = data['confidence'];
    if (typeof c !== 'number' || !Number.isFinite(c) || c < min_confidence) return false;
  }
  return true;
}
