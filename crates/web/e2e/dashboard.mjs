// The dashboard in a real browser: headless Chromium (Debian's), driven by playwright-core,
// against a real `coinsensei up` that the Rust side started (crates/coinsensei/tests/
// dashboard.rs for the test, benches/dashboard.rs for the figures). Exits non-zero on the
// first failed check. Prints one JSON line with what it measured.
//
// Environment: BASE_URL, OPERATOR_TOKEN, VIEWER_TOKEN, WORKER (a running worker's id),
// FAILED_JOB (a failed job's id), ARTIFACTS (where screenshots go), CHROMIUM (the browser),
// DEPOSIT (a credited deposit the harness reverses at `REVERSE_DEPOSIT`), NODE_MODULES (where playwright-core is installed), MODE (`test` or `bench`), CLICKS (bench).
// In test mode, the script prints `RESTART` and waits for a line on stdin once the server
// has been restarted (and, while it was down, `ethereum-deposit-1` was stopped through the
// store), to check that the page reconnects by itself and shows what changed meanwhile (it
// prints `STOP_SERVER` first and waits for a line once the server is down, to check that a
// click made meanwhile says it was not sent, then `RESTART`); it prints `FAIL_ANOTHER` and
// waits for a line once one more job of the `reports` queue has failed (its id on that
// line), to check that an opened error history stays open when the table is sent again; and
// it prints `REVOKE` and waits for a line once REVOKED_TOKEN has been revoked, to check that
// an open page goes to the login page; and it prints `MOVE_WITHDRAWAL` and waits for a line
// once withdrawal WITHDRAWAL (pending, the newest) has been moved to `broadcast` through the
// store, to check that the withdrawals page shows the move without a reload; and it prints
// `MINE_BLOCK` and waits for a line once the configured regtest bitcoind (in initial block
// download until then) has mined a block, to check that the Health page shows the node's
// sync lag turn healthy without a reload.

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`set ${name}`);
  return value;
};
const require = createRequire(join(env("NODE_MODULES"), "noop.js"));
const { chromium } = require("playwright-core");

const base = env("BASE_URL");
const mode = env("MODE", "test");
const artifacts = env("ARTIFACTS");
const worker = env("WORKER", "tron-withdrawal-1");
mkdirSync(artifacts, { recursive: true });

const WAIT = 15_000;
// A change shows in an open page within a second (DESIGN.md §7): measured by the
// dashboard benchmark, not asserted here. This bound only says "live, without a reload",
// with room for a machine that also runs the chaos, compose and browser tests at once.
const FAST = 5_000;
const check = (ok, message) => {
  if (!ok) throw new Error(`check failed: ${message}`);
};
const stdinLines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => stdinLines.once("line", resolve));

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const result = {};
let failureContext = null;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  failureContext = context;
  // Script errors, console errors and Content-Security-Policy violations fail the test.
  // Failed loads are expected only while the server is down or refuses on purpose.
  const pageErrors = [];
  let failedLoadsExpected = false;
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`);
    });
  });
  const watch = (page) => {
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const text = message.text();
      // (htmx logs a failed event stream as the bare error event, "[object Event]", and a
      // refused action as "Response Status Error Code ...".)
      const failedLoad = /Failed to load resource|ERR_CONNECTION_REFUSED|EventSource|MIME type|^\[object Event\]$|^htmx:(sendError|responseError|afterRequest)|^Response Status Error Code/.test(text);
      if (failedLoad && failedLoadsExpected) return;
      pageErrors.push(`console: ${text}`);
    });
  };
  const page = await context.newPage();
  watch(page);

  const login = async (token) => {
    await page.goto(`${base}/`);
    check(new URL(page.url()).pathname === "/login", `not logged in goes to /login, got ${page.url()}`);
    await page.getByLabel("API token").fill(token);
    await button("Log in").click();
    await page.waitForURL(`${base}/`);
    await page.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
  };
  const button = (name) => page.getByRole("button", { name, exact: true });
  // A destructive action asks first, in the page's dialog, naming what it will do; "Yes"
  // sends it.
  const confirmed = async (name, names, tab = page) => {
    await tab.getByRole("button", { name, exact: true }).click();
    const dialog = tab.locator("dialog#confirm[open]");
    await dialog.waitFor({ timeout: WAIT });
    const question = await dialog.locator("#confirm-text").textContent();
    check(question.includes(names), `the confirmation names ${names}: ${question}`);
    await tab.locator("#confirm-yes").click();
  };
  // Nothing horizontal scrolls the page itself at this width (tables scroll in their box).
  const noPageOverflow = async (what) => {
    const [scroll, width, wide] = await page.evaluate(() => [
      document.documentElement.scrollWidth,
      window.innerWidth,
      // The outermost elements that stick out, to name in the failure.
      [...document.querySelectorAll("body *")]
        .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1 && !el.closest(".scroll"))
        .slice(0, 3)
        .map((el) => `${el.tagName.toLowerCase()}.${el.className}`),
    ]);
    check(scroll <= width, `${what}: the page is ${scroll} px wide in a ${width} px viewport (${wide})`);
  };
  const badge = (id) => page.locator(`#w-${id} .badge`);
  const waitBadge = (id, status, timeout = WAIT) =>
    page.waitForFunction(
      ([id, status]) => document.querySelector(`#w-${id} .badge`)?.textContent === status,
      [id, status],
      { timeout, polling: "raf" },
    );

  if (mode === "bench") {
    // Bytes for the workers page: everything the browser fetched to show it (the event
    // stream excepted: it never finishes), as sent on the wire (headers included).
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
    await login(env("OPERATOR_TOKEN"));
    const bytes = new Map();
    cdp.on("Network.loadingFinished", (event) => bytes.set(event.requestId, event.encodedDataLength));
    await page.reload();
    await page.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
    await page.waitForLoadState("networkidle").catch(() => {});
    result.workers_on_page = await page.locator("article.card").count();
    result.workers_page_bytes = [...bytes.values()].reduce((a, b) => a + b, 0);
    result.workers_page_requests = bytes.size;
    await cdp.send("Network.setCacheDisabled", { cacheDisabled: false });

    // Click Stop -> the badge says `stopped`, then Start -> `running`, CLICKS times.
    await waitBadge(worker, "running");
    const clicks = Number(env("CLICKS", "25"));
    const latencies = [];
    // The stream sends the card again at every heartbeat; a click that lands as its button
    // is replaced does nothing, so a click that did not take is made again (the latency is
    // timed from "Yes" only).
    const until = async (name, done) => {
      for (let attempt = 0; attempt < 5; attempt++) {
        await button(name).click();
        if (await done().then(() => true, () => false)) return;
      }
      throw new Error(`${name} did not take`);
    };
    for (let i = 0; i < clicks; i++) {
      // Stop asks first: the time runs from "Yes" to the badge.
      await until(`Stop ${worker}`, () => page.locator("dialog#confirm[open]").waitFor({ timeout: 2_000 }));
      const started = await page.evaluate(() => performance.now());
      await page.locator("#confirm-yes").click();
      await waitBadge(worker, "stopped");
      const ended = await page.evaluate(() => performance.now());
      latencies.push(ended - started);
      await until(`Start ${worker}`, () => waitBadge(worker, "running", 3_000));
    }
    latencies.sort((a, b) => a - b);
    const pct = (p) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)];
    result.clicks = clicks;
    result.stop_to_stopped_ms = { p50: pct(50), p99: pct(99), max: latencies.at(-1), min: latencies[0] };
  } else {
    // Log in as an operator and see the workers, live.
    await login(env("OPERATOR_TOKEN"));
    await page.screenshot({ path: join(artifacts, "login-then-workers.png") });
    await waitBadge(worker, "running");
    check(await page.locator("article.card").count() >= 2, "the workers are listed");
    const card = page.locator(`#w-${worker}`);
    check((await card.locator(".meta").textContent()).includes("•"), "chain • type");
    check(await button(`Start ${worker}`).isDisabled(), "Start is disabled on a running worker");
    // A marker that a reload would wipe out.
    await page.evaluate(() => { window.notReloaded = true; });

    // Stop asks first, naming the worker; cancelling sends nothing.
    const posts = [];
    page.on("request", (request) => { if (request.method() === "POST") posts.push(request.url()); });
    await button(`Stop ${worker}`).click();
    const dialog = page.locator("dialog#confirm[open]");
    await dialog.waitFor({ timeout: WAIT });
    check((await dialog.textContent()).includes(`Stop worker ${worker}?`), "the dialog names the action and the worker");
    check((await dialog.locator("#confirm-why").textContent()).includes("takes no new work"), "and says what it does");
    await page.screenshot({ path: join(artifacts, "confirm.png") });
    await page.getByRole("button", { name: "Cancel", exact: true }).click();
    await dialog.waitFor({ state: "detached", timeout: WAIT }).catch(() => {});
    check(!(await page.locator("dialog#confirm").evaluate((d) => d.open)), "the dialog closed");
    check(posts.length === 0, `cancelling sent nothing: ${posts}`);
    check(await badge(worker).textContent() === "running" && await button(`Stop ${worker}`).isEnabled(), "cancelling changed nothing");

    // Stop it: the badge turns `stopped` without a reload, within a second or so; Stop is
    // then disabled.
    await confirmed(`Stop ${worker}`, worker);
    await waitBadge(worker, "stopped", FAST);
    check(posts.length === 1 && posts[0].endsWith(`/workers/${worker}/stop`), `Yes sent the stop: ${posts}`);
    check(await page.evaluate(() => window.notReloaded === true), "no reload");
    check(await button(`Stop ${worker}`).isDisabled(), "Stop is disabled once stopped");
    await page.screenshot({ path: join(artifacts, "workers.png") });

    // Start it again.
    await button(`Start ${worker}`).click();
    await waitBadge(worker, "running", FAST);

    // The stream sends the card again (each heartbeat, every second here) while the dialog is
    // open: "Yes" still stops the worker.
    await page.locator(`#w-${worker} button`).nth(1).evaluate((el) => { el.dataset.asked = "1"; });
    await button(`Stop ${worker}`).click();
    await page.locator("dialog#confirm[open]").waitFor({ timeout: WAIT });
    await page.waitForFunction((id) => !document.querySelector(`#w-${id} button[data-asked]`), worker, { timeout: WAIT, polling: 50 });
    await page.locator("#confirm-yes").click();
    await waitBadge(worker, "stopped", FAST);
    await button(`Start ${worker}`).click();
    await waitBadge(worker, "running", FAST);
    check(await page.evaluate(() => window.notReloaded === true), "no reload");

    // Filters, kept by the live stream: a worker that enters a filter appears and one that
    // leaves it goes, with the count, without a reload.
    const shownCount = async (tab) => Number((await tab.locator("p.count").textContent()).split(" ")[0]);
    await page.getByLabel("Status").selectOption("stopped");
    await page.waitForURL(/status=stopped/);
    await page.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
    check(await page.locator("article.card").count() === 0, "no stopped worker now");
    await page.evaluate(() => { window.notReloaded = true; });
    const second = await context.newPage();
    watch(second);
    await second.goto(`${base}/?status=running`);
    await second.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
    const running = await second.locator("article.card").count();
    check(running >= 2 && (await shownCount(second)) === running, "both workers run, and are counted");
    await confirmed(`Stop ${worker}`, worker, second);
    await second.locator(`#w-${worker}`).waitFor({ state: "detached", timeout: FAST });
    check((await shownCount(second)) === running - 1, "the count follows");
    await page.bringToFront();
    await waitBadge(worker, "stopped", FAST);
    check((await shownCount(page)) === 1, "the stopped worker is counted");
    await button(`Start ${worker}`).click();
    await page.locator(`#w-${worker}`).waitFor({ state: "detached", timeout: FAST });
    await page.locator("p.empty").waitFor({ timeout: FAST });
    check(await page.evaluate(() => window.notReloaded === true), "no reload");
    await second.bringToFront();
    await second.locator(`#w-${worker} .badge`).waitFor({ timeout: FAST });
    // The card came back whole: its buttons act again.
    check(await second.getByRole("button", { name: `Start ${worker}`, exact: true }).isDisabled(), "Start disabled again");
    await second.close();
    await page.bringToFront();
    await page.goto(`${base}/`);

    // The worker's page: health, charts, audit trail.
    await page.getByRole("link", { name: worker, exact: true }).click();
    await page.waitForURL(`${base}/workers/${worker}`);
    await page.getByRole("heading", { name: "Health" }).waitFor();
    await page.locator("#health td.ok").first().waitFor({ timeout: WAIT });
    await page.locator(".chart canvas").first().waitFor({ timeout: WAIT });
    // The charts fill as the control plane samples (every heartbeat: 1 s here), one point a
    // minute: three samples fold into one point (two if a minute turned meanwhile).
    await page.waitForFunction(() => Number(document.querySelector("[data-charts]")?.dataset.foldedMax) >= 3, null, { timeout: WAIT });
    const charts = page.locator("[data-charts]");
    check(Number(await charts.getAttribute("data-points")) <= 2, "samples are aggregated per minute");
    check(await charts.getAttribute("data-range") === "3600", "the last hour by default");
    // Axes start at zero: a steady memory line does not fill the chart with its jitter.
    await page.locator("[data-series=memory][data-y-min]").waitFor({ timeout: WAIT });
    check(await page.locator("[data-series=memory]").getAttribute("data-y-min") === "0", "the memory axis starts at zero");
    // A compact legend only where there is more than one line.
    check(await page.locator("[data-series=memory] .u-legend").count() === 0 || await page.locator("[data-series=memory] .u-legend").isHidden(), "no legend for one line");
    const legend = page.locator("[data-series=jobs] .u-legend");
    const legendBox = await legend.boundingBox();
    check(legendBox && legendBox.height <= 24, `the legend of two lines is one short row: ${JSON.stringify(legendBox)}`);
    check((await legend.innerText()).replace(/\s+/g, "") === "processedfailed", `the legend names the lines, no time and no values: ${await legend.innerText()}`);
    await page.getByRole("link", { name: "24 h", exact: true }).click();
    await page.waitForURL(/range=24h/);
    await page.locator(".chart canvas").first().waitFor({ timeout: WAIT });
    check(await charts.getAttribute("data-range") === "86400", "the last 24 hours");
    check(await page.getByRole("link", { name: "24 h", exact: true }).getAttribute("aria-current") === "true", "the range chosen is marked");
    check((await page.locator("table.audit").textContent()).includes("worker.stop"), "the audit trail shows the stop");
    await page.screenshot({ path: join(artifacts, "worker.png"), fullPage: true });

    check(await page.locator(".scroll > table.audit").count() === 1, "the worker's audit table scrolls in its own box");

    // Queues: find the failed job; its opened error history stays open when the table is
    // sent again (another job fails).
    await page.getByRole("link", { name: "Queues" }).click();
    await page.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
    const job = env("FAILED_JOB");
    const row = page.locator(`#job-${job}`);
    await row.waitFor();
    check((await row.textContent()).includes("connection refused"), "the job's error is shown");
    await row.locator("summary").click();
    check(await row.locator("details").evaluate((d) => d.open), "the error history opened");
    process.stdout.write("FAIL_ANOTHER\n");
    const another = (await nextLine()).trim();
    await page.locator(`#job-${another}`).waitFor({ timeout: FAST });
    check(await page.locator(`#job-${job} details`).evaluate((d) => d.open), "the opened error history stayed open across the live update");
    await page.screenshot({ path: join(artifacts, "queues.png"), fullPage: true });

    // The job's page: arguments, attempts, error history; found by id and by kind.
    await page.getByLabel("Find a job").fill(job);
    await button("Find").click();
    await page.waitForURL(`${base}/jobs/${job}`);
    check((await page.locator("#job-attempts").textContent()).startsWith("1 of 1"), "the job page shows its attempts");
    check((await page.locator("ol.errors").textContent()).includes("connection refused"), "the job page shows its error history");
    check((await page.locator("#job-args").textContent()).includes('"n": 1'), "the job page shows its arguments, formatted");
    check((await page.locator("#job-worker").textContent()).length > 0, "the job page says which worker ran it, or why it cannot");
    await page.screenshot({ path: join(artifacts, "job.png"), fullPage: true });
    await page.getByLabel("Find a job").fill("noop");
    await button("Find").click();
    await page.waitForURL(/\/jobs\?q=noop/);
    check(await page.locator(`table.jobs #job-${job}`).count() === 1 && await page.locator(`table.jobs #job-${another}`).count() === 1, "search by kind lists both failed jobs");
    await page.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Queues" }).click();
    await row.waitFor();

    // Retry asks first; then the row goes.
    await confirmed(`Retry job ${job}`, `Retry job ${job}`);
    await row.waitFor({ state: "detached", timeout: WAIT });

    // The audit log names the token for each action.
    await page.getByRole("link", { name: "Audit log" }).click();
    const log = await page.locator("table.audit").textContent();
    for (const action of ["worker.stop", "worker.start", "job.retry"]) check(log.includes(action), `${action} in the audit log`);
    check(log.includes(":e2e-operator"), "the actor is the token");
    await page.screenshot({ path: join(artifacts, "audit.png"), fullPage: true });

    // Health: each worker's and chain's checks with status, reason and value; the autoscaler's
    // policy and decisions; a node that catches up shows it live.
    await page.getByRole("link", { name: "Health" }).click();
    await page.waitForURL(`${base}/health`);
    await page.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
    check(await page.locator('nav a[aria-current=page]').textContent() === "Health", "the nav marks the Health page");
    const workerChecks = page.locator(`#workers-checks tbody[data-subject="${worker}"]`);
    for (const name of ["heartbeat", "memory", "jobs", "error_rate"]) {
      check(await workerChecks.locator(`tr[data-check=${name}]`).count() === 1, `the worker's ${name} check is shown`);
    }
    const heartbeatRow = await workerChecks.locator("tr[data-check=heartbeat]").textContent();
    check(heartbeatRow.includes("last heartbeat") && heartbeatRow.includes("milliseconds"), `the heartbeat check's reason and value: ${heartbeatRow}`);
    const bitcoin = 'tbody[data-subject=bitcoin]';
    const lagRow = page.locator(`#chains-checks ${bitcoin} tr[data-check=sync_lag]`);
    check(await lagRow.getAttribute("data-status") === "unhealthy", "a node in initial block download is behind");
    check((await lagRow.textContent()).includes("initial block download"), "and the reason says so");
    const networkRow = await page.locator(`#chains-checks ${bitcoin} tr[data-check=network]`).textContent();
    check(networkRow.includes("on regtest") && networkRow.includes("1 match"), `the node is on the configured network: ${networkRow}`);
    check(await page.locator(`#chains-checks ${bitcoin} tr[data-check=node_reachable]`).getAttribute("data-status") === "healthy", "the node is reachable");
    const scaled = page.locator('article.scaled[data-queue="tron.withdrawal"]');
    const policy = await scaled.textContent();
    check(policy.includes("1 to 10 workers, up by 2 above depth 50, down by 1 below 5, cooldown 300 s"), `the autoscaler's policy: ${policy}`);
    const decision = await scaled.locator("table.decisions tbody tr").first().textContent();
    check(decision.includes("autoscaler.scale_up") && decision.includes("1 → 3") && decision.includes("80"), `a decision: ${decision}`);
    await page.screenshot({ path: join(artifacts, "health.png"), fullPage: true });
    await page.evaluate(() => { window.notReloaded = true; });
    process.stdout.write("MINE_BLOCK\n");
    await nextLine();
    await page.waitForFunction(
      (selector) => document.querySelector(selector)?.dataset.status === "healthy",
      `#chains-checks ${bitcoin} tr[data-check=sync_lag]`,
      { timeout: WAIT },
    );
    check(await page.evaluate(() => window.notReloaded === true), "the node's catching up showed without a reload");

    // Withdrawals: listed newest first in their states, amounts in the asset's unit; one that
    // a payer moves (through the store) shows its new state without a reload.
    const moving = env("WITHDRAWAL");
    await page.getByRole("link", { name: "Withdrawals" }).click();
    await page.waitForURL(`${base}/withdrawals`);
    await page.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
    const movingRow = page.locator(`#wd-${moving}`);
    check(await movingRow.locator(".badge").textContent() === "pending", "the newest withdrawal is pending");
    check((await page.locator("#withdrawals tbody tr").first().getAttribute("id")) === `wd-${moving}`, "newest first");
    for (const state of ["completed", "manual_review", "failed", "confirming", "canceled"]) {
      check(await page.locator(`#withdrawals .badge.${state}`).count() === 1, `a ${state} withdrawal is listed`);
    }
    check((await movingRow.textContent()).includes("42 USDT"), "the amount in the asset's unit");
    await page.screenshot({ path: join(artifacts, "withdrawals.png"), fullPage: true });
    await page.evaluate(() => { window.notReloaded = true; });
    process.stdout.write("MOVE_WITHDRAWAL\n");
    await nextLine();
    await page.waitForFunction(
      (id) => document.querySelector(`#wd-${id} .badge`)?.textContent === "broadcast",
      moving,
      { timeout: FAST, polling: "raf" },
    );
    check((await movingRow.locator("code[title]").last().getAttribute("title")) === "5e".repeat(32), "its txid is shown");
    check(await page.evaluate(() => window.notReloaded === true), "the move showed without a reload");
    // A filter, then the withdrawal's own page: its txid and its audit trail.
    await page.getByLabel("State").selectOption("broadcast");
    await page.waitForURL(/state=broadcast/);
    check(await page.locator("#withdrawals tbody tr").count() === 1, "one broadcast withdrawal");
    await page.getByRole("link", { name: moving, exact: true }).click();
    await page.waitForURL(`${base}/withdrawals/${moving}`);
    const detail = await page.locator("#withdrawal").textContent();
    check(detail.includes("5e".repeat(32)), "the withdrawal's page shows its txid");
    for (const action of ["withdrawal.create", "withdrawal.processing", "withdrawal.broadcast"]) check(detail.includes(action), `${action} in its audit trail`);
    await page.screenshot({ path: join(artifacts, "withdrawal.png"), fullPage: true });

    // Deposits: from the nav; the balances per chain and asset; an ignored deposit with its
    // reason; a credited one whose block leaves the chain (through the store) turns reversed
    // and highlighted without a reload.
    const doomed = env("DEPOSIT");
    await page.getByRole("link", { name: "Deposits" }).click();
    await page.waitForURL(`${base}/deposits`);
    const balances = await page.locator("#balances").textContent();
    check(balances.includes("ethereum") && balances.includes("2.500001"), `the deposit addresses' ETH by the ledger: ${balances}`);
    const ignored = await page.locator("#deposits tr[data-state=ignored]").first().textContent();
    check(ignored.includes("dust"), `an ignored deposit shows its reason: ${ignored}`);
    check(await page.locator(`#dep-${doomed}`).getAttribute("data-state") === "credited", "the watched deposit is credited");
    await page.evaluate(() => { window.notReloaded = true; });
    process.stdout.write("REVERSE_DEPOSIT\n");
    await nextLine();
    await page.waitForFunction(
      // (htmx settles the swapped row's class a moment after its content.)
      (id) => document.querySelector(`#dep-${id}`)?.classList.contains("reversed"),
      doomed,
      { timeout: FAST, polling: "raf" },
    );
    check(await page.locator(`#dep-${doomed}`).getAttribute("data-state") === "reversed", "the watched deposit is reversed");
    const [plain, marked] = await page.evaluate((id) => [
      getComputedStyle(document.querySelector("#deposits tr[data-state=credited]")).backgroundColor,
      getComputedStyle(document.querySelector(`#dep-${id}`)).backgroundColor,
    ], doomed);
    check(plain !== marked, `a reversed deposit is highlighted: ${plain} against ${marked}`);
    check((await page.locator(`#dep-${doomed}`).textContent()).includes("a person must look"), "a reversed deposit says what it needs");
    check(await page.evaluate(() => window.notReloaded === true), "the reversal showed without a reload");
    await page.getByLabel("State").selectOption("reversed");
    await page.waitForURL(/state=reversed/);
    check(await page.locator("#deposits tbody tr").count() === 1, "one reversed deposit");
    await page.screenshot({ path: join(artifacts, "deposits.png"), fullPage: true });

    // On a phone: no page scrolls sideways; wide tables scroll in their box with their first
    // column kept in view; JSON details read as indented lines, not a character a line.
    await page.setViewportSize({ width: 390, height: 844 });
    for (const path of ["/", `/workers/${worker}`, "/queues", "/withdrawals", `/withdrawals/${moving}`, "/deposits", "/health", "/audit", `/jobs/${job}`, "/jobs?q=noop"]) {
      await page.goto(`${base}${path}`);
      await noPageOverflow(path);
      // The server frees a left page's live slot at its next write, within a second: pace
      // the tour so it never holds more than a session's 4 at once.
      await page.waitForTimeout(1200);
    }
    await page.goto(`${base}/withdrawals`);
    await page.locator(`#wd-${moving} th`).waitFor();
    // (Measured in one go: the live stream may swap the table in between two steps.)
    const [scrolled, before, after] = await page.evaluate((id) => {
      const box = document.querySelector("#withdrawals .scroll");
      const x = () => document.querySelector(`#wd-${id} th`).getBoundingClientRect().x;
      const before = x();
      box.scrollLeft = 400;
      return [box.scrollLeft, before, x()];
    }, moving);
    check(scrolled > 0, "the withdrawals table scrolls in its box on a phone");
    check(Math.abs(after - before) < 2, `its first column stays in view: ${before} then ${after}`);
    await page.screenshot({ path: join(artifacts, "withdrawals-phone.png") });
    await page.goto(`${base}/audit`);
    const details = page.locator("#audit-rows td.details pre").first();
    check((await details.textContent()).includes("\n"), "JSON details are indented, a field a line");
    check((await details.boundingBox()).width >= 150, "JSON details get a readable width on a phone");
    await page.goto(`${base}/`);
    await page.screenshot({ path: join(artifacts, "workers-phone.png"), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });

    // One time format: UTC, with how long ago on hover.
    await page.goto(`${base}/audit`);
    const stamp = page.locator("#audit-rows time[datetime]").first();
    check(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/.test(await stamp.textContent()), "times are shown in UTC");
    await stamp.hover();
    check(/ ago$/.test(await stamp.getAttribute("title")), "how long ago shows on hover");

    // A favicon, served by the binary.
    const icon = await page.locator("link[rel=icon]").getAttribute("href");
    const iconAnswer = await page.request.get(`${base}${icon}`);
    check(iconAnswer.ok() && iconAnswer.headers()["content-type"].startsWith("image/svg+xml"), "the favicon is served");

    // A bad filter in the address: a styled page saying what is wrong, with a way back.
    failedLoadsExpected = true;
    const bad = await page.goto(`${base}/?status=sleepy`);
    failedLoadsExpected = false;
    check(bad.status() === 400, `a bad filter is 400, got ${bad.status()}`);
    check(await page.getByRole("heading", { name: "Bad address" }).count() === 1, "the error page has a heading");
    check((await page.locator("p.flash.error").textContent()).includes("status"), "it names the bad filter");
    check(await page.locator("header.top").evaluate((el) => getComputedStyle(el).display) === "flex", "it is styled");
    await page.screenshot({ path: join(artifacts, "bad-filter.png") });

    // Dark mode follows the system's preference.
    await page.goto(`${base}/`);
    const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const light = await background();
    await page.emulateMedia({ colorScheme: "dark" });
    const dark = await background();
    check(light !== dark, `dark mode changes the background: ${light} vs ${dark}`);
    await page.screenshot({ path: join(artifacts, "workers-dark.png") });
    await page.emulateMedia({ colorScheme: "light" });

    // More live pages than a session may hold: the one past the limit says why it is not
    // live (not "reconnecting" for ever), and goes live once another closes.
    failedLoadsExpected = true;
    const extra = [];
    for (let i = 0; i < 3; i++) {
      const tab = await context.newPage();
      watch(tab);
      await tab.goto(`${base}/audit`);
      await tab.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
      extra.push(tab);
    }
    const over = await context.newPage();
    watch(over);
    await over.goto(`${base}/audit`);
    await over.locator("#live[data-state=refused]").waitFor({ timeout: WAIT });
    const why = await over.locator("#live-why").textContent();
    check(why.includes("4 live dashboard pages") && why.includes("close one"), `the refusal is explained: ${why}`);
    await over.screenshot({ path: join(artifacts, "stream-limit.png") });
    await extra.pop().close();
    await over.locator("#live[data-state=live]").waitFor({ timeout: 20_000 });
    check(await over.locator("#live-why").isHidden(), "the explanation goes once live");
    for (const tab of [...extra, over]) await tab.close();
    // (The server frees a closed tab's slot at its next write, within a second: a tab opened
    // meanwhile may be refused once and retry, so refused loads stay expected until the
    // restart below has reconnected every page.)
    await page.bringToFront();

    // The control plane restarts, and while it is down the other worker is stopped: the
    // workers page and an audit log tab reconnect by themselves and show what is true, the
    // audit log with each entry once.
    const other = "ethereum-deposit-1";
    const auditTab = await context.newPage();
    watch(auditTab);
    await auditTab.goto(`${base}/audit`);
    await auditTab.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
    await page.bringToFront();
    await page.evaluate(() => { window.notReloaded = true; });
    await auditTab.evaluate(() => { window.notReloaded = true; });
    failedLoadsExpected = true;
    process.stdout.write("STOP_SERVER\n");
    await nextLine();
    await page.locator("#live[data-state=lost]").waitFor({ timeout: WAIT });
    // While not live the controls are dimmed, and a click says it was not sent.
    check(await button(`Stop ${worker}`).evaluate((el) => Number(getComputedStyle(el).opacity)) < 1, "controls are dimmed while not live");
    await confirmed(`Stop ${worker}`, worker);
    const unsent = page.locator(`#w-${worker} .action-note`);
    await unsent.waitFor({ timeout: WAIT });
    check((await unsent.textContent()).includes("Not sent"), "a click while the server is away says so beside the control");
    await page.screenshot({ path: join(artifacts, "not-sent.png") });
    process.stdout.write("RESTART\n");
    await nextLine();
    await page.locator("#live[data-state=live]").waitFor({ timeout: 30_000 });
    await auditTab.locator("#live[data-state=live]").waitFor({ timeout: 30_000 });
    await waitBadge(worker, "running");
    await waitBadge(other, "stopped");
    failedLoadsExpected = false;
    check(await page.evaluate(() => window.notReloaded === true), "reconnected without a reload");
    // (A tab in the background gets no animation frames: poll it by time.)
    await auditTab.waitForFunction(
      (other) => [...document.querySelectorAll("#audit-rows tr")].some((row) => row.textContent.includes("worker.stop") && row.textContent.includes(`worker:${other}`)),
      other,
      { timeout: WAIT, polling: 100 },
    );
    check(await auditTab.evaluate(() => window.notReloaded === true), "the audit tab reconnected without a reload");
    await page.bringToFront();
    await confirmed(`Stop ${worker}`, worker);
    await waitBadge(worker, "stopped", FAST);
    await button(`Start ${worker}`).click();
    await waitBadge(worker, "running", FAST);
    // The stop and start just made show in the audit tab, live, and no entry shows twice.
    await auditTab.waitForFunction(
      () => document.querySelectorAll("#audit-rows tr").length > 0 && document.querySelector("#audit-rows tr").textContent.includes("worker.start"),
      null,
      { timeout: WAIT, polling: 100 },
    );
    const auditIds = await auditTab.$$eval("#audit-rows tr", (rows) => rows.map((row) => row.id));
    check(new Set(auditIds).size === auditIds.length, `no audit entry twice: ${auditIds}`);
    await auditTab.close();

    // Log out; a viewer sees no enabled control, and the server refuses one anyway.
    await button("Log out").click();
    await page.waitForURL(`${base}/login`);
    await login(env("VIEWER_TOKEN"));
    for (const action of ["Start", "Stop", "Restart"]) {
      check(await button(`${action} ${worker}`).isDisabled(), `${action} disabled for a viewer`);
    }
    failedLoadsExpected = true;
    const refused = await page.evaluate(async (worker) => {
      const csrf = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRF-Token"];
      const answer = await fetch(`/workers/${worker}/stop`, { method: "POST", headers: { "X-CSRF-Token": csrf, "HX-Request": "true" } });
      return [answer.status, await answer.text()];
    }, worker);
    check(refused[0] === 403 && refused[1].includes("operator role"), `the server refuses a viewer: ${refused}`);
    // A refused action says why beside the control that was clicked (here a control enabled
    // by hand: a stale page would show one).
    // A heartbeat may send the card again while the dialog is open: "Yes" then acts on the
    // new card, whose Stop is disabled, and says the action no longer applies. That is the
    // stale-card rule, not the refusal: enable the new card's control and ask again.
    let noteText = "";
    for (let attempt = 0; attempt < 5; attempt++) {
      await page.locator(`#w-${worker} button`).nth(1).evaluate((el) => el.removeAttribute("disabled"));
      await confirmed(`Stop ${worker}`, worker);
      const note = page.locator(`#w-${worker} .action-note`);
      await note.waitFor({ timeout: FAST });
      noteText = await note.textContent();
      if (!noteText.includes("changed while you were asked")) break;
    }
    check(noteText.includes("operator role"), `the refusal shows beside the control: ${noteText}`);
    check(await page.locator("#flash").textContent() === "", "and not only at the top of the page");
    failedLoadsExpected = false;
    await page.screenshot({ path: join(artifacts, "viewer.png") });

    // The token of an open page is revoked: the page goes to the login page by itself.
    await button("Log out").click();
    await page.waitForURL(`${base}/login`);
    await login(env("REVOKED_TOKEN"));
    failedLoadsExpected = true;
    process.stdout.write("REVOKE\n");
    await nextLine();
    await page.waitForURL(`${base}/login`, { timeout: 5_000 });
    failedLoadsExpected = false;
    check(pageErrors.length === 0, `no script or console errors, no CSP violations in the pages: ${pageErrors}`);
    result.checks = "passed";
  }
} catch (error) {
  // What each open page showed when a check failed, to read beside the error.
  const pages = failureContext ? failureContext.pages() : [];
  for (let i = 0; i < pages.length; i++) {
    await pages[i].screenshot({ path: join(artifacts, `failure-${i}.png`) }).catch(() => {});
  }
  throw error;
} finally {
  await browser.close();
  stdinLines.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
