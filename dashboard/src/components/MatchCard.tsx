import { memo } from "react";
import type { Lang, T } from "../i18n";
import { clockOf, type MatchView } from "../store";
import { COLORS, OddsChart, ProbChart } from "./charts";

const pct = (v: number) => `${Math.round(v * 100)}%`;
// A segment too narrow for its label keeps only the number, or nothing.
const seg = (label: string, v: number) => (v >= 0.2 ? `${label} ${pct(v)}` : v >= 0.07 ? pct(v) : "");

function Clock({ m, now, spm, t }: { m: MatchView; now: number; spm: number; t: T }) {
  if (m.status === "scheduled") {
    const left = m.kickoffAt ? Math.max(0, Math.ceil((m.kickoffAt - now) / (spm * 1000))) : undefined;
    return <span className="clock scheduled">{left !== undefined ? t("kickoffIn", { n: left }) : t("scheduled")}</span>;
  }
  if (m.status === "half_time") return <span className="clock ht">{t("half_time")}</span>;
  if (m.status === "finished") return <span className="clock ft">{t("finished")}</span>;
  const c = clockOf(m, now, spm);
  return (
    <span className="clock live" data-testid="clock">
      <i className="dot" />
      {c.added > 0 ? `${c.minute}+${c.added}'` : `${c.minute}'`}
    </span>
  );
}

function OddsCell({ label, value, change }: { label: string; value?: number; change?: number }) {
  const dir = change === undefined || Math.abs(change) < 0.005 ? "" : change > 0 ? "up" : "down";
  return (
    <div className={`odds-cell ${dir}`}>
      <span className="label">{label}</span>
      <b>{value !== undefined ? value.toFixed(2) : "—"}</b>
      {dir && <span className="arrow">{dir === "up" ? "▲" : "▼"}</span>}
    </div>
  );
}

interface Props {
  m: MatchView;
  now: number;
  spm: number;
  t: T;
  lang: Lang;
  leagueLabel: string;
  followed: boolean;
  onFollow: (id: number) => void;
  premium: boolean;
}

export const MatchCard = memo(function MatchCard({ m, now, spm, t, lang, leagueLabel, followed, onFollow, premium }: Props) {
  const home = lang === "en" ? m.homeTeamEn ?? m.homeTeam : m.homeTeam;
  const away = lang === "en" ? m.awayTeamEn ?? m.awayTeam : m.awayTeam;
  const p = m.prediction;
  const flash = m.lastGoalAt !== undefined && now - m.lastGoalAt < 4000;
  const goals = (side: "home" | "away") =>
    m.goals
      .filter((g) => g.side === side)
      .map((g) => `${g.added ? `${g.minute}+${g.added}` : g.minute}' ${lang === "en" ? g.playerEn ?? g.player : g.player}`)
      .join(" · ");
  return (
    <article
      className={`card status-${m.status}${flash ? " goal-flash" : ""}`}
      data-testid="match-card"
      data-match-id={m.id}
      data-league={m.league}
      data-status={m.status}
    >
      <header>
        <span className="league">{leagueLabel}</span>
        <Clock m={m} now={now} spm={spm} t={t} />
        <button className={`star${followed ? " on" : ""}`} onClick={() => onFollow(m.id)} title={followed ? t("unfollow") : t("follow")} aria-pressed={followed} data-testid="follow">
          {followed ? "★" : "☆"}
        </button>
      </header>
      <div className="scoreline">
        <div className="team home" title={m.venue}>{home}</div>
        <div className="score" data-testid="score">
          {m.status === "scheduled" ? "vs" : `${m.homeScore} - ${m.awayScore}`}
        </div>
        <div className="team away">{away}</div>
      </div>
      {(m.goals.length > 0) && (
        <div className="goals">
          <span>{goals("home")}</span>
          <span>{goals("away")}</span>
        </div>
      )}
      {p ? (
        <div className="prediction" data-testid="prediction">
          <div className="probbar" title={t("probabilities")}>
            <span style={{ flex: p.home, background: COLORS.home }} data-testid="prob-home">{seg(t("home"), p.home)}</span>
            <span style={{ flex: p.draw, background: COLORS.draw }}>{seg(t("draw"), p.draw)}</span>
            <span style={{ flex: p.away, background: COLORS.away }}>{seg(t("away"), p.away)}</span>
          </div>
          <ProbChart points={m.probs} now={now} />
          <div className="pickline">
            <span>
              {t("pick")}: <b>{t(p.pick === "home_win" ? "home" : p.pick === "draw" ? "draw" : "away")}</b>
            </span>
            <span>
              {t("confidence")} <b>{pct(p.confidence)}</b>
            </span>
            {p.ev !== undefined && (
              <span className={p.ev >= 0 ? "ev pos" : "ev neg"}>
                {t("ev")} {p.ev >= 0 ? "+" : ""}
                {p.ev.toFixed(2)}
              </span>
            )}
            {m.predictionCorrect !== undefined && (
              <span className={m.predictionCorrect ? "verdict ok" : "verdict bad"}>{m.predictionCorrect ? t("correct") : t("wrong")}</span>
            )}
          </div>
        </div>
      ) : (
        !premium && <div className="locked">{t("locked")}</div>
      )}
      {m.odds && (
        <div className="odds" title={t("odds")}>
          <div className="odds-row">
            <OddsCell label={t("oddsHome")} value={m.odds.home} change={m.oddsChange?.home} />
            <OddsCell label={t("oddsDraw")} value={m.odds.draw} change={m.oddsChange?.draw} />
            <OddsCell label={t("oddsAway")} value={m.odds.away} change={m.oddsChange?.away} />
          </div>
          <OddsChart points={m.oddsHist} />
        </div>
      )}
    </article>
  );
});
