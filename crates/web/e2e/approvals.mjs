// Four eyes in the dashboard, in headless Chromium against a real `coinsensei up` that the
// Rust side started (crates/coinsensei/tests/dashboard.rs, `approvals_in_chromium`): two
// operator sessions approve a held withdrawal (each asked first, the dialog naming the
// withdrawal, its amount and its destination; the first one's page follows the second's
// approval live), its creator is refused (a disabled control, and the server's refusal beside
// a control enabled by hand), a rejection needs its reason (bounded in length) and fails the
// withdrawal, whose page then shows every decision; the destinations page lists a
// registration and an admin removes it. Exits non-zero on the first failed check and prints
// one JSON line at the end.
//
// Environment: BASE_URL, ALICE_TOKEN and BOB_TOKEN (operators), CAROL_TOKEN (the admin whose
// token created the held withdrawals), APPROVE (a held withdrawal's id), REJECT (another),
// DESTINATION (a registered destination's id), ARTIFACTS, CHROMIUM, NODE_MODULES.

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`set ${name}`);
  return value;
};
const require = createRequire(join(env("NODE_MODULES"), "noop.js"));
const { chromium } = require("playwright-core");

const base = env("BASE_URL");
const artifacts = env("ARTIFACTS");
const approveId = env("APPROVE");
const rejectId = env("REJECT");
const destination = env("DESTINATION");
mkdirSync(artifacts, { recursive: true });

const WAIT = 15_000;
// A change shows in an open page within a second (DESIGN.md §7); slack for a loaded machine.
const FAST = 2_000;
const check = (ok, message) => {
  if (!ok) throw new Error(`check failed: ${message}`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const pageErrors = [];
const contexts = [];
// One browser context per operator: separate cookies, so separate sessions.
const session = async (token) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  contexts.push(context);
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI} at ${event.sourceFile}:${event.lineNumber} on ${event.target && event.target.outerHTML ? event.target.outerHTML.slice(0, 200) : event.target}`);
    });
  });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  page.on("console", (message) => {
    // A refused action logs htmx's response error; that is what these checks provoke.
    if (message.type() === "error" && !/^Response Status Error Code|Failed to load resource/.test(message.text())) {
      pageErrors.push(`console: ${message.text()}`);
    }
  });
  await page.goto(`${base}/login`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await page.waitForURL(`${base}/`);
  await page.goto(`${base}/approvals`);
  await page.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
  return page;
};
const row = (page, id) => page.locator(`#held-${id}`);
const approvedText = (page, id) => row(page, id).locator("td.approved").textContent();
// When "Yes" was last clicked (node's clock), to time what follows.
let lastYes = 0;
// Clicks `name`, checks the dialog names what it must, then answers Yes.
const confirmed = async (page, name, names) => {
  await page.getByRole("button", { name, exact: true }).click();
  const dialog = page.locator("dialog#confirm[open]");
  await dialog.waitFor({ timeout: WAIT });
  const question = await dialog.locator("#confirm-text").textContent();
  for (const part of names) check(question.includes(part), `the confirmation names ${part}: ${question}`);
  lastYes = Date.now();
  await page.locator("#confirm-yes").click();
  return question;
};
const note = async (page, id) => {
  const element = row(page, id).locator(".action-note");
  await element.waitFor({ timeout: FAST });
  return element.textContent();
};
const result = {};
try {
  const alice = await session(env("ALICE_TOKEN"));
  // The held withdrawal, with what an operator needs to decide.
  const held = row(alice, approveId);
  await held.waitFor({ timeout: WAIT });
  const text = await held.textContent();
  for (const part of ["1500 USDT", "tron", "user:42/w:1", "e2e-carol", "0 of 2"]) {
    check(text.includes(part), `the row shows ${part}: ${text}`);
  }
  const to = await held.locator("code").getAttribute("title");
  check(to === "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7", `the destination in full on hover: ${to}`);
  check(/\d+ (s|min|h|d)/.test(await held.locator("time[data-ago]").textContent()), "its age");
  await alice.screenshot({ path: join(artifacts, "approvals.png") });

  // Approve asks first, naming the withdrawal, amount and destination; Cancel sends nothing.
  const posts = [];
  alice.on("request", (request) => { if (request.method() === "POST") posts.push(request.url()); });
  await alice.getByRole("button", { name: `Approve withdrawal ${approveId}`, exact: true }).click();
  await alice.locator("dialog#confirm[open]").waitFor({ timeout: WAIT });
  const why = await alice.locator("#confirm-why").textContent();
  check(why.includes("approval"), `the dialog says what approving does: ${why}`);
  await alice.screenshot({ path: join(artifacts, "approve-confirm.png") });
  await alice.getByRole("button", { name: "Cancel", exact: true }).click();
  check(posts.length === 0, `cancelling sent nothing: ${posts}`);
  check((await approvedText(alice, approveId)).includes("0 of 2"), "nothing changed");

  const question = await confirmed(alice, `Approve withdrawal ${approveId}`, [
    `withdrawal ${approveId}`, "1500 USDT", "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7",
  ]);
  result.confirmation = question;
  await alice.waitForFunction(
    (id) => document.querySelector(`#held-${id} td.approved`)?.textContent.includes("1 of 2"),
    approveId, { timeout: FAST, polling: "raf" });
  // From "Yes" to the row saying 1 of 2 (node's clock, Playwright's round trips included).
  result.approve_to_row_ms = Date.now() - lastYes;
  result.approvals_page_html_bytes = (await alice.content()).length;
  // The same token again counts once: its controls are now disabled, saying why.
  check(await alice.getByRole("button", { name: `Approve withdrawal ${approveId}`, exact: true }).isDisabled(), "approved once, Approve is disabled");
  check((await held.textContent()).includes("approved it already"), "and says why");
  // Even enabled by hand, the server counts it once (the row still says 1 of 2).
  await held.locator("button").first().evaluate((el) => el.removeAttribute("disabled"));
  await confirmed(alice, `Approve withdrawal ${approveId}`, [`withdrawal ${approveId}`]);
  await alice.waitForTimeout(500);
  check((await approvedText(alice, approveId)).includes("1 of 2"), "the same token twice counts once");

  // A second operator, in another session, approves: released, the row leaves both pages.
  const bob = await session(env("BOB_TOKEN"));
  check((await approvedText(bob, approveId)).includes("1 of 2"), "bob sees alice's approval");
  check((await approvedText(bob, approveId)).includes("e2e-alice"), "and who made it");
  await confirmed(bob, `Approve withdrawal ${approveId}`, [`withdrawal ${approveId}`, "1500 USDT"]);
  await row(bob, approveId).waitFor({ state: "detached", timeout: FAST });
  result.release_to_row_gone_ms = Date.now() - lastYes;
  await row(alice, approveId).waitFor({ state: "detached", timeout: FAST });
  // The other operator's open page follows the release too.
  result.release_to_other_page_ms = Date.now() - lastYes;

  // The creator's token: disabled, with the reason; the server refuses it anyway, beside
  // the control.
  const carol = await session(env("CAROL_TOKEN"));
  const approveByCarol = carol.getByRole("button", { name: `Approve withdrawal ${rejectId}`, exact: true });
  check(await approveByCarol.isDisabled(), "the creator's Approve is disabled");
  check((await row(carol, rejectId).textContent()).includes("created this withdrawal"), "saying why");
  await row(carol, rejectId).locator("button").first().evaluate((el) => el.removeAttribute("disabled"));
  await confirmed(carol, `Approve withdrawal ${rejectId}`, [`withdrawal ${rejectId}`]);
  const refused = await note(carol, rejectId);
  check(refused.includes("creator can never approve"), `the refusal beside the control: ${refused}`);
  await carol.screenshot({ path: join(artifacts, "approvals-creator.png") });

  // Reject needs a reason: without one it is refused beside the button, nothing changes.
  const reason = bob.getByLabel(`Reason to reject withdrawal ${rejectId}`);
  check(await reason.getAttribute("maxlength") === "500", "the reason is bounded");
  await confirmed(bob, `Reject withdrawal ${rejectId}`, [`withdrawal ${rejectId}`, "250 USDT"]);
  const needs = await note(bob, rejectId);
  check(needs.includes("needs a reason"), `a rejection needs a reason: ${needs}`);
  // Over the bound (the browser's limit removed by hand): refused by the server.
  await reason.evaluate((el) => el.removeAttribute("maxlength"));
  await reason.fill("x".repeat(501));
  await confirmed(bob, `Reject withdrawal ${rejectId}`, [`withdrawal ${rejectId}`]);
  await bob.waitForFunction(
    (id) => document.querySelector(`#held-${id} .action-note`)?.textContent.includes("1 to 500"),
    rejectId, { timeout: FAST });
  await reason.fill("duplicate of order 7");
  await confirmed(bob, `Reject withdrawal ${rejectId}`, [`withdrawal ${rejectId}`]);
  await row(bob, rejectId).waitFor({ state: "detached", timeout: FAST });
  await row(carol, rejectId).waitFor({ state: "detached", timeout: FAST });
  check((await bob.locator("#approvals").textContent()).includes("No withdrawal is waiting"), "nothing waits any more");

  // Each withdrawal's page shows its decisions: who, when, what, why.
  await bob.goto(`${base}/withdrawals/${rejectId}`);
  await bob.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
  check(await bob.locator("h1 .badge").textContent() === "failed", "rejected: failed");
  const decisions = await bob.locator("table.decisions").textContent();
  check(decisions.includes("e2e-bob") && decisions.includes("rejected") && decisions.includes("duplicate of order 7"), `the rejection: ${decisions}`);
  check(await bob.locator("table.decisions time[datetime]").count() === 1, "with its time");
  await bob.screenshot({ path: join(artifacts, "withdrawal-rejected.png") });
  await bob.goto(`${base}/withdrawals/${approveId}`);
  check(await bob.locator("h1 .badge").textContent() === "pending", "approved twice: pending");
  const both = await bob.locator("table.decisions tbody tr").allTextContents();
  check(both.length === 2 && both[0].includes("e2e-alice") && both[1].includes("e2e-bob") && both.every((line) => line.includes("approved")), `two approvals: ${both}`);

  // Manual review on a withdrawal's page: a mark-paid without a txid refused beside the
  // control, then a retry asked (the dialog names the withdrawal), shown as being checked
  // on the chain, and the actions locked until the chain's worker answers.
  const reviewId = env("REVIEW");
  await bob.goto(`${base}/withdrawals/${reviewId}`);
  await bob.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
  check(await bob.locator("h1 .badge").textContent() === "manual_review", "in manual review");
  check((await bob.locator(".reason").textContent()).includes("nonce 4"), "saying why");
  await bob.getByLabel(`Reason for the review of withdrawal ${reviewId}`).fill("its nonce is final");
  await confirmed(bob, `Mark withdrawal ${reviewId} paid`, [`withdrawal ${reviewId}`, "300 USDT"]);
  await bob.waitForFunction(
    () => document.querySelector(".actions.review .action-note")?.textContent.includes("needs the txid"),
    null, { timeout: FAST });
  await confirmed(bob, `Pay withdrawal ${reviewId} again`, [`withdrawal ${reviewId}`, "again"]);
  await bob.locator("table.reviews [data-status=requested]").waitFor({ timeout: FAST });
  result.review_to_requested_ms = Date.now() - lastYes;
  check((await bob.locator("table.reviews").textContent()).includes("its nonce is final"), "the review with its reason");
  check(await bob.getByRole("button", { name: `Pay withdrawal ${reviewId} again`, exact: true }).isDisabled(), "locked while it is checked");
  check((await bob.locator(".actions.review").textContent()).includes("being checked on the chain"), "saying why");
  await bob.screenshot({ path: join(artifacts, "review.png") });

  // The destinations page: a registration cooling down; the admin removes it.
  await carol.goto(`${base}/destinations`);
  await carol.locator("#live[data-state=live]").waitFor({ timeout: WAIT });
  const registered = carol.locator(`#dest-${destination}`);
  check((await registered.textContent()).includes("cooling down"), "a new registration cools down");
  await carol.screenshot({ path: join(artifacts, "destinations.png") });
  await confirmed(carol, `Remove destination ${destination}`, [`destination ${destination}`, "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7"]);
  await registered.waitFor({ state: "detached", timeout: FAST });

  check(pageErrors.length === 0, `no script or console errors, no CSP violations: ${pageErrors}`);
  result.checks = "passed";
} catch (error) {
  for (let c = 0; c < contexts.length; c++) {
    const pages = contexts[c].pages();
    for (let i = 0; i < pages.length; i++) {
      await pages[i].screenshot({ path: join(artifacts, `approvals-failure-${c}-${i}.png`) }).catch(() => {});
    }
  }
  throw error;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
