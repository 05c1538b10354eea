/**
 * The web console end to end: the real local stack (emulators, functions, gateway) and Debian's Chromium,
 * driven as an operator would drive it: sign in, list, open, try, publish by drag-and-drop, promote, roll back.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildConsole } from "../../console/build.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildBertClassifierModel, buildBertEmbeddingModel } from "../../models/bert.ts";
import { buildCnnModel } from "../../models/cnn.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { startTestStack, stopTestStack, TEST_ADMIN_KEY, TEST_API_KEY } from "../support/local-stack.ts";
import { CREDENTIALS_KEY, dropFiles, launchChromium, signedInPage, waitForValue } from "./chromium.ts";

const KEYS = { adminKey: TEST_ADMIN_KEY, apiKey: TEST_API_KEY };
const JS_BUDGET_BYTES = 300 * 1024;
/** Registration and optimization of the small models here take seconds; this bounds a stuck one. */
const SETTLE_MS = 90_000;
const DROPZONE = "[data-testid=publish-dropzone]";
const PICTURE_LABELS = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
const TOKENIZER = join(
  import.meta.dirname,
  "..",
  "..",
  "models",
  "fixtures",
  "bert-uncased",
  "tokenizer.json",
);

let stack: LocalStack | undefined;
let dataDir: string | undefined;
let browser: Browser | undefined;
const pages: Page[] = [];

function started(): { stack: LocalStack; browser: Browser } {
  if (stack === undefined || browser === undefined) throw new Error("the stack or the browser did not start");
  return { stack, browser };
}

async function open(hash: string, viewport?: { width: number; height: number }): Promise<Page> {
  const { stack, browser } = started();
  const page = await signedInPage(browser, KEYS, viewport);
  pages.push(page);
  await page.goto(`${stack.consoleUrl}${hash}`);
  await page.waitForSelector("html[data-ready=true]");
  return page;
}

async function infer(model: string, body: unknown): Promise<Response> {
  return fetch(`${started().stack.url}/v2/models/${model}/infer`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** Publishes version 1 through the admin API's presigned uploads, as the console does, and waits for it. */
async function publishThroughTheApi(
  model: string,
  files: Record<string, string | Uint8Array>,
): Promise<void> {
  const { stack } = started();
  const answer = await fetch(`${stack.url}/admin/models/${model}/versions/1/uploads`, {
    method: "POST",
    headers: { "x-api-key": TEST_ADMIN_KEY, "content-type": "application/json" },
    body: JSON.stringify({ files: Object.keys(files) }),
  });
  const { uploads } = (await answer.json()) as { uploads: { file: string; url: string }[] };
  for (const upload of uploads) {
    const put = await fetch(`${stack.url}${upload.url}`, { method: "PUT", body: files[upload.file] });
    if (!put.ok) throw new Error(`${upload.file}: ${put.status} ${await put.text()}`);
  }
  const version = await stack.waitForVersion(model, 1);
  if (version.status === "failed") throw new Error(`${model} failed: ${version.reason}`);
}

const irisRow = (features: number[]) => ({
  inputs: [{ name: "features", shape: [1, 4], datatype: "FP32", data: [features] }],
});

describe("the web console", () => {
  beforeAll(async () => {
    ({ stack, dataDir } = await startTestStack("e2e-console"));
    browser = await launchChromium();
    const iris = buildIrisModel();
    await stack.publish("lilies", 1, iris);
    await stack.publish("lilies", 2, iris);
    await stack.publish("broken", 1, new TextEncoder().encode("these bytes are not a model"));
    await stack.publish("pictures", 1, buildCnnModel(), {
      manifest: { task: "image-classification", labels: PICTURE_LABELS },
    });
    await publishThroughTheApi("embedder", {
      "maas.json": JSON.stringify({
        task: "feature-extraction",
        tokenizer: "tokenizer.json",
        normalize: true,
      }),
      "tokenizer.json": await readFile(TOKENIZER),
      "model.onnx": buildBertEmbeddingModel({ hidden: 8 }),
    });
  });

  afterAll(async () => {
    for (const page of pages) await page.close().catch(() => undefined);
    await browser?.close();
    await stopTestStack(stack, dataDir);
  });

  it("serves its files without a key and with a tight security policy, while the API still takes the keys", async () => {
    const { stack } = started();

    const page = await fetch(stack.consoleUrl);
    const bare = await fetch(`${stack.url}/console`, { redirect: "manual" });
    const config = await fetch(`${stack.url}/console/config.json`);
    const missing = await fetch(`${stack.url}/console/nothing-here.js`);
    const admin = await fetch(`${stack.url}/admin/models`);

    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toBe(
      "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; " +
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    );
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    expect(page.headers.get("referrer-policy")).toBe("no-referrer");
    expect(await page.text()).toMatch(/<script type="module" src="main-[A-Z0-9]+\.js">/);
    expect([bare.status, bare.headers.get("location")]).toEqual([308, "/console/"]);
    expect(await config.json()).toEqual({ auth: "key" });
    expect(missing.status).toBe(404);
    expect(admin.status).toBe(403);
  });

  it("loads under 300 KB of gzipped JavaScript, from its own origin only", async () => {
    const { stack, browser } = started();
    const outDir = await mkdtemp(join(tmpdir(), "maas-console-build-"));
    const built = await buildConsole(outDir).finally(() => rm(outDir, { recursive: true, force: true }));
    const page = await signedInPage(browser, KEYS);
    pages.push(page);
    const requested: string[] = [];
    const scriptBytes: Promise<number>[] = [];
    page.on("request", (request) => requested.push(request.url()));
    page.on("response", (response) => {
      if (response.request().resourceType() === "script") {
        // What went over the wire: the gateway serves the scripts gzipped.
        scriptBytes.push(response.headerValue("content-length").then((length) => Number(length)));
      }
    });

    await page.goto(stack.consoleUrl);
    await page.getByRole("link", { name: "iris", exact: true }).waitFor();
    const served = (await Promise.all(scriptBytes)).reduce((sum, bytes) => sum + bytes, 0);

    expect(built.jsGzipBytes).toBeGreaterThan(0);
    expect(built.jsGzipBytes).toBeLessThan(JS_BUDGET_BYTES);
    expect(served).toBeGreaterThan(0);
    expect(served).toBeLessThan(JS_BUDGET_BYTES);
    expect(requested.filter((url) => !url.startsWith(`${stack.url}/`))).toEqual([]);
  });

  it("signs in with the two keys, keeps them in this tab's sessionStorage only, and shows the API's refusal of a wrong key", async () => {
    const { stack, browser } = started();
    const page = await browser.newPage();
    pages.push(page);
    await page.goto(stack.consoleUrl);

    await page.getByLabel("Admin key").fill(TEST_API_KEY);
    await page.getByLabel("API key", { exact: true }).fill(TEST_ADMIN_KEY);
    await page.getByRole("button", { name: "Sign in" }).click();
    const refusal = await page.getByRole("alert").textContent();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("Admin key").fill(TEST_ADMIN_KEY);
    await page.getByLabel("API key", { exact: true }).fill(TEST_API_KEY);
    await page.getByLabel("API key", { exact: true }).press("Enter");
    await page.getByRole("link", { name: "iris", exact: true }).waitFor();
    const stored = await page.evaluate(
      `[sessionStorage.getItem(${JSON.stringify(CREDENTIALS_KEY)}), localStorage.length, document.cookie]`,
    );

    expect(refusal).toContain("the key was refused");
    expect(stored).toEqual([JSON.stringify(KEYS), 0, ""]);
  });

  it("lists every model with its versions, statuses and aliases, shows a failed version's reason, and filters", async () => {
    const { stack } = started();
    const broken = await stack.registry.getVersion("broken", 1);
    const page = await open("#/models");
    await page.getByRole("link", { name: "lilies version 2" }).waitFor();

    const irisRow = page
      .getByRole("row")
      .filter({ has: page.getByRole("link", { name: "iris", exact: true }) });
    const brokenRow = page
      .getByRole("row")
      .filter({ has: page.getByRole("link", { name: "broken", exact: true }) });
    const irisText = await irisRow.textContent();
    const brokenText = await brokenRow.textContent();
    await page.getByRole("searchbox", { name: "Filter" }).fill("lilies");
    const filtered = await page.locator("tbody tr th a").allTextContents();

    expect(irisText).toMatch(/^iris1(ready|optimizing)lambda/);
    expect(broken?.status).toBe("failed");
    expect(brokenText).toContain(`Failed: ${broken?.reason}`);
    expect(filtered).toEqual(["lilies", "lilies"]);
  });

  it("opens iris, runs the try-it form on a flower and shows its species, latency and backend", async () => {
    const page = await open("#/models");
    await page.getByRole("link", { name: "iris", exact: true }).click();
    await page.getByRole("heading", { name: "Signature" }).waitFor();
    await page.getByRole("link", { name: "Try it" }).click();

    await page.getByLabel(/features/).fill("[[5.1, 3.5, 1.4, 0.2]]");
    await page.getByRole("button", { name: "Run" }).click();
    const answer = page.getByRole("region", { name: "Answer" });
    await answer.waitFor();
    const species = await answer.locator(".bytes-output").textContent();
    const facts = await answer.locator("dl").textContent();

    expect(species).toBe("setosa");
    expect(facts).toMatch(/Latency[\d.]+ ms/);
    expect(facts).toContain("Backendlambda");
    expect(facts).toContain("Version1");
    expect(facts).toMatch(/Variant(original|graph-extended)/);
  });

  it("shows a text embedding's norm and first values", async () => {
    const page = await open("#/models/embedder/try");
    await page.getByLabel("Texts, one per line").fill("first text\nsecond");
    await page.getByRole("button", { name: "Run" }).click();
    const table = page.getByRole("table", { name: /Embeddings, 8 dimensions/ });
    await table.waitFor();
    const norms = await table.locator("tbody td:nth-child(2)").allTextContents();
    const firstValues = await table.locator("tbody td:nth-child(3)").allTextContents();

    expect(norms.map(Number).map((norm) => Math.round(norm * 1000) / 1000)).toEqual([1, 1]);
    expect(firstValues[0]?.split(", ")).toHaveLength(8);
  });

  it("classifies images dropped on an image model's try-it panel and shows their labels as bars", async () => {
    const red = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#c0302a" } })
      .png()
      .toBuffer();
    const blue = await sharp({ create: { width: 40, height: 40, channels: 3, background: "#2a40c0" } })
      .jpeg()
      .toBuffer();
    const page = await open("#/models/pictures/try");
    await page.getByRole("radio", { name: /Images/ }).waitFor();

    await dropFiles(page, "[data-testid=image-dropzone]", [
      { name: "red.png", bytes: red, type: "image/png" },
      { name: "blue.jpg", bytes: blue, type: "image/jpeg" },
    ]);
    await page.getByRole("img", { name: "blue.jpg" }).waitFor();
    await page.getByLabel("Top labels").fill("2");
    await page.getByRole("button", { name: "Run" }).click();
    const rows = page.locator("figure.bars");
    await rows.first().waitFor();
    const captions = await rows.locator("figcaption").allTextContents();
    const labels = await rows.locator(".bar-label").allTextContents();

    expect(captions).toEqual(["Row 1", "Row 2"]);
    expect(labels).toHaveLength(4);
    expect(labels.every((label) => PICTURE_LABELS.includes(label))).toBe(true);
  });

  it("fills a tensor input with random values of the right shape and shows the API's error for a wrong one", async () => {
    const page = await open("#/models/iris/try");
    const features = page.getByLabel(/features/);
    await features.fill("[[1, 2, 3]]");
    await page.getByRole("button", { name: "Run" }).click();
    const error = await page.getByRole("alert").textContent();
    await page.getByRole("button", { name: "Random features of the right shape" }).click();
    const random = JSON.parse(await features.inputValue()) as number[][];
    await page.getByRole("button", { name: "Run" }).click();
    await page.getByRole("region", { name: "Answer" }).waitFor();

    expect(error).toMatch(/\(400\).*features/);
    expect(random).toHaveLength(1);
    expect(random[0]).toHaveLength(4);
  });

  it("publishes a model dropped on the page, with upload progress, and follows it until it is ready", async () => {
    const { stack } = started();
    const page = await open("#/publish");
    await page.getByLabel("Model name").fill("flowers");
    await page.getByLabel("Version").fill("1");

    await dropFiles(page, DROPZONE, [{ name: "iris-classifier.onnx", bytes: buildIrisModel() }]);
    await page.getByText("iris-classifier.onnx").waitFor();
    await page.getByRole("button", { name: "Publish" }).click();
    await page.getByText(/Ready on lambda/).waitFor({ timeout: SETTLE_MS });
    const progress = await page
      .getByRole("progressbar", { name: "model.onnx uploaded" })
      .getAttribute("value");
    const record = await stack.registry.getVersion("flowers", 1);
    await page.getByRole("link", { name: "Try it" }).last().click();
    await page.getByLabel(/features/).fill("[[6.7, 3.0, 5.2, 2.3]]");
    await page.getByRole("button", { name: "Run" }).click();
    const species = await page.locator(".bytes-output").textContent();

    expect(progress).toBe("1");
    expect(record?.status).toBe("ready");
    expect(species).toBe("virginica");
  });

  it("publishes a text classifier with its manifest and tokenizer and shows its labels and scores as bars", async () => {
    const page = await open("#/publish");
    const labels = ["negative", "neutral", "positive"];
    const manifest = { task: "text-classification", tokenizer: "tokenizer.json", labels, maxLength: 64 };
    await page.getByLabel("Model name").fill("reviews");
    await page.getByLabel("Version").fill("1");

    await dropFiles(page, DROPZONE, [
      { name: "classifier.onnx", bytes: buildBertClassifierModel({ labels: 3, hidden: 8 }) },
      {
        name: "maas.json",
        bytes: new TextEncoder().encode(JSON.stringify(manifest)),
        type: "application/json",
      },
      { name: "tokenizer.json", bytes: await readFile(TOKENIZER), type: "application/json" },
    ]);
    await page.getByRole("button", { name: "Publish" }).click();
    await page.getByText(/Ready on lambda/).waitFor({ timeout: SETTLE_MS });
    await page.getByRole("link", { name: "Try it" }).last().click();
    await page.getByLabel("Texts, one per line").fill("I love it\nnever again");
    await page.getByRole("button", { name: "Run" }).click();
    const rows = page.locator("figure.bars");
    await rows.first().waitFor();
    const captions = await rows.locator("figcaption").allTextContents();
    const shown = await rows.first().locator(".bar-label").allTextContents();

    expect(captions).toEqual(["Row 1", "Row 2"]);
    expect([...shown].sort()).toEqual(labels);
  });

  it("shows why a failed upload failed, and refuses files it cannot publish before uploading anything", async () => {
    const { stack } = started();
    const page = await open("#/publish");
    await page.getByLabel("Model name").fill("scribbles");
    await page.getByLabel("Version").fill("1");

    await dropFiles(page, DROPZONE, [
      { name: "notes.onnx", bytes: new TextEncoder().encode("just some notes, not a model") },
      { name: "notes.txt", bytes: new TextEncoder().encode("plain text") },
    ]);
    const refused = await page.getByRole("alert").textContent();
    await page.getByRole("button", { name: "Publish" }).click();
    const failure = page.getByText("Registration failed:");
    await failure.waitFor({ timeout: SETTLE_MS });
    const shown = await page.getByRole("alert").filter({ hasText: "Registration failed" }).textContent();
    const record = await stack.registry.getVersion("scribbles", 1);

    expect(refused).toContain("notes.txt");
    expect(record?.status).toBe("failed");
    expect(shown).toBe(`Registration failed: ${record?.reason}`);
  });

  it("refuses to publish over a version that exists, with the API's reason", async () => {
    const page = await open("#/publish/lilies");
    // The page suggests the next free version first; the operator overrides it.
    await waitForValue(page.getByLabel("Version"), "3");
    await page.getByLabel("Version").fill("1");

    await dropFiles(page, DROPZONE, [{ name: "model.onnx", bytes: buildIrisModel() }]);
    await page.getByRole("button", { name: "Publish" }).click();
    const error = await page.getByRole("alert").filter({ hasText: "did not finish" }).textContent();

    expect(error).toContain("(409)");
    expect(error).toContain("version 1 of model 'lilies' already exists");
  });

  it("moves an alias and rolls it back, each after a confirmation that can be cancelled", async () => {
    const { stack } = started();
    const page = await open("#/models/lilies");
    const moveForm = page.getByRole("form", { name: "Move an alias" });
    const dialog = page.getByRole("dialog");

    await moveForm.getByLabel("Version").selectOption("1");
    await moveForm.getByRole("button", { name: "Move alias" }).click();
    await dialog.getByRole("button", { name: "Move alias" }).click();
    await page.getByText("Alias default now points at version 1.").waitFor();
    await moveForm.getByLabel("Version").selectOption("2");
    await moveForm.getByRole("button", { name: "Move alias" }).click();
    await dialog.getByRole("button", { name: "Move alias" }).click();
    await page.getByText("Alias default now points at version 2.").waitFor();
    await page.getByRole("button", { name: "Roll back default to version 1" }).click();
    await dialog.getByRole("button", { name: "Cancel" }).click();
    const afterCancel = await stack.registry.getAliasRecord("lilies", "default");
    await page.getByRole("button", { name: "Roll back default to version 1" }).click();
    const question = await dialog.textContent();
    await dialog.getByRole("button", { name: "Roll back" }).click();
    await page.getByText("Alias default rolled back to version 1.").waitFor();
    const afterRollback = await stack.registry.getAliasRecord("lilies", "default");

    expect(afterCancel).toMatchObject({ version: 2, previous: 1 });
    expect(question).toContain("go back from version 2 to version 1");
    expect(afterRollback).toMatchObject({ version: 1, previous: 2 });
  });

  it("charts a model's requests, errors and latency per minute", async () => {
    for (let i = 0; i < 3; i++)
      expect((await infer("lilies", irisRow([5.1, 3.5, 1.4, 0.2]))).status).toBe(200);
    expect((await infer("lilies", irisRow([1, 2, 3]))).status).toBe(400);
    const page = await open("#/models/lilies/figures");

    const summary = page.getByRole("definition");
    await page.locator("figure.chart canvas").first().waitFor();
    const [requests, errors] = await summary.allTextContents();
    const charts = await page.locator("figure.chart canvas").count();

    expect(Number(requests)).toBeGreaterThanOrEqual(4);
    expect(errors).toMatch(/^1 \(/);
    expect(charts).toBe(2);
  });

  it("fits a 375 px wide phone screen without scrolling sideways", async () => {
    const hashes = ["#/models", "#/models/iris", "#/models/iris/try", "#/models/iris/figures", "#/publish"];
    const widths: Record<string, number> = {};
    for (const hash of hashes) {
      const page = await open(hash, { width: 375, height: 812 });
      await page.getByRole("heading", { level: 1 }).waitFor();
      await page.waitForLoadState("networkidle");
      widths[hash] = Number(await page.evaluate("document.documentElement.scrollWidth"));
    }

    expect(widths).toEqual(Object.fromEntries(hashes.map((hash) => [hash, 375])));
  });

  it("can be used from the keyboard, with the focus visible", async () => {
    const { stack, browser } = started();
    const page = await browser.newPage();
    pages.push(page);
    await page.goto(stack.consoleUrl);
    await page.waitForSelector("html[data-ready=true]");

    await page.keyboard.press("Tab");
    const first = await page.evaluate("document.activeElement.textContent");
    await page.getByLabel("Admin key").focus();
    await page.keyboard.type(TEST_ADMIN_KEY);
    await page.keyboard.press("Tab");
    await page.keyboard.type(TEST_API_KEY);
    await page.keyboard.press("Enter");
    await page.getByRole("link", { name: "iris", exact: true }).waitFor();
    await page.getByRole("link", { name: "iris", exact: true }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Signature" }).waitFor();
    await page.getByRole("link", { name: "Try it" }).focus();
    const outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle");

    expect(first).toBe("Skip to content");
    expect(outline).not.toBe("none");
  });
});
