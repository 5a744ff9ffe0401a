// Drives the FiftyOne App in Debian's Chromium (playwright-core): for each prompt, the grid's "Sort by
// text similarity" action, types the prompt, presses Enter, and waits for the grid to show the result.
// Prints one JSON line per search: {prompt, ms, ids} with `ids` the sample ids in the order the grid
// fetched them (the App's paginateSamples GraphQL answer that the grid renders), then screenshots.
// Usage: node app-text-search.mjs URL SCREENSHOT PROMPT...
import { chromium } from "playwright-core";

const [url, screenshot, ...prompts] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const log = (...a) => console.error("[app-text-search]", ...a);
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
  page.on("pageerror", (e) => log("page error:", e.message));

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
    log(`search ${JSON.stringify(prompt)}: submitted`);
    // FiftyOne 1.22: the search runs as the `similarity_search` operator on the App server and lands
    // as a run card ("<prompt> · <brain key> · k=25", newest first) in the Similarity Search panel;
    // its "Show results" button (enabled once the run completed) applies it: the view becomes the
    // run's ordered result (a Select stage) and the grid fetches it. A wrong card would show another
    // prompt's order, which the test tells apart.
    const card = page.getByLabel("Show results").first();
    const deadline = Date.now() + 180_000;
    let hit;
    while (!hit && Date.now() < deadline) {
      if ((await card.count()) && (await card.isEnabled())) await card.click({ timeout: 2_000 }).catch(() => {});
      await page.waitForTimeout(1000);
      hit = pages.slice(before).find((p) => JSON.stringify(p.view).includes("fiftyone.core.stages.Select"));
    }
    if (!hit) {
      await page.screenshot({ path: `${screenshot}.failed.png` });
      throw new Error(`no grid page with the search result for ${JSON.stringify(prompt)} after 180 s (screenshot: ${screenshot}.failed.png)`);
    }
    await page.waitForTimeout(1500); // let the grid paint
    console.log(JSON.stringify({ prompt, ms: Date.now() - t0, ids: hit.ids, view: hit.view }));
    if (prompt !== prompts.at(-1)) {
      // Close the panel so that the action bar's button is back for the next search.
      const tab = page.getByText("Similarity Search", { exact: true }).first();
      await tab.locator("xpath=..").locator("svg, button").last().click({ timeout: 5_000 }).catch((e) => log("closing the panel:", e.message));
      await page.waitForTimeout(1000);
    }
  }
  await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
