/** Wire shapes the dashboard reads (see docs/protocol.md and core/events.py). */

export interface RealtimeEvent<T = Record<string, any>> {
  event_type: string;
  data: T;
  timestamp: string;
  source?: string;
  stream?: string;
  offset?: number;
  correlation_id?: string;
}

export type Outcome = "home_win" | "draw" | "away_win";
export type Tier = "free" | "premium";

export interface SnapshotMatch {
  match_id: number;
  league: string;
  league_en?: string;
  home_team: string;
  away_team: string;
  home_team_en?: string;
  away_team_en?: string;
  venue?: string;
  venue_en?: string;
  status: string;
  minute: number;
  added_minute: number;
  home_score: number;
  away_score: number;
  kickoff_in_minutes: number;
  start_time?: string | null;
  goals: { side: "home" | "away"; minute: number; added_minute: number; player: string; player_en?: string }[];
  prediction?: {
    prediction_id: string;
    prediction: Outcome;
    confidence: number;
    home_win_prob: number;
    draw_prob: number;
    away_win_prob: number;
    expected_value?: number;
  };
  result?: Outcome;
  prediction_correct?: boolean;
  probability_history?: [string, number, number, number][];
  odds?: { home: number; draw: number; away: number };
  odds_history?: [string, number, number, number][];
}

export interface Snapshot {
  minute: number;
  server_time: string;
  speed: number;
  seconds_per_minute: number;
  leagues: { name: string; name_en: string }[];
  matches: SnapshotMatch[];
  analytics: { total_predictions: number; hit_rate: number; brier_score: number } | null;
  feed: RealtimeEvent[];
  tier: Tier;
  seed: number;
  /** A free viewer's: how late its tier gets each event type, and how thinned. */
  timeliness?: Timeliness;
}

export interface Timeliness {
  delay_seconds: Record<string, number>;
  min_interval_seconds?: Record<string, number>;
}

export interface ViewerToken {
  token: string;
  user_id: string;
  tier: Tier;
  expires_at: number;
}

export interface ServerStats {
  active_connections: number;
  total_messages: number;
  messages_per_second: number;
  messages_sent?: number;
  bytes_sent?: number;
  events_published?: number;
  uptime_seconds: number;
  error_rate: number;
  broker?: string;
  instance_id?: string;
}
