// Re-fetches the dashboard's vendored front-end files from npm, at the versions pinned by
// package-lock.json, into ../assets/vendor (which is committed and embedded in the binary).
// Run `npm ci && node vendor.mjs` here after changing a version in package.json.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "assets", "vendor");
const files = [
  ["htmx.org/dist/htmx.min.js", "htmx.min.js"],
  // htmx ships it gzipped too: served as is to browsers that take gzip (a third of the size).
  ["htmx.org/dist/htmx.min.js.gz", "htmx.min.js.gz"],
  ["htmx-ext-sse/dist/sse.min.js", "htmx-sse.min.js"],
  ["uplot/dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["uplot/dist/uPlot.min.css", "uPlot.min.css"],
];
mkdirSync(target, { recursive: true });
for (const [from, to] of files) {
  copyFileSync(join(here, "node_modules", from), join(target, to));
  console.log(`${from} -> assets/vendor/${to}`);
}
