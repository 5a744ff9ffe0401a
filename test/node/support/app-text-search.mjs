// Drives the FiftyOne App in Debian's Chromium (playwright-core): for each prompt, the grid's "Sort by
// text similarity" action, types the prompt, presses Enter, waits for the run to complete in the
// Similarity Search panel, clicks its "Show results" and waits for the grid to show the result.
// Prints one JSON line per search: {prompt, ms, submitted (wall clock, ms), ids} with `ids` the
// sample ids in the order the grid fetched them (the App's paginateSamples GraphQL answer that the
// grid renders), then screenshots the App (1280x800). APP_DEBUG=1 logs the page's console and POSTs.
// Usage: node app-text-search.mjs URL SCREENSHOT PROMPT...
import { chromium } from "playwright-core";

const [url, screenshot, ...prompts] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const log = (...a) => console.error("[app-text-search]", ...a);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => log("page error:", e.message));
  page.on("console", (m) => process.env.APP_DEBUG && log("console:", m.type(), m.text().slice(0, 300)));
  page.on("request", (r) => process.env.APP_DEBUG && r.method() === "POST" && log("POST", r.url(), (r.postData() ?? "").slice(0, 300)));

  // Every grid page the App fetches: the view it asked for and the sample ids it got, in order.
  const pages = [];
  page.on("response", async (r) => {
    const body = r.request().postData() ?? "";
    if (!r.url().endsWith("/graphql") || !body.includes("paginateSamplesQuery")) return;
    try {
      const view = JSON.parse(body).variables?.view ?? [];
      const edges = (await r.json()).data?.samples?.edges ?? [];
      pages.push({ view, ids: edges.map((e) => e.node.id) });
    } catch (e) {
      log("unreadable paginateSamples answer:", e.message);
    }
  });

  await page.goto(url, { waitUntil: "load" });
  const button = page.locator('[data-cy="action-sort-by-similarity"]');
  await button.waitFor({ timeout: 120_000 });
  await page.waitForTimeout(1500);
  // FiftyOne's "Explore Enterprise" pop-over covers the action bar on a first visit.
  const dismiss = page.getByText("Dismiss", { exact: true });
  if (await dismiss.count()) await dismiss.click();

  let applied = "[]"; // the view the grid shows (JSON of its stages)
  for (const prompt of prompts) {
    const t0 = Date.now();
    const before = pages.length;
    // After the first search the Similarity Search panel is open beside the grid and the button's
    // tooltip can sit over it: then a forced click (at the button's centre, no actionability wait).
    await button.click({ timeout: 5_000 }).catch(() => button.click({ force: true }));
    log(`search ${JSON.stringify(prompt)}: popover opened`);
    const input = page.getByPlaceholder("Type anything!");
    await input.waitFor({ timeout: 30_000 });
    await input.fill(prompt);
    await input.press("Enter");
    const submitted = Date.now(); // wall clock, for the test's timeline of the App server's sidecars
    log(`search ${JSON.stringify(prompt)}: submitted`);
    // FiftyOne 1.22: the search runs as the `similarity_search` operator on the App server and lands
    // as a run card ("<prompt> · <brain key> · k=25") in the Similarity Search panel. The panel applies
    // a run when its card's "Show results" button is clicked: the panel's `apply_run` method sets the
    // view to the run's ordered result (a Select stage) and the grid fetches it. (It also applies a run
    // by itself when it sees the run complete, but not the first run it ever lists.) The card sits in
    // a dnd-kit sortable wrapper (role=button, aria-disabled=true: reordering is off) and Playwright
    // counts that aria-disabled ancestor as disabling the button, so an actionable click waits
    // forever: the click is forced (real mouse events at the button's centre, after a hover that
    // opens its tooltip), which is what a user's click does.
    const card = page.locator('[aria-roledescription="sortable"]').filter({ hasText: `${prompt} · ` }).first();
    await card.getByText("Completed", { exact: true }).waitFor({ timeout: 180_000 });
    log(`search ${JSON.stringify(prompt)}: run completed (${Date.now() - t0} ms)`);
    const show = card.locator('[aria-label="Show results"]');
    const deadline = Date.now() + 60_000;
    let hit;
    while (!hit && Date.now() < deadline) {
      await show.hover({ force: true, timeout: 5_000 }).catch(() => {});
      await show.click({ force: true, timeout: 5_000 }).catch((e) => log("Show results:", e.message.split("\n")[0]));
      for (let i = 0; i < 20 && !hit; i++) {
        await page.waitForTimeout(500);
        // The grid's page for this run: a Select view, not the one already applied (the previous search's).
        hit = pages.slice(before).find((p) => {
          const v = JSON.stringify(p.view);
          return v.includes("fiftyone.core.stages.Select") && v !== applied;
        });
      }
    }
    if (!hit) {
      await page.screenshot({ path: `${screenshot}.failed.png` });
      throw new Error(`no grid page with the search result for ${JSON.stringify(prompt)} (screenshot: ${screenshot}.failed.png)`);
    }
    applied = JSON.stringify(hit.view);
    await page.waitForTimeout(1500); // let the grid paint
    console.log(JSON.stringify({ prompt, ms: Date.now() - t0, submitted, ids: hit.ids, view: hit.view }));
    if (prompt !== prompts.at(-1)) {
      // Close the panel so that the action bar's button is back for the next search.
      const tab = page.getByText("Similarity Search", { exact: true }).first();
      await tab.locator("xpath=..").locator("svg, button").last().click({ timeout: 5_000 }).catch((e) => log("closing the panel:", e.message));
      await page.waitForTimeout(1000);
    }
  }
  await page.mouse.move(640, 700); // away from the buttons: no tooltip in the picture
  await page.waitForTimeout(1000);
  await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
