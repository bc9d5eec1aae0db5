// Drives the dashboard in headless Chromium for host/tests/e2e_ui.rs, step by step.
// The Rust test owns the host, the database and the broker; this script owns the
// browser. They talk in lines: this script prints `STEP <name> [value]` on stdout and,
// where the test must act (publish events, fix the plugin's data), waits for a line on
// stdin before going on. Any failure prints `FAIL <reason>` and exits 1.
"use strict";
const path = require("path");
const readline = require("readline");
const { chromium } = require(path.join(process.env.EVENTHOST_PLAYWRIGHT, "playwright-core"));

const [base, token, screenshot] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const WAIT = 30000;
let current = null; // the page, for the failure report

function step(name, value) {
  console.log(value === undefined ? `STEP ${name}` : `STEP ${name} ${value}`);
}
async function go() {
  const { value, done } = await lines.next();
  if (done || value.trim() !== "go") throw new Error(`expected "go", got ${JSON.stringify(value)}`);
}
function check(condition, message) {
  if (!condition) throw new Error(message);
}
async function count(page, plugin, column) {
  const text = await page.locator(`#plugins tr[data-plugin="${plugin}"] td.${column}`).textContent();
  return Number(text.trim());
}
// Waits, without reloading the page, until the live update shows the count.
async function countReaches(page, plugin, column, atLeast) {
  await page.waitForFunction(
    ([plugin, column, atLeast]) => {
      const cell = document.querySelector(`#plugins tr[data-plugin="${plugin}"] td.${column}`);
      return cell !== null && Number(cell.textContent.trim()) >= atLeast;
    },
    [plugin, column, atLeast],
    { timeout: WAIT },
  );
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.EVENTHOST_CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
    current = page;
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("dialog", (d) => { errors.push(`dialog: ${d.message()}`); d.dismiss(); });

    // Not signed in: the sign-in page, which refuses a wrong token.
    await page.goto(`${base}/ui`);
    check(page.url().endsWith("/ui/login"), `not sent to sign in: ${page.url()}`);
    await page.fill("#token", "not-the-token-at-all");
    await page.click("button[type=submit]");
    await page.getByText("That is not the admin token.").waitFor({ timeout: WAIT });
    await page.fill("#token", token);
    await page.click("button[type=submit]");
    await page.waitForURL(`${base}/ui`, { timeout: WAIT });
    const handled = await count(page, "probe", "handled");
    const dead = await count(page, "probe", "dead-lettered");
    step("signed-in", `${handled} ${dead}`);

    // The test publishes three events the plugin handles and one it refuses.
    await go();
    await countReaches(page, "probe", "handled", handled + 3);
    await countReaches(page, "probe", "dead-lettered", dead + 1);
    check(page.url() === `${base}/ui`, "the page was reloaded or left");
    const shown = await page.locator('#plugins tr[data-plugin="probe"] td.last-error').textContent();
    check(shown.includes("<script>"), `the failure reason is not shown as text: ${shown}`);
    step("counted");

    // Open the plugin's dead letters and the refused event's body.
    await page.click('#dead-letters tr[data-plugin="probe"] a');
    await page.waitForURL(`${base}/ui/dead/probe`, { timeout: WAIT });
    const letter = page.locator("tr.letter").first();
    const id = await letter.getAttribute("data-event-id");
    await letter.locator("summary").click();
    const body = await letter.locator("pre").textContent();
    check(body.includes("<script>window.__eventhostXss=1</script>"), `body not shown as text: ${body}`);
    const reason = await letter.locator("td.reason").textContent();
    check(reason.includes("<script>"), `reason not shown as text: ${reason}`);
    // Shown as text, it never became an element (and the page's policy would not run an
    // inline script anyway, so the element count is what proves the escaping).
    const injected = await page.evaluate(() => ({
      ran: window.__eventhostXss !== undefined,
      elements: document.querySelectorAll("main script, main img, main iframe").length,
    }));
    check(!injected.ran && injected.elements === 0, `markup from the event became live: ${JSON.stringify(injected)}`);
    step("opened", id);

    // The test fixes the plugin's data; replay the letter, with a confirmation.
    await go();
    await letter.locator("input[type=checkbox]").check();
    await page.click("button[value=selected]");
    await page.getByText("Replay 1 dead letter(s) of probe to its queue?").waitFor({ timeout: WAIT });
    await page.click("text=Confirm replay");
    await page.getByText("Replayed 1 dead letter(s)").waitFor({ timeout: WAIT });
    step("replayed");

    // The effect lands: the plugin's handled count moves on the dashboard.
    await page.goto(`${base}/ui`);
    await countReaches(page, "probe", "handled", handled + 4);
    step("landed");
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    check(errors.length === 0, `the page reported errors: ${errors.join("; ")}`);

    // With JavaScript off: signing in and the read-only tables work the same.
    const plain = await browser.newContext({ javaScriptEnabled: false });
    const still = await plain.newPage();
    await still.goto(`${base}/ui`);
    await still.fill("#token", token);
    await still.click("button[type=submit]");
    await still.waitForURL(`${base}/ui`, { timeout: WAIT });
    const shownHandled = await count(still, "probe", "handled");
    check(shownHandled >= handled + 4, `without JavaScript the table shows ${shownHandled}`);
    await still.click('#dead-letters tr[data-plugin="probe"] a');
    await still.waitForURL(`${base}/ui/dead/probe`, { timeout: WAIT });
    await plain.close();
    step("done");
  } catch (e) {
    await report();
    throw e;
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => { console.log(`FAIL ${String(e && e.stack || e).split("\n").join(" | ")}`); process.exit(1); },
);
async function report() {
  if (current === null) return;
  try { console.error(`[dashboard.cjs] at ${current.url()}:\n${(await current.content()).slice(0, 4000)}`); } catch (_) {}
}
