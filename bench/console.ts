/**
 * `npm run bench:console`: the web console's first load in headless Chromium (Debian's package), N times,
 * each in a fresh browser context (empty cache) against the local stack: the JavaScript it fetches,
 * gzipped, and its time to interactive (navigation start to the app's `console-interactive` mark, set
 * once its first view answers input) and to the model list on screen. The baseline, measured in the same
 * run and alternated with it, is a blank page whose one inline module script sets the same mark.
 *
 * `npm run screenshots` (`--screenshots`) writes the README's pictures of the main pages to docs/console/.
 */
import { mkdir, readFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { buildBertClassifierModel } from "../models/bert.ts";
import { buildIrisModel } from "../models/iris.ts";
import { dropFiles, launchChromium, signedInPage } from "../test/e2e/chromium.ts";
import { BENCH_API_KEY, startBenchStack } from "./bench-stack.ts";
import { formatMs, median, percentile, printTable } from "./stats.ts";

const RUNS = Number(process.env.BENCH_CONSOLE_RUNS ?? 21);
const SCREENSHOTS = process.argv.includes("--screenshots");
const ADMIN_KEY = "bench-admin-1";
const KEYS = { adminKey: ADMIN_KEY, apiKey: BENCH_API_KEY };
const MARK = "console-interactive";
const SHOTS_DIR = join(import.meta.dirname, "..", "docs", "console");
const TOKENIZER = join(import.meta.dirname, "..", "models", "fixtures", "bert-uncased", "tokenizer.json");

/** Records when the first model link appears: the list on screen, API calls included. */
const LISTED_OBSERVER = `
  new MutationObserver((_, observer) => {
    if (document.querySelector('a[href="#/models/iris"]')) {
      performance.mark("models-listed");
      observer.disconnect();
    }
  }).observe(document, { childList: true, subtree: true });
`;

interface Load {
  readonly interactiveMs: number;
  readonly listedMs: number | undefined;
  readonly scriptBytes: number;
}

async function markTime(page: Page, name: string): Promise<number | undefined> {
  const time = await page.evaluate(`performance.getEntriesByName(${JSON.stringify(name)})[0]?.startTime`);
  return typeof time === "number" ? time : undefined;
}

async function load(browser: Browser, url: string, waitForList: boolean): Promise<Load> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    await context.addInitScript(
      `sessionStorage.setItem("maas.console.credentials", ${JSON.stringify(JSON.stringify(KEYS))});${LISTED_OBSERVER}`,
    );
    const page = await context.newPage();
    const sizes: Promise<number>[] = [];
    page.on("response", (response) => {
      if (response.request().resourceType() === "script") {
        sizes.push(response.headerValue("content-length").then((length) => Number(length ?? 0)));
      }
    });
    await page.goto(url);
    // Selectors, not waitForFunction: its polling evaluates strings, which the console's CSP refuses.
    await page.waitForSelector(waitForList ? "html[data-ready=true]" : "html[data-blank-ready=true]", {
      state: "attached",
    });
    if (waitForList) await page.waitForSelector('a[href="#/models/iris"]');
    const interactiveMs = (await markTime(page, MARK)) ?? Number.NaN;
    const listedMs = waitForList ? await markTime(page, "models-listed") : undefined;
    const scriptBytes = (await Promise.all(sizes)).reduce((sum, bytes) => sum + bytes, 0);
    return { interactiveMs, listedMs, scriptBytes };
  } finally {
    await context.close();
  }
}

/** The baseline: a page with nothing but the mark, from a server of its own on loopback. */
async function blankPage(): Promise<{ url: string; close: () => Promise<void> }> {
  const body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>blank</title><link rel="icon" href="data:,"></head><body><script type="module">performance.mark(${JSON.stringify(MARK)});document.documentElement.dataset.blankReady="true";</script></body></html>`;
  const server = createServer((_req, res) => {
    res.writeHead(200, {
      "content-type": "text/html; charset=utf-8",
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
  });
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: () => new Promise((closed) => server.close(() => closed())),
  };
}

/** Models worth looking at: iris (the demo), two versions under an alias, a text classifier, a failure. */
async function furnish(stack: Awaited<ReturnType<typeof startBenchStack>>["stack"]): Promise<void> {
  const iris = buildIrisModel();
  await stack.publish("lilies", 1, iris, { manifest: { description: "Iris species, retrained weekly" } });
  await stack.publish("lilies", 2, iris, { manifest: { description: "Iris species, retrained weekly" } });
  await stack.publish("broken", 1, new TextEncoder().encode("these bytes are not a model"));
  const admin = { "x-api-key": ADMIN_KEY, "content-type": "application/json" };
  await fetch(`${stack.url}/admin/models/lilies/aliases/default`, {
    method: "PUT",
    headers: admin,
    body: JSON.stringify({ version: 2 }),
  });
  const infer = (model: string, data: number[][]) =>
    fetch(`${stack.url}/v2/models/${model}/infer`, {
      method: "POST",
      headers: { "x-api-key": BENCH_API_KEY, "content-type": "application/json" },
      body: JSON.stringify({
        inputs: [{ name: "features", shape: [data.length, 4], datatype: "FP32", data }],
      }),
    });
  for (let i = 0; i < 40; i++) await infer("iris", [[5.1 + (i % 5) / 10, 3.5, 1.4, 0.2]]);
  for (let i = 0; i < 3; i++) await infer("iris", [[1, 2, 3]]);
}

async function screenshots(browser: Browser, consoleUrl: string): Promise<void> {
  await mkdir(SHOTS_DIR, { recursive: true });
  const page = await signedInPage(browser, KEYS, { width: 1280, height: 860 });
  const shot = (name: string) => page.screenshot({ path: join(SHOTS_DIR, `${name}.png`), fullPage: false });
  try {
    await page.goto(consoleUrl);
    await page.getByRole("link", { name: "broken", exact: true }).waitFor();
    await shot("models");

    await page.goto(`${consoleUrl}#/models/lilies`);
    await page.getByRole("heading", { name: "Variants" }).waitFor();
    await shot("model");

    await page.goto(`${consoleUrl}#/models/iris/try`);
    await page.getByLabel(/features/).fill("[[6.1, 2.8, 4.7, 1.2]]");
    await page.getByRole("button", { name: "Run" }).click();
    await page.getByRole("region", { name: "Answer" }).waitFor();
    await shot("try-it");

    await page.goto(`${consoleUrl}#/models/iris/figures`);
    await page.getByLabel("Window").selectOption("15");
    await page.getByText("Requests (15 min)").waitFor();
    await page.locator("figure.chart canvas").first().waitFor();
    await shot("figures");

    await page.goto(`${consoleUrl}#/publish`);
    await page.getByLabel("Model name").fill("reviews");
    await page.getByLabel("Version").fill("1");
    const labels = ["negative", "neutral", "positive"];
    const manifest = { task: "text-classification", tokenizer: "tokenizer.json", labels, maxLength: 64 };
    await dropFiles(page, "[data-testid=publish-dropzone]", [
      { name: "sentiment.onnx", bytes: buildBertClassifierModel({ labels: 3, hidden: 8 }) },
      { name: "maas.json", bytes: new TextEncoder().encode(JSON.stringify(manifest)) },
      { name: "tokenizer.json", bytes: await readFile(TOKENIZER) },
    ]);
    await page.getByRole("button", { name: "Publish" }).click();
    await page.getByText(/Ready on lambda/).waitFor({ timeout: 120_000 });
    await shot("publish");

    await page.goto(`${consoleUrl}#/models/reviews/try`);
    await page.getByRole("button", { name: "Run" }).click();
    await page.locator("figure.bars").first().waitFor();
    await shot("try-it-text");
  } finally {
    await page.close();
  }
  console.log(`screenshots written to ${SHOTS_DIR}`);
}

async function main(): Promise<void> {
  const bench = await startBenchStack("console");
  const blank = await blankPage();
  const browser = await launchChromium();
  try {
    const { stack } = bench;
    await furnish(stack);
    if (SCREENSHOTS) {
      await screenshots(browser, stack.consoleUrl);
      return;
    }
    // The console is built on its first request: out of the measured loads.
    await load(browser, stack.consoleUrl, true);
    await load(browser, blank.url, false);
    const consoleLoads: Load[] = [];
    const blankLoads: Load[] = [];
    for (let run = 0; run < RUNS; run++) {
      // Alternated, so drift in the machine's load hits both alike.
      consoleLoads.push(await load(browser, stack.consoleUrl, true));
      blankLoads.push(await load(browser, blank.url, false));
    }
    const tti = consoleLoads.map((l) => l.interactiveMs);
    const listed = consoleLoads.map((l) => l.listedMs ?? Number.NaN);
    const blankTti = blankLoads.map((l) => l.interactiveMs);
    const kb = (bytes: number) => (bytes / 1024).toFixed(1);
    console.log(
      `console first load, ${RUNS} runs each, fresh context (empty cache) per load, Chromium headless\n`,
    );
    printTable(
      [
        "page",
        "JS gz KB",
        "interactive p50 ms",
        "p90 ms",
        "models listed p50 ms",
        "interactive / blank (p50)",
      ],
      [
        [
          "console",
          kb(median(consoleLoads.map((l) => l.scriptBytes))),
          formatMs(median(tti)),
          formatMs(percentile(tti, 90)),
          formatMs(median(listed)),
          (median(tti) / median(blankTti)).toFixed(2),
        ],
        ["blank page", "0.0", formatMs(median(blankTti)), formatMs(percentile(blankTti, 90)), "-", "1.00"],
      ],
    );
  } finally {
    await browser.close();
    await blank.close();
    await bench.close();
  }
}

await main();
