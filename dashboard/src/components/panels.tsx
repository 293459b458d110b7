import { useEffect, useRef, useState } from "react";
import type { Lang, T } from "../i18n";
import type { Analytics, FeedItem } from "../store";
import type { ServerStats } from "../types";
import type { ConnectionView, Subscribed } from "../useDashboard";

const pct = (v: number) => `${Math.round(v * 100)}%`;
const time = (t: number) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

export function ConnectionBadge({ conn, t }: { conn: ConnectionView; t: T }) {
  const [, force] = useState(0);
  useEffect(() => {
    if (conn.phase !== "reconnecting") return;
    const i = setInterval(() => force((n) => n + 1), 250);
    return () => clearInterval(i);
  }, [conn.phase]);
  const label =
    conn.phase === "live"
      ? t("live")
      : conn.phase === "reconnecting"
        ? `${t("reconnecting")} · ${t("attempt", { n: conn.attempt })}`
        : conn.phase === "recovering"
          ? t("recovering")
          : conn.phase === "closed"
            ? t("closed")
            : t("connecting");
  return (
    <div className={`conn conn-${conn.phase}`} data-testid="conn-status" data-phase={conn.phase} data-reconnects={conn.reconnects} title={conn.connectionId ?? ""}>
      <i className="dot" />
      <span>{label}</span>
      {conn.closeCode !== undefined && conn.phase !== "live" && <code>{conn.closeCode}</code>}
    </div>
  );
}

export type MatchName = (id: number | undefined) => string | undefined;

function feedLine(item: FeedItem, t: T, lang: Lang, leagueLabel: (l?: string) => string, matchName: MatchName): { icon: string; title: string; body: string; cls: string } {
  const d = item.data;
  const home = lang === "en" ? d.home_team_en ?? d.home_team : d.home_team;
  const away = lang === "en" ? d.away_team_en ?? d.away_team : d.away_team;
  const teams = home && away ? `${home} – ${away}` : matchName(d.match_id) ?? `#${d.match_id}`;
  const pick = (o: string) => t(o === "home_win" ? "home" : o === "draw" ? "draw" : "away");
  switch (item.type) {
    case "prediction_created":
      return { icon: "◆", cls: "pred", title: `${t("predictionCreated")} · ${leagueLabel(d.league)}`, body: `${teams}: ${pick(d.prediction)} ${pct(d.confidence)}` };
    case "prediction_updated":
      return { icon: "↗", cls: "pred", title: `${t("predictionUpdated")} · ${d.minute}'`, body: `${teams} ${d.home_score}-${d.away_score}: ${pick(d.prediction)} ${pct(d.confidence)}` };
    case "prediction_completed":
      return {
        icon: d.is_correct ? "✓" : "✗",
        cls: d.is_correct ? "ok" : "bad",
        title: `${t("predictionCompleted")} · ${d.is_correct ? t("correct") : t("wrong")}`,
        body: `${teams} ${d.home_score}-${d.away_score} (${t("pick")}: ${pick(d.prediction)})`,
      };
    case "match_score_changed": {
      const player = lang === "en" ? d.scoring_player_en ?? d.scoring_player : d.scoring_player;
      return { icon: "●", cls: "goal", title: `${t("goal")} · ${d.added_minute ? `${d.minute}+${d.added_minute}` : d.minute}'`, body: `${player ?? ""} · ${teams} ${d.home_score}-${d.away_score}` };
    }
    case "odds_significant_change":
      return { icon: "⇅", cls: "odds", title: `${t("oddsMove")} · ${leagueLabel(d.league)}`, body: `${teams} · ${t(d.outcome)} ${d.old_odds} → ${d.new_odds} (${d.change_pct > 0 ? "+" : ""}${d.change_pct}%)` };
    case "system_alert":
      return { icon: d.alert_type === "info" ? "i" : "!", cls: `alert ${d.alert_type}`, title: `${t("alert")} · ${d.component}`, body: d.message };
    default:
      return { icon: "•", cls: "", title: item.type, body: "" };
  }
}

export function Feed({ items, t, lang, leagueLabel, matchName }: { items: FeedItem[]; t: T; lang: Lang; leagueLabel: (l?: string) => string; matchName: MatchName }) {
  return (
    <section className="panel feed" data-testid="feed">
      <h2>{t("feed")}</h2>
      {items.length === 0 && <p className="muted">{t("feedEmpty")}</p>}
      <ol>
        {items.map((item) => {
          const l = feedLine(item, t, lang, leagueLabel, matchName);
          return (
            <li key={item.key} className={l.cls} data-type={item.type}>
              <span className="icon">{l.icon}</span>
              <div>
                <div className="ftitle">
                  {l.title}
                  <time>{time(item.t)}</time>
                </div>
                <div className="fbody">{l.body}</div>
              </div>
            </li>
          );
        })}
      </ol>
    </section>
  );
}

export function StatsPanel({ t, rttMs, eventLagMs }: { t: T; rttMs: number | null; eventLagMs?: number }) {
  const [stats, setStats] = useState<ServerStats | null>(null);
  const [rate, setRate] = useState<number | null>(null);
  const [offline, setOffline] = useState(false);
  const prev = useRef<{ at: number; sent: number } | null>(null);
  useEffect(() => {
    let stop = false;
    const poll = async () => {
      try {
        const r = await fetch("/realtime/stats", { cache: "no-store" });
        if (!r.ok) throw new Error(String(r.status));
        const s = (await r.json()) as ServerStats;
        if (stop) return;
        const sent = s.messages_sent ?? s.total_messages;
        const at = performance.now();
        if (prev.current && sent >= prev.current.sent) setRate(((sent - prev.current.sent) * 1000) / (at - prev.current.at));
        prev.current = { at, sent };
        setStats(s);
        setOffline(false);
      } catch {
        if (!stop) setOffline(true);
        prev.current = null;
      }
    };
    void poll();
    const i = setInterval(poll, 2000);
    return () => {
      stop = true;
      clearInterval(i);
    };
  }, []);
  const rtt = rttMs;
  const uptime = stats ? Math.round(stats.uptime_seconds) : 0;
  return (
    <section className={`panel stats${offline ? " offline" : ""}`} data-testid="stats">
      <h2>
        {t("stats")}
        {stats?.broker && <code>{stats.broker}</code>}
      </h2>
      <dl>
        <div>
          <dt>{t("connections")}</dt>
          <dd data-testid="stat-connections">{stats ? stats.active_connections : "—"}</dd>
        </div>
        <div>
          <dt>{t("msgsPerSec")}</dt>
          <dd>{rate !== null ? rate.toFixed(1) : stats ? stats.messages_per_second.toFixed(1) : "—"}</dd>
        </div>
        <div>
          <dt>{t("rtt")}</dt>
          <dd>{rtt != null ? `${rtt.toFixed(0)} ms` : "—"}</dd>
        </div>
        <div>
          <dt>{t("eventLag")}</dt>
          <dd>{eventLagMs !== undefined ? `${eventLagMs.toFixed(0)} ms` : "—"}</dd>
        </div>
        <div>
          <dt>{t("published")}</dt>
          <dd>{stats?.events_published ?? "—"}</dd>
        </div>
        <div>
          <dt>{t("uptime")}</dt>
          <dd>{stats ? `${Math.floor(uptime / 60)}m ${uptime % 60}s` : "—"}</dd>
        </div>
      </dl>
    </section>
  );
}

export function AnalyticsPanel({ a, t }: { a?: Analytics; t: T }) {
  return (
    <section className="panel analytics" data-testid="analytics">
      <h2>{t("analytics")}</h2>
      <dl>
        <div>
          <dt>{t("hitRate")}</dt>
          <dd>{a && a.total > 0 ? pct(a.hitRate) : "—"}</dd>
        </div>
        <div>
          <dt>{t("brier")}</dt>
          <dd>{a && a.total > 0 ? a.brier.toFixed(3) : "—"}</dd>
        </div>
        <div>
          <dt>{t("settled")}</dt>
          <dd>{a ? a.total : "—"}</dd>
        </div>
      </dl>
    </section>
  );
}

export function SubscriptionsPanel({ subs, counts, t, tier }: { subs: Subscribed[]; counts: Record<string, number>; t: T; tier: string }) {
  const fmt = (f?: Record<string, unknown>) => {
    const parts = Object.entries(f ?? {})
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(",") : String(v)}`);
    return parts.length ? parts.join(" ") : "*";
  };
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return (
    <section className="panel subs" data-testid="subscriptions">
      <h2>{t("subscriptions")}</h2>
      <p className="muted small">{tier === "premium" ? t("tierNotePremium") : t("tierNoteFree")}</p>
      <ul>
        {subs.map((s) => (
          <li key={s.type} data-testid={`sub-${s.type}`} data-acked={s.serverId ? "yes" : "no"} data-filters={JSON.stringify(s.effective ?? {})}>
            <b>{s.type}</b> <code>{fmt(s.effective ?? s.filters)}</code>
            {!s.serverId && <span className="muted"> …</span>}
          </li>
        ))}
      </ul>
      <h3>
        {t("received")} <span className="muted">{total}</span>
      </h3>
      <div className="counts">
        {Object.entries(counts)
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => (
            <span key={k}>
              {k} <b>{v}</b>
            </span>
          ))}
      </div>
    </section>
  );
}
