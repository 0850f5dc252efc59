// The console in a real browser: node console/tests/console.test.mjs <server url> <admin token>
// <consumer token> <source id>. Run by tests/tests/console.rs against a seeded server; prints
// one line per step on stdout, `WATCHING` when the live tail is open (the Rust side then
// upserts the record LIVE1) and `PASS` at the end. Every wait is for a condition, with a timeout.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, adminToken, consumerToken, sourceId] = process.argv.slice(2);
if (!sourceId) {
  console.error("usage: console.test.mjs <url> <admin token> <consumer token> <source id>");
  process.exit(2);
}
const shots = process.env.SCREENSHOTS;
if (shots) mkdirSync(shots, { recursive: true });
const TIMEOUT = 20_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
const requests = [];
page.on("request", (r) => requests.push(r.url()));
page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
page.on("dialog", (d) => d.accept());

let failed = false;
async function step(name, run) {
  try {
    await run();
    if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
    console.log(`ok ${name}`);
  } catch (err) {
    failed = true;
    console.log(`FAIL ${name}`);
    console.error(`step ${name} failed: ${err.stack || err}`);
    if (shots) await page.screenshot({ path: `${shots}/${name}-FAILED.png`, fullPage: true }).catch(() => {});
    throw err;
  }
}

const heading = (text) => page.getByRole("heading", { level: 1, name: text });
const expectText = async (locator, re) => {
  await locator.filter({ hasText: re }).first().waitFor();
};

try {
  await step("redirect-and-wrong-token", async () => {
    const response = await page.goto(`${url}/console`);
    if (!page.url().endsWith("/console/")) throw new Error(`not redirected to /console/: ${page.url()}`);
    if (response.headers()["content-type"] !== "text/html; charset=utf-8") throw new Error("index.html content type");
    await heading("Sign in").waitFor();
    await page.getByLabel("Admin token").fill("tba_wrong");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expectText(page.getByRole("alert"), /Sign-in failed: UNAUTHENTICATED/);
  });

  await step("sign-in-overview", async () => {
    await page.getByLabel("Admin token").fill(adminToken);
    await page.getByLabel("Consumer token (optional)").fill(consumerToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await heading("Overview").waitFor();
    if (page.url().includes(adminToken) || page.url().includes(consumerToken)) throw new Error("a token is in the URL");
    // Two records of the source so far: C0001 and C0002 (C0003 failed).
    await page.getByRole("row", { name: /country Country 2/ }).waitFor();
    await page.getByRole("row", { name: /partial/ }).first().waitFor();
  });

  await step("sources", async () => {
    await page.getByRole("link", { name: "Sources", exact: true }).click();
    await heading("Sources").waitFor();
    await page.getByRole("row", { name: /country api http_json/ }).waitFor();
    await page.getByRole("link", { name: "country api" }).click();
    await heading("Source country api").waitFor();
    const settings = await page.getByLabel("Source (JSON)").inputValue();
    if (!settings.includes("<redacted>")) throw new Error(`the header is not redacted: ${settings}`);
    if (settings.includes("s3cret")) throw new Error("a secret is shown");
  });

  let resultsBefore = 0;
  await step("import-result-failed-item", async () => {
    const rows = page.getByRole("table", { name: /Import results of country api/ }).locator("tbody tr");
    await rows.first().waitFor();
    resultsBefore = await rows.count();
    await rows.first().getByRole("link").first().click();
    await heading(/Import result/).waitFor();
    const failedItems = page.getByRole("table", { name: "Failed items" });
    await failedItems.getByRole("row", { name: /C0003/ }).waitFor();
    await expectText(failedItems.locator("pre"), /"population":\s*"lots"/);
  });

  await step("trigger-shows-new-result", async () => {
    await page.goto(`${url}/console/#/sources/${sourceId}`);
    await heading("Source country api").waitFor();
    await page.getByRole("button", { name: "Trigger" }).click();
    await expectText(page.getByRole("status"), /Trigger: done/);
    // The cycle runs in the background: reload the page until its result is listed.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const rows = page.getByRole("table", { name: /Import results of country api/ }).locator("tbody tr");
      await rows.first().waitFor();
      if ((await rows.count()) > resultsBefore) break;
      if (Date.now() > deadline) throw new Error("no new import result after Trigger");
      await page.reload();
      await heading("Source country api").waitFor();
    }
  });

  await step("source-edit-violation", async () => {
    const editor = page.getByLabel("Source (JSON)");
    const source = JSON.parse(await editor.inputValue());
    source.config = { items: "/data" };
    await editor.fill(JSON.stringify(source, null, 2));
    await page.getByRole("button", { name: "Save source" }).click();
    await expectText(page.getByRole("alert"), /Saving the source failed: INVALID_ARGUMENT/);
    // The server's violation is shown at the editor, naming the field.
    await page.locator("#source-json-errors .violations li").filter({ hasText: /config/ }).first().waitFor();
    if ((await editor.getAttribute("aria-invalid")) !== "true") throw new Error("the editor is not marked invalid");
  });

  await step("import-results-filter", async () => {
    await page.getByRole("link", { name: "Import results", exact: true }).click();
    await heading("Import results").waitFor();
    await page.getByLabel("Status").selectOption({ label: "partial" });
    await page.getByRole("button", { name: "Filter" }).click();
    await page.getByRole("row", { name: /partial/ }).first().waitFor();
    if ((await page.getByRole("row", { name: /succeeded/ }).count()) !== 0) throw new Error("the status filter let a success through");
  });

  await step("records-filter-and-open", async () => {
    await page.getByRole("link", { name: "Records", exact: true }).click();
    await heading("Records").waitFor();
    await page.getByRole("row", { name: /C0002/ }).waitFor();
    await page.getByLabel("Filter").fill('{"id": "C0001"}');
    await page.getByLabel("Order by").fill("id desc");
    await page.getByRole("button", { name: "List" }).click();
    await page.getByRole("row", { name: /C0001/ }).waitFor();
    await page.getByRole("row", { name: /C0002/ }).waitFor({ state: "detached" });
    await page.getByRole("link", { name: "C0001" }).click();
    await heading("Record C0001").waitFor();
    await expectText(page.locator("pre.json").first(), /"population":\s*1000/);
    await page.getByText("Checksum").waitFor();
  });

  await step("records-bad-filter", async () => {
    await page.getByRole("link", { name: "Records", exact: true }).click();
    await heading("Records").waitFor();
    await page.getByRole("row", { name: /C0002/ }).waitFor();
    await page.getByLabel("Filter").fill('{"entity.population": {"$bogus": 1}}');
    await page.getByRole("button", { name: "List" }).click();
    await expectText(page.getByRole("alert"), /Listing records failed: INVALID_ARGUMENT/);
    await page.locator(".violations li").filter({ hasText: /filter/ }).first().waitFor();
  });

  await step("records-live-tail", async () => {
    await page.getByLabel("Filter").fill("");
    await page.getByRole("button", { name: "List" }).click();
    await page.getByRole("row", { name: /C0002/ }).waitFor();
    await page.getByText(/Watching country after sequence/).waitFor();
    console.log("WATCHING");
    await page.getByRole("list", { name: "Live changes" }).getByText(/upserted LIVE1/).waitFor({ timeout: 60_000 });
  });

  await step("entity-types", async () => {
    await page.getByRole("link", { name: "Entity types", exact: true }).click();
    await heading("Entity types").waitFor();
    await page.getByRole("row", { name: /country Country/ }).waitFor();
  });

  await step("connectors-token-once", async () => {
    await page.getByRole("link", { name: "Connectors", exact: true }).click();
    await heading("Connectors").waitFor();
    await page.getByRole("row", { name: /api importer/ }).waitFor();
    await page.getByLabel("Name").fill("console connector");
    await page.getByRole("button", { name: "Create connector" }).click();
    const token = page.locator(".token output");
    await expectText(page.locator(".token"), /Token of console connector/);
    const value = (await token.textContent()) ?? "";
    if (value.length < 16) throw new Error(`no token shown: ${value}`);
    await page.getByRole("row", { name: /console connector/ }).waitFor();
    await page.getByRole("button", { name: "Rotate the token of console connector" }).click();
    await expectText(page.locator(".token"), /New token of console connector/);
    const rotated = (await token.textContent()) ?? "";
    if (rotated === value || rotated.length < 16) throw new Error("the rotated token is not new");
    await page.reload();
    await heading("Connectors").waitFor();
    await page.getByRole("row", { name: /console connector/ }).waitFor();
    if ((await page.locator(".token").count()) !== 0) throw new Error("a token is shown again");
  });

  await step("exports-run-now", async () => {
    await page.getByRole("link", { name: "Exports", exact: true }).click();
    await heading("Exports").waitFor();
    await page.getByRole("row", { name: /console-export country ndjson/ }).waitFor();
    await page.getByRole("button", { name: "Run console-export now" }).click();
    // The run ends before the export's page opens, with the run in its table.
    await heading("Export console-export").waitFor();
    const runs = page.getByRole("table", { name: "Runs, newest first" });
    const written = /succeeded .* file:\/\/.*console-export-\d{8}T\d{6}\.\d{6}Z\.ndjson/;
    await runs.getByRole("row", { name: written }).waitFor();
    // Run now on the export's page: its status, then a second run in the table.
    await page.getByRole("button", { name: "Run console-export now" }).click();
    await expectText(page.getByRole("status"), /Run of console-export: succeeded, \d+ records/);
    await runs.getByRole("row", { name: written }).nth(1).waitFor();
  });

  await step("consumer-token-reads-records-only", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await heading("Sign in").waitFor();
    if (await page.evaluate(() => sessionStorage.length) !== 0) throw new Error("tokens outlive sign-out");
    await page.getByLabel("Consumer token (optional)").fill(consumerToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await heading("Records").waitFor();
    await page.getByRole("row", { name: /C0002/ }).waitFor();
    const nav = page.getByRole("navigation", { name: "Console" });
    if ((await nav.getByRole("link").count()) !== 1) throw new Error("a consumer sees admin pages in the menu");
    await page.goto(`${url}/console/#/sources`);
    await heading("Admin only").waitFor();
  });

  await step("same-origin-only", async () => {
    const foreign = requests.filter((r) => !r.startsWith(url));
    if (foreign.length) throw new Error(`requests beyond the server: ${foreign.join(", ")}`);
  });
} catch {
  // Reported by step().
} finally {
  await browser.close();
}
if (failed) process.exit(1);
console.log("PASS");
