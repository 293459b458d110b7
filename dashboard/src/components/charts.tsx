import type { Point } from "../store";

export const COLORS = { home: "#22c55e", draw: "#94a3b8", away: "#60a5fa" } as const;

/** Home/draw/away probabilities over time as a 100% stacked area (they sum to 1). */
export function ProbChart({ points, width = 300, height = 64, now }: { points: Point[]; width?: number; height?: number; now: number }) {
  if (points.length === 0) return <svg className="chart empty" width={width} height={height} aria-hidden="true" />;
  const pts = points.length === 1 ? [points[0], { ...points[0], t: Math.max(now, points[0].t + 1) }] : [...points, { ...points[points.length - 1], t: Math.max(now, points[points.length - 1].t) }];
  const t0 = pts[0].t;
  const t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
  const x = (t: number) => ((t - t0) / (t1 - t0)) * width;
  const y = (v: number) => height - v * height;
  // step-after: a probability holds until the next update
  const band = (lo: (p: Point) => number, hi: (p: Point) => number): string => {
    const top: string[] = [];
    const bottom: string[] = [];
    pts.forEach((p, i) => {
      const xi = x(p.t);
      if (i > 0) {
        const prev = pts[i - 1];
        top.push(`${xi.toFixed(1)},${y(hi(prev)).toFixed(1)}`);
        bottom.push(`${xi.toFixed(1)},${y(lo(prev)).toFixed(1)}`);
      }
      top.push(`${xi.toFixed(1)},${y(hi(p)).toFixed(1)}`);
      bottom.push(`${xi.toFixed(1)},${y(lo(p)).toFixed(1)}`);
    });
    return [...top, ...bottom.reverse()].join(" ");
  };
  return (
    <svg className="chart" width="100%" viewBox={`0 0 ${width} ${height}`} preserveAspectRatio="none" role="img" aria-label="probability history">
      <polygon points={band(() => 0, (p) => p.home)} fill={COLORS.home} opacity="0.85" />
      <polygon points={band((p) => p.home, (p) => p.home + p.draw)} fill={COLORS.draw} opacity="0.55" />
      <polygon points={band((p) => p.home + p.draw, () => 1)} fill={COLORS.away} opacity="0.85" />
      <line x1="0" x2={width} y1={height / 2} y2={height / 2} stroke="#0b1220" strokeDasharray="2 4" strokeWidth="1" />
    </svg>
  );
}

/** Odds of the three outcomes over time on a log scale (1.0 to 20). */
export function OddsChart({ points, width = 300, height = 36 }: { points: Point[]; width?: number; height?: number }) {
  if (points.length < 2) return <svg className="chart odds empty" width="100%" height={height} aria-hidden="true" />;
  const t0 = points[0].t;
  const t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const lmax = Math.log(20);
  const x = (t: number) => ((t - t0) / (t1 - t0)) * width;
  const y = (o: number) => height - 2 - (Math.log(Math.min(Math.max(o, 1), 20)) / lmax) * (height - 4);
  const line = (k: "home" | "draw" | "away") => points.map((p) => `${x(p.t).toFixed(1)},${y(p[k]).toFixed(1)}`).join(" ");
  return (
    <svg className="chart odds" width="100%" viewBox={`0 0 ${width} ${height}`} preserveAspectRatio="none" role="img" aria-label="odds history">
      {(["away", "draw", "home"] as const).map((k) => (
        <polyline key={k} points={line(k)} fill="none" stroke={COLORS[k]} strokeWidth="1.6" vectorEffect="non-scaling-stroke" />
      ))}
    </svg>
  );
}
