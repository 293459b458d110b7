import { describe, expect, it } from "vitest";
import { applyEvent, applySnapshot, clockOf, emptyState, feedVisible, matchVisible, prune, subscriptionsFor } from "./store";
import type { RealtimeEvent, Snapshot } from "./types";

const T0 = Date.parse("2025-10-29T19:00:00Z");
const iso = (ms: number) => new Date(ms).toISOString();
const ev = (event_type: string, data: Record<string, any>, ms = T0, offset = 1): RealtimeEvent => ({
  event_type,
  data,
  timestamp: iso(ms),
  stream: "matches",
  offset,
});

const snapshot: Snapshot = {
  minute: 10,
  server_time: iso(T0),
  speed: 30,
  seconds_per_minute: 2,
  leagues: [
    { name: "英超", name_en: "Premier League" },
    { name: "西甲", name_en: "La Liga" },
  ],
  matches: [
    {
      match_id: 1001,
      league: "英超",
      home_team: "曼联",
      away_team: "切尔西",
      home_team_en: "Manchester United",
      away_team_en: "Chelsea",
      status: "first_half",
      minute: 9,
      added_minute: 0,
      home_score: 0,
      away_score: 0,
      kickoff_in_minutes: 0,
      goals: [],
      prediction: { prediction_id: "pred-1001", prediction: "home_win", confidence: 0.5, home_win_prob: 0.5, draw_prob: 0.3, away_win_prob: 0.2 },
      probability_history: [[iso(T0 - 5000), 0.5, 0.3, 0.2]],
      odds: { home: 1.9, draw: 3.2, away: 4.5 },
      odds_history: [[iso(T0 - 5000), 1.9, 3.2, 4.5]],
    },
    {
      match_id: 1002,
      league: "西甲",
      home_team: "皇家马德里",
      away_team: "巴塞罗那",
      status: "scheduled",
      minute: 0,
      added_minute: 0,
      home_score: 0,
      away_score: 0,
      kickoff_in_minutes: 5,
      goals: [],
    },
  ],
  analytics: null,
  feed: [],
  tier: "premium",
  seed: 7,
};

describe("store", () => {
  it("loads a snapshot", () => {
    const s = applySnapshot(emptyState(), snapshot, T0);
    expect(Object.keys(s.matches)).toEqual(["1001", "1002"]);
    expect(s.matches[1001].prediction?.home).toBe(0.5);
    expect(s.matches[1002].kickoffAt).toBe(T0 + 5 * 2000);
    expect(s.secondsPerMinute).toBe(2);
  });

  it("applies a goal, a prediction update and odds", () => {
    let s = applySnapshot(emptyState(), snapshot, T0);
    s = applyEvent(s, ev("match_score_changed", { match_id: 1001, league: "英超", home_score: 1, away_score: 0, scoring_team: "home", scoring_player: "拉什福德", minute: 23, added_minute: 0 }, T0 + 1000), T0 + 1010);
    s = applyEvent(s, ev("prediction_updated", { match_id: 1001, league: "英超", prediction: "home_win", confidence: 0.72, home_win_prob: 0.72, draw_prob: 0.2, away_win_prob: 0.08, reason: "goal", previous_prediction: "home_win" }, T0 + 1000, 2), T0 + 1020);
    s = applyEvent(s, ev("odds_updated", { match_id: 1001, league: "英超", bookmaker: "b", home_odds: 1.3, draw_odds: 4.5, away_odds: 11, change: { home: -0.6, draw: 1.3, away: 6.5 } }, T0 + 1000, 3), T0 + 1030);
    const m = s.matches[1001];
    expect([m.homeScore, m.awayScore]).toEqual([1, 0]);
    expect(m.goals).toHaveLength(1);
    expect(m.minute).toBe(23);
    expect(m.prediction?.home).toBe(0.72);
    expect(m.probs).toHaveLength(2);
    expect(m.odds?.home).toBe(1.3);
    expect(m.oddsHist).toHaveLength(2);
    expect(s.counts).toEqual({ match_score_changed: 1, prediction_updated: 1, odds_updated: 1 });
    expect(s.feed.map((f) => f.type)).toEqual(["prediction_updated", "match_score_changed"]);
  });

  it("creates a match it has not seen from an announcement", () => {
    const s = applyEvent(emptyState(), ev("match_status_changed", { match_id: 2001, league: "中超", status: "scheduled", home_team: "上海海港", away_team: "北京国安", start_time: iso(T0 + 16000) }), T0);
    expect(s.matches[2001].homeTeam).toBe("上海海港");
    expect(s.matches[2001].kickoffAt).toBe(T0 + 16000);
  });

  it("runs the clock between events but not far past the last one", () => {
    const s = applySnapshot(emptyState(), snapshot, T0);
    const m = s.matches[1001];
    expect(clockOf(m, T0 + 4100, 2)).toEqual({ minute: 11, added: 0 });
    expect(clockOf(m, T0 + 60000, 2)).toEqual({ minute: 12, added: 0 });
    expect(clockOf({ ...m, minute: 45, added: 1 }, T0, 2)).toEqual({ minute: 45, added: 1 });
  });

  it("prunes finished matches after a while", () => {
    let s = applySnapshot(emptyState(), snapshot, T0);
    s = applyEvent(s, ev("match_ended", { match_id: 1001, home_score: 0, away_score: 0, result: "draw" }), T0);
    expect(prune(s, T0 + 1000, 30000).matches[1001]).toBeDefined();
    expect(prune(s, T0 + 31000, 30000).matches[1001]).toBeUndefined();
  });

  it("turns filters into subscriptions; min confidence only on predictions", () => {
    const subs = subscriptionsFor({ leagues: ["西甲", "英超"], followedOnly: true, followed: [3, 1], minConfidence: 0.6 });
    const by = Object.fromEntries(subs.map((s) => [s.type, s.filters]));
    expect(by.matches).toEqual({ leagues: ["英超", "西甲"], match_ids: [1, 3] });
    expect(by.predictions).toEqual({ leagues: ["英超", "西甲"], match_ids: [1, 3], min_confidence: 0.6 });
    expect(by.system_alerts).toEqual({});
    expect(subscriptionsFor({ leagues: [], followedOnly: true, followed: [], minConfidence: 0 })[0].filters).toEqual({});
  });

  it("filters what is shown like the subscriptions do", () => {
    const s = applySnapshot(emptyState(), snapshot, T0);
    const f = { leagues: ["英超"], followedOnly: false, followed: [], minConfidence: 0.6 };
    expect(matchVisible(s.matches[1001], f)).toBe(true);
    expect(matchVisible(s.matches[1002], f)).toBe(false);
    const low = { key: "k", type: "prediction_created", t: T0, matchId: 1001, league: "英超", confidence: 0.5, data: {} };
    expect(feedVisible(low, f)).toBe(false);
    expect(feedVisible({ ...low, confidence: 0.7 }, f)).toBe(true);
    expect(feedVisible({ ...low, type: "system_alert", league: undefined }, f)).toBe(true);
  });
});
