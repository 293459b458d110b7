import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import type { Plugin } from "vite";
import { defineConfig } from "vitest/config";

const ROOT = fileURLToPath(new URL(".", import.meta.url));

const OUT_DIR = "../src/football_realtime/static";
// What the build is made of: src/football_realtime tests this hash against the sources
// so a committed build can never silently lag behind the code.
const INPUTS = [
  "index.html",
  "package.json",
  "package-lock.json",
  "vite.config.ts",
  "src",
  "public",
  // the client library is bundled in
  "../clients/js/package.json",
  "../clients/js/src",
];

function files(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((n) => !n.endsWith(".test.ts"))
    .flatMap((n) => files(join(path, n)));
}

export function sourceHash(root: string): string {
  const h = createHash("sha256");
  const rel = INPUTS.flatMap((p) => files(join(root, p))).map((f) => relative(root, f).split("\\").join("/"));
  for (const f of rel.sort()) {
    h.update(f);
    h.update("\0");
    h.update(readFileSync(join(root, f)));
    h.update("\0");
  }
  return h.digest("hex");
}

function buildInfo(): Plugin {
  return {
    name: "build-info",
    apply: "build",
    closeBundle() {
      const info = { source_sha256: sourceHash(ROOT), inputs: INPUTS };
      writeFileSync(join(ROOT, OUT_DIR, "build-info.json"), JSON.stringify(info, null, 2) + "\n");
    },
  };
}

const backend = process.env.DEMO_BACKEND ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [buildInfo()],
  esbuild: { jsx: "automatic" },
  // one React, also for @football-realtime/client/react linked from ../clients/js
  resolve: { dedupe: ["react", "react-dom"] },
  build: {
    outDir: OUT_DIR,
    emptyOutDir: true,
    target: "es2020",
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      "/realtime": { target: backend, ws: true },
      "/demo": { target: backend },
    },
  },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
