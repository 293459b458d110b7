// End-to-end: `football-realtime demo` in a real headless Chromium (Debian's chromium,
// driven by playwright-core). The page loads, connects, shows a score change and a
// probability update, a league filter narrows what is shown (and the server's
// subscription), a reload during goals shows them in the feed (durable session), and
// after the service restarts the page reconnects by itself.
//
// Env: PYTHON (interpreter with football_realtime installed), CHROMIUM (default
// /usr/bin/chromium), ARTIFACTS (screenshot folder, default ../artifacts),
// E2E_UNIT (scales every timeout).

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env.PYTHON ?? "python3";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = resolve(process.env.ARTIFACTS ?? join(HERE, "..", "..", "artifacts"));
const UNIT = Number(process.env.E2E_UNIT ?? "1");
const T = (ms) => ms * UNIT;
const ADMIN = "e2e-admin-token";
/** The free viewer's match feed lags this many seconds (demo --free-delay). */
const FREE_DELAY = 4;
const started = Date.now();

function log(msg) {
  console.log(`[e2e +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

async function waitHealthy(base, timeout) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`${base}/realtime/health`);
      if (r.ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("demo did not become healthy");
}

function startDemo(port) {
  const proc = spawn(
    PYTHON,
    ["-m", "football_realtime", "demo", "--host", "127.0.0.1", "--port", String(port), "--speed", "600", "--seed", "7", "--matches", "6", "--free-delay", String(FREE_DELAY)],
    {
      env: {
        ...process.env,
        REALTIME_ADMIN_TOKEN: ADMIN,
        REALTIME_JWT_SECRET: "e2e-secret-e2e-secret-e2e-secret-0123",
        REALTIME_LOG_LEVEL: "warning",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (out += d));
  proc.output = () => out;
  return proc;
}

function stopDemo(proc) {
  return new Promise((res) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return res();
    const kill = setTimeout(() => proc.kill("SIGKILL"), T(8000));
    proc.once("exit", () => {
      clearTimeout(kill);
      res();
    });
    proc.kill("SIGTERM");
  });
}

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
let demo = startDemo(port);
let browser;
const consoleErrors = [];
let restarting = false;
let failed = false;

try {
  await waitHealthy(base, T(15000));
  log(`demo up on ${base}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, locale: "zh-CN" });
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const text = m.text();
    // While the service is down, Chromium itself logs each refused connection attempt.
    if (restarting && /ERR_CONNECTION_REFUSED|WebSocket connection to .* failed|Failed to load resource/.test(text)) return;
    consoleErrors.push(text);
  });
  page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));

  const t0 = Date.now();
  await page.goto(`${base}/?lang=zh`, { waitUntil: "load" });
  await page.waitForSelector('[data-testid="conn-status"][data-phase="live"]', { timeout: T(10000) });
  const nav = await page.evaluate(() => {
    const n = performance.getEntriesByType("navigation")[0];
    const bytes = performance.getEntriesByType("resource").reduce((a, r) => a + (r.transferSize || 0), n.transferSize || 0);
    return { dcl: Math.round(n.domContentLoadedEventEnd), load: Math.round(n.loadEventEnd), kb: Math.round(bytes / 1024) };
  });
  log(`page loaded (DOMContentLoaded ${nav.dcl} ms, load ${nav.load} ms, ${nav.kb} KB); live ${Date.now() - t0} ms after navigation`);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="match-card"]').length >= 4, null, { timeout: T(10000) });

  // A score change and a probability update, as they happen.
  const snap = () =>
    page.$$eval('[data-testid="match-card"]', (cards) =>
      Object.fromEntries(
        cards.map((c) => [
          c.dataset.matchId,
          {
            score: c.querySelector('[data-testid="score"]')?.textContent ?? "",
            prob: c.querySelector('[data-testid="prob-home"]')?.textContent ?? "",
          },
        ]),
      ),
    );
  const before = await snap();
  await page.waitForFunction(
    (b) =>
      [...document.querySelectorAll('[data-testid="match-card"]')].some((c) => {
        const prev = b[c.dataset.matchId];
        const s = c.querySelector('[data-testid="score"]')?.textContent;
        return prev && prev.score !== "vs" && s !== "vs" && s !== prev.score;
      }),
    before,
    { timeout: T(15000) },
  );
  log("score change shown");
  await page.waitForFunction(
    (b) =>
      [...document.querySelectorAll('[data-testid="match-card"]')].some((c) => {
        const prev = b[c.dataset.matchId];
        const p = c.querySelector('[data-testid="prob-home"]')?.textContent;
        return prev && prev.prob && p && p !== prev.prob;
      }),
    before,
    { timeout: T(15000) },
  );
  log("probability update shown");
  // The browser offered permessage-deflate and the server took it: the live events it
  // shows arrived as shared compressed frames (messages compressed once each, counted).
  const compression = (await (await fetch(`${base}/realtime/stats`)).json()).compression;
  if (compression.mode !== "shared" || !(compression.messages_compressed > 0)) {
    throw new Error(`no compressed frames sent to the browser: ${JSON.stringify(compression)}`);
  }
  log(`compressed: ${compression.messages_compressed} messages, ${compression.bytes_saved_per_copy} bytes saved per copy`);
  await page.waitForSelector('[data-testid="feed"] li[data-type="match_score_changed"]', { timeout: T(5000) });

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "dashboard.png") });

  // A league filter narrows the cards and the server-side subscription.
  const all = await page.$$eval('[data-testid="match-card"]', (cs) => cs.map((c) => c.dataset.league));
  const league = all[0];
  check(new Set(all).size > 1, `several leagues on show (${all})`);
  await page.click(`[data-testid="filters"] button[data-league="${league}"]`);
  await page.waitForFunction(
    (lg) => {
      const cards = [...document.querySelectorAll('[data-testid="match-card"]')];
      return cards.length > 0 && cards.every((c) => c.dataset.league === lg);
    },
    league,
    { timeout: T(5000) },
  );
  await page.waitForFunction(
    (lg) => {
      const el = document.querySelector('[data-testid="sub-matches"]');
      return el?.dataset.acked === "yes" && JSON.parse(el.dataset.filters || "{}").leagues?.join() === lg;
    },
    league,
    { timeout: T(5000) },
  );
  const connectionId = await page.getAttribute('[data-testid="conn-status"]', "title");
  const detail = await (await fetch(`${base}/realtime/connections/${connectionId}`, { headers: { Authorization: `Bearer ${ADMIN}` } })).json();
  const subs = detail.subscriptions ?? [];
  const matchSub = subs.find((s) => s.subscription_type === "matches");
  check(matchSub && JSON.stringify(matchSub.filters.leagues) === JSON.stringify([league]), `server holds the league filter: ${JSON.stringify(subs)}`);
  const shown = await page.$$eval('[data-testid="match-card"]', (cs) => cs.length);
  check(shown < all.length, `filter narrowed ${all.length} cards to ${shown}`);
  log(`filter ${league}: ${all.length} -> ${shown} cards, server subscription narrowed`);
  await page.click('[data-testid="filters"] button[data-league=""]');
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="match-card"]').length > n, shown, { timeout: T(5000) });

  // The free viewer's tier gets match events FREE_DELAY seconds late: the switch says so,
  // and a goal published now shows on its card no earlier than that.
  const freeScoreLags = async () => {
    await page.waitForSelector(`[data-testid="tier-delay-note"][data-delay="${FREE_DELAY}"]`, { timeout: T(5000) });
    const card = await page.$eval('[data-testid="match-card"]', (c) => ({ id: Number(c.dataset.matchId), league: c.dataset.league }));
    const tag = `LATE${Date.now() % 1000000}`;
    const t0 = Date.now();
    const r = await fetch(`${base}/realtime/broadcast`, {
      method: "POST",
      headers: { Authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({
        event_type: "match_score_changed",
        data: { match_id: card.id, league: card.league, home_score: 9, away_score: 0, scoring_team: "home", scoring_player: tag, minute: 50 },
      }),
    });
    check(r.ok, `broadcast a goal: HTTP ${r.status}`);
    await page.waitForFunction(
      (tg) => [...document.querySelectorAll('[data-testid="feed"] li[data-type="match_score_changed"]')].some((li) => li.textContent.includes(tg)),
      tag,
      { timeout: T(15000) + FREE_DELAY * 1000, polling: 50 },
    );
    const lag = Date.now() - t0;
    check(lag >= FREE_DELAY * 1000 - 100, `the free viewer's score lags ${FREE_DELAY} s (shown after ${lag} ms)`);
    log(`free viewer: the goal shown ${lag} ms after it was published (tier delay ${FREE_DELAY} s)`);
  };

  // The viewer switch: a free viewer's own token and connection, then back to premium.
  const connOf = async () => {
    const id = await page.getAttribute('[data-testid="conn-status"]', "title");
    const r = await fetch(`${base}/realtime/connections/${id}`, { headers: { Authorization: `Bearer ${ADMIN}` } });
    return r.ok ? await r.json() : null;
  };
  for (const tier of ["free", "premium"]) {
    await page.click(`[data-testid="tier-switch"] button[data-tier="${tier}"]`);
    await page.waitForFunction(
      (t) => {
        const el = document.querySelector('[data-testid="conn-status"]');
        return el?.dataset.phase === "live" && el.title && document.querySelector("footer")?.textContent?.includes(`viewer-${t}-`);
      },
      tier,
      { timeout: T(10000) },
    );
    const detail = await connOf();
    check(detail?.user_id?.startsWith(`viewer-${tier}-`), `connected as a ${tier} viewer: ${JSON.stringify(detail)}`);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="match-card"]').length >= 4, null, { timeout: T(10000) });
    if (tier === "free") await freeScoreLags();
  }
  log("switched to a free viewer and back, each on its own connection");

  // A reload while goals are scored: the page's durable session resumes, and the feed
  // shows the goals published while no page was connected (the snapshot's own feed does
  // not have them: they come from the admin API, not the simulation).
  const card = await page.$eval('[data-testid="match-card"]', (c) => ({ id: Number(c.dataset.matchId), league: c.dataset.league }));
  const tag = `E2E${Date.now() % 1000000}`;
  const stats = async () => (await fetch(`${base}/realtime/stats`)).json();
  const resumedBefore = (await stats()).sessions_resumed;
  let release;
  const gate = new Promise((r) => (release = r));
  // Hold the reloaded page's scripts until the goals are in: no page is connected then.
  await page.route("**/assets/**", async (route) => {
    await gate;
    await route.continue();
  });
  const reloading = page.reload({ waitUntil: "load", timeout: T(20000) });
  const deadline = Date.now() + T(10000);
  while ((await stats()).sessions_active !== 0) {
    check(Date.now() < deadline, "the reloading page's connection closed");
    await new Promise((r) => setTimeout(r, 50));
  }
  for (const [n, who] of [[1, "A"], [2, "B"]]) {
    const r = await fetch(`${base}/realtime/broadcast`, {
      method: "POST",
      headers: { Authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({
        event_type: "match_score_changed",
        data: { match_id: card.id, league: card.league, home_score: 10 + n, away_score: 0, scoring_team: "home", scoring_player: `${tag}-${who}`, minute: 80 + n },
      }),
    });
    check(r.ok, `broadcast goal ${who}: HTTP ${r.status}`);
  }
  log(`two goals published while the page reloads (match ${card.id})`);
  release();
  await reloading;
  await page.unroute("**/assets/**");
  await page.waitForSelector('[data-testid="conn-status"][data-phase="live"]', { timeout: T(10000) });
  await page.waitForFunction(
    (tg) => {
      const text = [...document.querySelectorAll('[data-testid="feed"] li[data-type="match_score_changed"]')].map((li) => li.textContent).join("|");
      return text.includes(`${tg}-A`) && text.includes(`${tg}-B`);
    },
    tag,
    { timeout: T(10000) },
  );
  check((await stats()).sessions_resumed === resumedBefore + 1, "the reload resumed the session");
  log("after the reload the feed shows both goals scored during it (session resumed)");

  // The service restarts; the page reconnects and goes live again by itself.
  const beforeRestart = await page.getAttribute('[data-testid="conn-status"]', "title");
  restarting = true;
  await stopDemo(demo);
  log("service stopped");
  await page.waitForSelector('[data-testid="conn-status"]:not([data-phase="live"])', { timeout: T(5000) });
  const phaseDown = await page.getAttribute('[data-testid="conn-status"]', "data-phase");
  demo = startDemo(port);
  await waitHealthy(base, T(15000));
  log(`service restarted (page was "${phaseDown}")`);
  await page.waitForSelector('[data-testid="conn-status"][data-phase="live"][data-reconnects="1"]', { timeout: T(15000) });
  restarting = false;
  const newConnection = await page.getAttribute('[data-testid="conn-status"]', "title");
  check(newConnection && newConnection !== beforeRestart, "a new connection after the restart");
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="match-card"]').length >= 4, null, { timeout: T(10000) });
  const received = async () => page.$eval('[data-testid="subscriptions"] h3 .muted', (e) => Number(e.textContent));
  const n0 = await received();
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid="subscriptions"] h3 .muted')?.textContent) > n + 5, n0, { timeout: T(10000) });
  log("reconnected and live again");
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-after-restart.png") });
  check(consoleErrors.length === 0, `no console errors, got: ${consoleErrors.join(" | ")}`);
  log(`passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (err) {
  failed = true;
  console.error(String(err?.stack ?? err));
  console.error("console errors:", consoleErrors);
  console.error("demo output:\n" + demo.output().slice(-4000));
  try {
    const pages = browser?.contexts().flatMap((c) => c.pages()) ?? [];
    if (pages[0]) {
      mkdirSync(ARTIFACTS, { recursive: true });
      await pages[0].screenshot({ path: join(ARTIFACTS, "dashboard-failure.png") });
    }
  } catch {}
} finally {
  await browser?.close().catch(() => undefined);
  await stopDemo(demo);
}
process.exit(failed ? 1 : 0);
