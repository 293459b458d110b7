/**
 * Dashboard state: a snapshot from GET /demo/state, then live events applied in order.
 * Pure functions (no DOM, no sockets) so they are unit-tested in Node.
 */

import type { Outcome, RealtimeEvent, Snapshot, SnapshotMatch } from "./types";

export interface Point {
  t: number;
  home: number;
  draw: number;
  away: number;
}

export interface Goal {
  side: "home" | "away";
  minute: number;
  added: number;
  player: string;
  playerEn?: string;
}

export interface MatchView {
  id: number;
  league: string;
  homeTeam: string;
  awayTeam: string;
  homeTeamEn?: string;
  awayTeamEn?: string;
  venue?: string;
  venueEn?: string;
  status: string;
  minute: number;
  added: number;
  /** when ``minute`` was observed (ms), to run the clock between events */
  clockAt: number;
  homeScore: number;
  awayScore: number;
  kickoffAt?: number;
  goals: Goal[];
  prediction?: {
    pick: Outcome;
    confidence: number;
    home: number;
    draw: number;
    away: number;
    ev?: number;
    strategy?: string;
  };
  probs: Point[];
  odds?: { home: number; draw: number; away: number };
  oddsChange?: { home: number; draw: number; away: number };
  oddsHist: Point[];
  lastGoalAt?: number;
  finishedAt?: number;
  result?: Outcome;
  predictionCorrect?: boolean;
}

export interface FeedItem {
  key: string;
  type: string;
  t: number;
  matchId?: number;
  league?: string;
  confidence?: number;
  data: Record<string, any>;
}

export interface Analytics {
  total: number;
  hitRate: number;
  brier: number;
  at: number;
}

export interface DashboardState {
  matches: Record<number, MatchView>;
  feed: FeedItem[];
  analytics?: Analytics;
  systemStatus?: { status: string; message?: string; at: number };
  counts: Record<string, number>;
  leagues: { name: string; name_en: string }[];
  secondsPerMinute: number;
  /** ms between an event's timestamp and its arrival, smoothed */
  eventLagMs?: number;
  seed?: number;
  /** Seconds the viewer's tier gets scores late, and odds at most once per (0: live). */
  scoreDelay?: number;
  oddsInterval?: number;
}

export const FEED_MAX = 60;
const HISTORY_MAX = 240;

export function emptyState(): DashboardState {
  return { matches: {}, feed: [], counts: {}, leagues: [], secondsPerMinute: 2 };
}

const ts = (iso: string | undefined | null, fallback: number): number => {
  if (!iso) return fallback;
  const v = Date.parse(iso);
  return Number.isFinite(v) ? v : fallback;
};

function fromSnapshot(m: SnapshotMatch, now: number, spm: number): MatchView {
  const hist = (rows?: [string, number, number, number][]): Point[] =>
    (rows ?? []).map(([t, home, draw, away]) => ({ t: ts(t, now), home, draw, away }));
  const p = m.prediction;
  return {
    id: m.match_id,
    league: m.league,
    homeTeam: m.home_team,
    awayTeam: m.away_team,
    homeTeamEn: m.home_team_en,
    awayTeamEn: m.away_team_en,
    venue: m.venue,
    venueEn: m.venue_en,
    status: m.status,
    minute: m.minute,
    added: m.added_minute,
    clockAt: now,
    homeScore: m.home_score,
    awayScore: m.away_score,
    kickoffAt: m.status === "scheduled" ? now + m.kickoff_in_minutes * spm * 1000 : undefined,
    goals: m.goals.map((g) => ({ side: g.side, minute: g.minute, added: g.added_minute, player: g.player, playerEn: g.player_en })),
    prediction: p
      ? { pick: p.prediction, confidence: p.confidence, home: p.home_win_prob, draw: p.draw_prob, away: p.away_win_prob, ev: p.expected_value }
      : undefined,
    result: m.result,
    predictionCorrect: m.prediction_correct,
    probs: hist(m.probability_history),
    odds: m.odds,
    oddsHist: hist(m.odds_history),
    finishedAt: m.status === "finished" ? now : undefined,
  };
}

/** Replace everything with a snapshot (initial load, and after a reconnect). */
export function applySnapshot(state: DashboardState, snap: Snapshot, now: number): DashboardState {
  const spm = snap.seconds_per_minute;
  const matches: Record<number, MatchView> = {};
  for (const m of snap.matches) matches[m.match_id] = fromSnapshot(m, now, spm);
  let next: DashboardState = {
    ...state,
    matches,
    leagues: snap.leagues,
    secondsPerMinute: spm,
    seed: snap.seed,
    scoreDelay: snap.timeliness?.delay_seconds?.match_score_changed ?? 0,
    oddsInterval: snap.timeliness?.min_interval_seconds?.odds_updated ?? 0,
    feed: [],
    analytics: snap.analytics
      ? { total: snap.analytics.total_predictions, hitRate: snap.analytics.hit_rate, brier: snap.analytics.brier_score, at: now }
      : state.analytics,
  };
  // The snapshot's feed is history: it fills the feed without counting as received.
  for (const ev of snap.feed) next = addFeed(next, ev, ts(ev.timestamp, now));
  return next;
}

function placeholder(d: Record<string, any>, now: number): MatchView {
  return {
    id: d.match_id,
    league: d.league ?? "",
    homeTeam: d.home_team ?? "?",
    awayTeam: d.away_team ?? "?",
    homeTeamEn: d.home_team_en,
    awayTeamEn: d.away_team_en,
    venue: d.venue,
    venueEn: d.venue_en,
    status: "scheduled",
    minute: 0,
    added: 0,
    clockAt: now,
    homeScore: d.home_score ?? 0,
    awayScore: d.away_score ?? 0,
    goals: [],
    probs: [],
    oddsHist: [],
  };
}

function withMatch(
  state: DashboardState,
  d: Record<string, any>,
  now: number,
  fn: (m: MatchView) => MatchView,
): DashboardState {
  if (typeof d.match_id !== "number") return state;
  const current = state.matches[d.match_id] ?? placeholder(d, now);
  return { ...state, matches: { ...state.matches, [d.match_id]: fn(current) } };
}

function withClock(m: MatchView, d: Record<string, any>, now: number): MatchView {
  if (typeof d.minute !== "number") return m;
  return { ...m, minute: d.minute, added: typeof d.added_minute === "number" ? d.added_minute : 0, clockAt: now };
}

const push = (list: Point[], p: Point): Point[] => {
  const out = list.length >= HISTORY_MAX ? list.slice(list.length - HISTORY_MAX + 1) : list.slice();
  out.push(p);
  return out;
};

function addFeed(state: DashboardState, ev: RealtimeEvent, t: number): DashboardState {
  const d = ev.data ?? {};
  const type = ev.event_type;
  const interesting =
    type === "prediction_created" ||
    type === "prediction_completed" ||
    (type === "prediction_updated" && (d.reason === "goal" || d.prediction !== d.previous_prediction)) ||
    type === "match_score_changed" ||
    type === "odds_significant_change" ||
    type === "system_alert";
  if (!interesting) return state;
  const item: FeedItem = {
    // By content, not offset: the snapshot's feed (no offsets) and a resumed session's
    // replay may carry the same event.
    key: `${type}:${d.match_id ?? ""}:${d.prediction_id ?? ""}:${ev.timestamp}`,
    type,
    t,
    matchId: d.match_id,
    league: d.league,
    confidence: typeof d.confidence === "number" ? d.confidence : undefined,
    data: d,
  };
  if (state.feed.some((f) => f.key === item.key)) return state;
  return { ...state, feed: [item, ...state.feed].slice(0, FEED_MAX) };
}

/** Events that happened before the snapshot (a resumed session's replay of what the page
 *  missed while it reloaded): the snapshot has their effect, the feed shows them. */
export function addHistory(state: DashboardState, events: RealtimeEvent[], now: number): DashboardState {
  const sorted = [...events].sort((a, b) => ts(a.timestamp, now) - ts(b.timestamp, now));
  return sorted.reduce((s, ev) => addFeed(s, ev, ts(ev.timestamp, now)), state);
}

/** Apply one live event. */
export function applyEvent(state: DashboardState, ev: RealtimeEvent, now: number): DashboardState {
  const d = ev.data ?? {};
  const t = ts(ev.timestamp, now);
  let s: DashboardState = { ...state, counts: { ...state.counts, [ev.event_type]: (state.counts[ev.event_type] ?? 0) + 1 } };
  if (ev.stream) {
    const lag = Math.max(0, now - t);
    s.eventLagMs = s.eventLagMs === undefined ? lag : s.eventLagMs * 0.8 + lag * 0.2;
  }
  switch (ev.event_type) {
    case "match_status_changed":
      s = withMatch(s, d, now, (m) => ({
        ...withClock(m, d, now),
        status: d.status,
        homeTeam: d.home_team ?? m.homeTeam,
        awayTeam: d.away_team ?? m.awayTeam,
        homeTeamEn: d.home_team_en ?? m.homeTeamEn,
        awayTeamEn: d.away_team_en ?? m.awayTeamEn,
        venue: d.venue ?? m.venue,
        venueEn: d.venue_en ?? m.venueEn,
        kickoffAt: d.status === "scheduled" && d.start_time ? ts(d.start_time, now) : m.kickoffAt,
        homeScore: d.home_score ?? m.homeScore,
        awayScore: d.away_score ?? m.awayScore,
        finishedAt: d.status === "finished" ? now : m.finishedAt,
      }));
      break;
    case "match_started":
      s = withMatch(s, d, now, (m) => ({
        ...m,
        status: m.status === "scheduled" ? "first_half" : m.status,
        minute: 0,
        added: 0,
        clockAt: now,
        homeTeam: d.home_team ?? m.homeTeam,
        awayTeam: d.away_team ?? m.awayTeam,
        homeTeamEn: d.home_team_en ?? m.homeTeamEn,
        awayTeamEn: d.away_team_en ?? m.awayTeamEn,
        kickoffAt: undefined,
      }));
      break;
    case "match_score_changed":
      s = withMatch(s, d, now, (m) => ({
        ...withClock(m, d, now),
        homeScore: d.home_score,
        awayScore: d.away_score,
        lastGoalAt: now,
        goals: d.scoring_team
          ? [
              ...m.goals,
              { side: d.scoring_team, minute: d.minute ?? m.minute, added: d.added_minute ?? 0, player: d.scoring_player ?? "", playerEn: d.scoring_player_en },
            ]
          : m.goals,
      }));
      break;
    case "match_ended":
      s = withMatch(s, d, now, (m) => ({
        ...m,
        status: "finished",
        homeScore: d.home_score,
        awayScore: d.away_score,
        result: d.result,
        finishedAt: m.finishedAt ?? now,
      }));
      break;
    case "prediction_created":
    case "prediction_updated":
      s = withMatch(s, d, now, (m) => ({
        ...withClock(m, d, now),
        homeTeam: m.homeTeam === "?" && d.home_team ? d.home_team : m.homeTeam,
        awayTeam: m.awayTeam === "?" && d.away_team ? d.away_team : m.awayTeam,
        homeTeamEn: m.homeTeamEn ?? d.home_team_en,
        awayTeamEn: m.awayTeamEn ?? d.away_team_en,
        homeScore: d.home_score ?? m.homeScore,
        awayScore: d.away_score ?? m.awayScore,
        prediction: {
          pick: d.prediction,
          confidence: d.confidence,
          home: d.home_win_prob,
          draw: d.draw_prob,
          away: d.away_win_prob,
          ev: d.expected_value,
          strategy: d.strategy,
        },
        probs: push(m.probs, { t, home: d.home_win_prob, draw: d.draw_prob, away: d.away_win_prob }),
      }));
      break;
    case "prediction_completed":
      s = withMatch(s, d, now, (m) => ({ ...m, result: d.actual_result, predictionCorrect: d.is_correct }));
      break;
    case "odds_updated":
      s = withMatch(s, d, now, (m) => ({
        ...withClock(m, d, now),
        odds: { home: d.home_odds, draw: d.draw_odds, away: d.away_odds },
        oddsChange: d.change,
        oddsHist: push(m.oddsHist, { t, home: d.home_odds, draw: d.draw_odds, away: d.away_odds }),
      }));
      break;
    case "analytics_updated":
      s.analytics = { total: d.total_predictions ?? 0, hitRate: d.hit_rate ?? 0, brier: d.brier_score ?? 0, at: now };
      break;
    case "system_status":
      s.systemStatus = { status: d.status, message: d.message, at: now };
      break;
  }
  return addFeed(s, ev, t);
}

/** Drop finished matches after they have been on show for a while. */
export function prune(state: DashboardState, now: number, keepMs: number): DashboardState {
  const stale = Object.values(state.matches).filter((m) => m.finishedAt !== undefined && now - m.finishedAt > keepMs);
  if (stale.length === 0) return state;
  const matches = { ...state.matches };
  for (const m of stale) delete matches[m.id];
  return { ...state, matches };
}

/** The match clock as shown: 67', 45+2', HT, FT, or minutes to kick-off. */
export function clockOf(m: MatchView, now: number, secondsPerMinute: number): { minute: number; added: number } {
  if (m.status !== "first_half" && m.status !== "second_half") return { minute: m.minute, added: m.added };
  // Run the clock between events, but never far past what the server last said.
  const elapsed = Math.min(Math.floor((now - m.clockAt) / (secondsPerMinute * 1000)), 3);
  const end = m.status === "first_half" ? 45 : 90;
  const total = m.minute + m.added + Math.max(elapsed, 0);
  return total <= end ? { minute: total, added: 0 } : { minute: end, added: total - end };
}

export interface ViewFilters {
  leagues: string[];
  followedOnly: boolean;
  followed: number[];
  minConfidence: number;
}

export function matchVisible(m: MatchView, f: ViewFilters): boolean {
  if (f.leagues.length > 0 && !f.leagues.includes(m.league)) return false;
  if (f.followedOnly && f.followed.length > 0 && !f.followed.includes(m.id)) return false;
  return true;
}

export function feedVisible(item: FeedItem, f: ViewFilters): boolean {
  if (item.type === "system_alert") return true;
  if (f.leagues.length > 0 && item.league !== undefined && !f.leagues.includes(item.league)) return false;
  if (f.followedOnly && f.followed.length > 0 && item.matchId !== undefined && !f.followed.includes(item.matchId)) return false;
  if (item.type.startsWith("prediction_") && item.confidence !== undefined && item.confidence < f.minConfidence) return false;
  return true;
}

/** The live subscriptions that the filters ask for (one per stream). */
export function subscriptionsFor(f: ViewFilters): { type: string; filters: Record<string, unknown> }[] {
  const common: Record<string, unknown> = {};
  if (f.leagues.length > 0) common.leagues = [...f.leagues].sort();
  if (f.followedOnly && f.followed.length > 0) common.match_ids = [...f.followed].sort((a, b) => a - b);
  const predictions = { ...common, ...(f.minConfidence > 0 ? { min_confidence: f.minConfidence } : {}) };
  return [
    { type: "matches", filters: common },
    { type: "predictions", filters: predictions },
    { type: "odds", filters: common },
    { type: "system_alerts", filters: {} },
    { type: "analytics", filters: {} },
  ];
}
