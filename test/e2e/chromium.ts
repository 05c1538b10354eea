/**
 * Headless Chromium for the console's tests and bench: Debian's package, driven by playwright-core. No
 * browser is downloaded; `.ci/run` installs the package when /usr/bin/chromium is missing.
 */
import { existsSync } from "node:fs";
import { type Browser, chromium, type Locator, type Page } from "playwright-core";

export const CHROMIUM_PATH = "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

export class ChromiumMissingError extends Error {
  readonly status = 500;
  constructor() {
    super(`${CHROMIUM_PATH} is missing: install Debian's chromium package (apt-get install -y chromium)`);
    this.name = "ChromiumMissingError";
  }
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) throw new ChromiumMissingError();
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
}

/** Where the console keeps what the sign-in form took (console/src/auth.ts). */
export const CREDENTIALS_KEY = "maas.console.credentials";

/** A page signed in with the local stack's keys, as if the form had been filled. */
export async function signedInPage(
  browser: Browser,
  keys: { adminKey: string; apiKey: string },
  viewport = { width: 1280, height: 900 },
): Promise<Page> {
  const page = await browser.newPage({ viewport });
  await page.addInitScript(
    `sessionStorage.setItem(${JSON.stringify(CREDENTIALS_KEY)}, ${JSON.stringify(JSON.stringify(keys))});`,
  );
  return page;
}

export interface DroppedFile {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly type?: string;
}

/**
 * Drops files on the element matching `selector` as a person dragging them from their desktop would: a
 * DataTransfer built in the page from the files' bytes, then dragenter, dragover and drop.
 */
export async function dropFiles(page: Page, selector: string, files: readonly DroppedFile[]): Promise<void> {
  const payload = files.map((file) => ({
    name: file.name,
    type: file.type ?? "",
    base64: Buffer.from(file.bytes).toString("base64"),
  }));
  // A string, so that the DOM names in it are the page's (the tests compile without the DOM library).
  await page.evaluate(`(() => {
    const transfer = new DataTransfer();
    for (const file of ${JSON.stringify(payload)}) {
      const bytes = Uint8Array.from(atob(file.base64), (char) => char.charCodeAt(0));
      transfer.items.add(new File([bytes], file.name, { type: file.type }));
    }
    const target = document.querySelector(${JSON.stringify(selector)});
    if (target === null) throw new Error("nothing to drop on: ${selector}");
    for (const type of ["dragenter", "dragover", "drop"]) {
      target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }
  })()`);
}

/**
 * Waits until an input holds `value`. Not `page.waitForFunction`: its polling evaluates a string in the page,
 * which the console's Content-Security-Policy (no 'unsafe-eval') refuses.
 */
export async function waitForValue(input: Locator, value: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await input.inputValue()) !== value) {
    if (Date.now() > deadline) throw new Error(`the input never held ${JSON.stringify(value)}`);
    await new Promise((wake) => setTimeout(wake, 25));
  }
}
