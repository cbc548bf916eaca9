// Drives the dashboard in headless Chromium: connects with a key, sees an
// event posted over HTTP appear live, filters by topic, acks and deletes
// with a click, and takes a screenshot. Run by tests/dashboard.rs, which
// starts the server and passes where everything is in the environment.
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const { URL: base, KEY: key, CHROMIUM, PLAYWRIGHT, SCREENSHOT } = process.env;
const require = createRequire(`${PLAYWRIGHT}/`);
const { chromium } = require("playwright-core");

async function post(topic, payload) {
  const response = await fetch(`${base}/events`, {
    method: "POST",
    headers: { "X-API-Key": key, "Content-Type": "application/json" },
    body: JSON.stringify({ topic, type: "demo", source: "dashboard-test", payload }),
  });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text).id;
}

async function listed() {
  const response = await fetch(`${base}/inbox?limit=500`, { headers: { "X-API-Key": key } });
  return (await response.json()).events.map((e) => e.id);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 640 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  // A payload and topic made to run script if the page ever put them in
  // as HTML: it must show them as text.
  const hostile = "<img src=x onerror=\"window.injected=1\">";
  const before = await post("orders", { order: 41, note: "posted before the page opened" });
  await page.goto(`${base}/`);
  await page.fill("#key", key);
  await page.click("#login button");
  await page.waitForFunction(() => document.querySelector("#state").textContent === "live");
  await page.waitForSelector(`tr[data-id="${before}"]`);

  // Posted over HTTP while the page is open: it appears live.
  const live = await post("orders", { order: 42, customer: "ACME", total: 99.5 });
  const row = await page.waitForSelector(`tr[data-id="${live}"]`, { timeout: 10000 });
  assert.match(await row.textContent(), /"customer":"ACME"/);
  const other = await post("invoices", { invoice: 7, note: hostile });
  const shownOther = await page.waitForSelector(`tr[data-id="${other}"]`);
  assert.match(await shownOther.textContent(), /<img src=x/);
  assert.equal(await page.evaluate(() => window.injected), undefined);
  await page.waitForFunction(() => document.querySelector("#pending").textContent === "3");

  // Filtered by topic, the other topic's event goes from the page.
  await page.fill("#topic", "orders");
  await page.press("#topic", "Enter");
  await page.waitForFunction(() => document.querySelector("#state").textContent === "live");
  await page.waitForSelector(`tr[data-id="${live}"]`);
  assert.equal(await page.$(`tr[data-id="${other}"]`), null);
  await page.screenshot({ path: SCREENSHOT });

  // Ack and delete with a click: gone from the page and from the inbox.
  await page.click(`tr[data-id="${live}"] button[data-action="ack"]`);
  await page.waitForSelector(`tr[data-id="${live}"]`, { state: "detached" });
  await page.click(`tr[data-id="${before}"] button[data-action="delete"]`);
  await page.waitForSelector(`tr[data-id="${before}"]`, { state: "detached" });
  assert.deepEqual(await listed(), [other]);
  await page.waitForFunction(() => document.querySelector("#pending").textContent === "1");
  assert.deepEqual(errors, []);
  console.log("dashboard: ok");
} finally {
  await browser.close();
}
