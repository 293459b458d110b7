import type React from "react";
import { useCallback, useEffect, useMemo, useState } from "react";
import { initialLang, type Lang, translator } from "./i18n";
import { feedVisible, matchVisible, type ViewFilters } from "./store";
import type { Tier } from "./types";
import { RealtimeProvider } from "@football-realtime/client/react";
import { type Viewer, useDashboard, useViewerService } from "./useDashboard";
import { MatchCard } from "./components/MatchCard";
import { AnalyticsPanel, ConnectionBadge, Feed, StatsPanel, SubscriptionsPanel } from "./components/panels";

const STATUS_ORDER: Record<string, number> = { first_half: 0, second_half: 0, half_time: 1, scheduled: 2, finished: 3 };

function initialTier(): Tier {
  const q = new URLSearchParams(location.search).get("tier");
  return q === "free" ? "free" : "premium";
}

/** One connection per viewer (paid or free), shared through the client's provider. */
export function App() {
  const [lang, setLang] = useState<Lang>(initialLang);
  const [tier, setTier] = useState<Tier>(initialTier);
  const [filters, setFilters] = useState<ViewFilters>({ leagues: [], followedOnly: false, followed: [], minConfidence: 0 });
  const { viewer } = useViewerService(tier);
  if (!viewer || viewer.tier !== tier) return <div className="app boot" data-testid="booting" />;
  return (
    <RealtimeProvider service={viewer.service} key={tier}>
      <Dashboard lang={lang} setLang={setLang} tier={tier} setTier={setTier} filters={filters} setFilters={setFilters} viewer={viewer} />
    </RealtimeProvider>
  );
}

interface DashboardProps {
  lang: Lang;
  setLang: (l: Lang) => void;
  tier: Tier;
  setTier: (t: Tier) => void;
  filters: ViewFilters;
  setFilters: React.Dispatch<React.SetStateAction<ViewFilters>>;
  viewer: Viewer;
}

function Dashboard({ lang, setLang, tier, setTier, filters, setFilters, viewer }: DashboardProps) {
  const [now, setNow] = useState(() => Date.now());
  const t = useMemo(() => translator(lang), [lang]);
  const { state, conn, subscribed, rttMs } = useDashboard(filters, viewer);

  useEffect(() => {
    const i = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(i);
  }, []);
  useEffect(() => {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = lang === "zh" ? "足球实时预测 · Football Realtime" : "Football Realtime · 足球实时预测";
    localStorage.setItem("fr.lang", lang);
  }, [lang]);

  const leagueLabel = useCallback(
    (name?: string) => {
      if (!name) return "";
      const l = state.leagues.find((x) => x.name === name);
      return lang === "en" && l ? l.name_en : name;
    },
    [state.leagues, lang],
  );
  const matchName = useCallback(
    (id: number | undefined) => {
      const m = id === undefined ? undefined : state.matches[id];
      if (!m) return undefined;
      return lang === "en" ? `${m.homeTeamEn ?? m.homeTeam} – ${m.awayTeamEn ?? m.awayTeam}` : `${m.homeTeam} – ${m.awayTeam}`;
    },
    [state.matches, lang],
  );
  const toggleLeague = (name: string | null) =>
    setFilters((f) => ({
      ...f,
      leagues: name === null ? [] : f.leagues.includes(name) ? f.leagues.filter((x) => x !== name) : [...f.leagues, name],
    }));
  const follow = useCallback(
    (id: number) =>
      setFilters((f) => ({ ...f, followed: f.followed.includes(id) ? f.followed.filter((x) => x !== id) : [...f.followed, id] })),
    [],
  );

  const matches = Object.values(state.matches)
    .filter((m) => matchVisible(m, filters))
    .sort((a, b) => (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) || a.id - b.id);
  const feed = state.feed.filter((f) => feedVisible(f, filters));
  const live = Object.values(state.matches).filter((m) => m.status !== "scheduled" && m.status !== "finished").length;

  return (
    <div className="app">
      <header className="top">
        <div className="brand">
          <span className="ball">⚽</span>
          <div>
            <h1>{t("title")}</h1>
            <p>{t("subtitle")}</p>
          </div>
        </div>
        <div className="controls">
          <ConnectionBadge conn={conn} t={t} />
          <div className="seg" role="group" aria-label={t("viewer")} data-testid="tier-switch">
            {(["premium", "free"] as const).map((v) => (
              <button key={v} className={tier === v ? "on" : ""} onClick={() => setTier(v)} data-tier={v} aria-pressed={tier === v}>
                {v === "premium" ? "★ " : ""}
                {t(v)}
              </button>
            ))}
          </div>
          {tier === "free" && (state.scoreDelay || state.oddsInterval) ? (
            <span className="tier-note" data-testid="tier-delay-note" data-delay={state.scoreDelay ?? 0} title={t("tierNoteFree")}>
              {[state.scoreDelay ? t("scoreDelay", { s: state.scoreDelay }) : "", state.oddsInterval ? t("oddsInterval", { s: state.oddsInterval }) : ""]
                .filter(Boolean)
                .join(" · ")}
            </span>
          ) : null}
          <button className="lang" onClick={() => setLang(lang === "zh" ? "en" : "zh")} data-testid="lang">
            {t("language")}
          </button>
        </div>
      </header>

      <section className="filters" data-testid="filters">
        <div className="chips" role="group" aria-label={t("leagues")}>
          <span className="flabel">{t("leagues")}</span>
          <button className={filters.leagues.length === 0 ? "chip on" : "chip"} onClick={() => toggleLeague(null)} data-league="">
            {t("allLeagues")}
          </button>
          {state.leagues.map((l) => (
            <button key={l.name} className={filters.leagues.includes(l.name) ? "chip on" : "chip"} onClick={() => toggleLeague(l.name)} data-league={l.name}>
              {lang === "en" ? l.name_en : l.name}
            </button>
          ))}
        </div>
        <label className="check">
          <input
            type="checkbox"
            checked={filters.followedOnly}
            onChange={(e) => setFilters((f) => ({ ...f, followedOnly: e.target.checked }))}
            data-testid="followed-only"
          />
          {t("followedOnly")} <span className="muted">({filters.followed.length})</span>
        </label>
        <label className="range">
          {t("minConfidence")}
          <input
            type="range"
            min={0}
            max={0.9}
            step={0.05}
            value={filters.minConfidence}
            onChange={(e) => setFilters((f) => ({ ...f, minConfidence: Number(e.target.value) }))}
            data-testid="min-confidence"
          />
          <b>{Math.round(filters.minConfidence * 100)}%</b>
        </label>
      </section>

      <main className="layout">
        <section className="matches">
          <h2>
            {t("matches")} <span className="muted">{matches.length}</span>
            <span className="pill-live">
              ● {t("live")} {live}
            </span>
          </h2>
          {matches.length === 0 && <p className="muted empty">{t("noMatches")}</p>}
          <div className="grid" data-testid="match-grid">
            {matches.map((m) => (
              <MatchCard
                key={m.id}
                m={m}
                now={now}
                spm={state.secondsPerMinute}
                t={t}
                lang={lang}
                leagueLabel={leagueLabel(m.league)}
                followed={filters.followed.includes(m.id)}
                onFollow={follow}
                premium={tier === "premium"}
              />
            ))}
          </div>
        </section>
        <aside className="side">
          <StatsPanel t={t} rttMs={rttMs} eventLagMs={state.eventLagMs} />
          <AnalyticsPanel a={state.analytics} t={t} />
          <Feed items={feed} t={t} lang={lang} leagueLabel={leagueLabel} matchName={matchName} />
          <SubscriptionsPanel subs={subscribed} counts={state.counts} t={t} tier={tier} />
        </aside>
      </main>
      <footer className="foot muted">
        football-realtime demo · {t("seed")} {state.seed ?? "—"} · {t("speed")} ×{Math.round(60 / state.secondsPerMinute)} · user {conn.userId ?? "—"}
      </footer>
    </div>
  );
}
