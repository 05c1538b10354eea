/**
 * `maas capture` end to end against a local stack, as an operator runs it: read a model's captured
 * exchanges back from the bucket (a window, a limit, following new ones), and switch a version's
 * capture through the admin API. The CLI runs as its own process and finds the stack through
 * <data dir>/stack.json, as `npm start` leaves it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { captureHourPrefix } from "#core/capture/payload-capture.ts";
import { isServable } from "#core/registry/registry.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { CLI, ROOT, runMaas, startCliStack } from "../support/cli.ts";
import { stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";

/** Opted in through its manifest at 100%: every exchange is captured. */
const CAPTURED = "cli-captured";
/** Never opted in. */
const QUIET = "cli-quiet";
/** Switched on and off by the CLI. */
const SWITCHED = "cli-switched";
const SENT = 3;

let stack: LocalStack;
let dataDir: string | undefined;

interface CaptureLine {
  captureData: {
    endpointInput?: { mode: string; data: string; encoding: string };
    endpointOutput?: { mode: string; data: string; encoding: string };
  };
  eventMetadata: { eventId: string; inferenceTime: string; model: string; version: number };
  eventVersion: string;
}

/** Runs `maas <args>` as a user would, against the stack named by the data dir's stack.json. */
const maas = (...args: string[]) => runMaas(dataDir, args, 60_000);

function lines(stdout: string): CaptureLine[] {
  return stdout
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as CaptureLine);
}

function request(id: string, row: number): string {
  return JSON.stringify({
    id,
    inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [row, row + 1, row + 2, row + 3] }],
  });
}

/** One infer request, then the capture writes: the exchange is in the bucket when this returns. */
async function infer(model: string, body: string): Promise<void> {
  const response = await fetch(`${stack.url}/v2/models/${model}/infer`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body,
  });
  expect(response.status, await response.text()).toBe(200);
  await stack.inference.capture?.drain();
}

async function captureOf(model: string, version: number) {
  const record = await stack.registry.getVersionConsistent(model, version);
  return record === undefined || !isServable(record) ? undefined : record.capture;
}

/** A capture line as the inference function writes it, for the lines this test puts in the bucket itself. */
function handWritten(eventId: string, time: number, data: string): string {
  return JSON.stringify({
    captureData: {
      endpointInput: { observedContentType: "application/json", mode: "INPUT", data, encoding: "JSON" },
    },
    eventMetadata: {
      eventId,
      inferenceTime: new Date(time).toISOString(),
      model: "cli-written",
      version: 1,
      backend: "lambda",
      variant: "original",
    },
    eventVersion: "0",
  });
}

async function putCapture(key: string, body: string): Promise<void> {
  await stack.emulators.s3Client().send(new PutObjectCommand({ Bucket: stack.bucket, Key: key, Body: body }));
}

/** Collects a child's output as it comes. */
function collect(child: ChildProcess) {
  const output = { stdout: "", stderr: "" };
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    output.stdout += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    output.stderr += chunk;
  });
  return output;
}

async function until(what: string, done: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((wake) => setTimeout(wake, 100));
  }
}

let lastSentAt = 0;

beforeAll(async () => {
  ({ stack, dataDir } = await startCliStack("cli-capture", { demo: false }));
  const model = (seed: number) => buildMlpModel({ layers: [4, 8, 3], seed });
  await stack.publish(CAPTURED, 1, model(3), { manifest: { capture: { samplePercent: 100 } } });
  await stack.publish(QUIET, 1, model(5));
  await stack.publish(SWITCHED, 1, model(7));
  for (let row = 0; row < SENT; row++) await infer(CAPTURED, request(`sent-${row}`, row));
  await infer(QUIET, request("quiet-0", 0));
  lastSentAt = Date.now();
}, 120_000);

afterAll(() => stopTestStack(stack, dataDir));

describe("maas capture against a local stack", () => {
  it("prints each captured exchange of the window once, oldest first, as the request was sent", async () => {
    const result = await maas("capture", CAPTURED, "--since", "1h");

    expect(result.code, result.stderr).toBe(0);
    const printed = lines(result.stdout);
    expect(printed).toHaveLength(SENT);
    expect(printed.map((line) => line.captureData.endpointInput?.data)).toEqual(
      Array.from({ length: SENT }, (_, row) => request(`sent-${row}`, row)),
    );
    for (const line of printed) {
      expect(line.eventVersion).toBe("0");
      expect(line.eventMetadata).toMatchObject({ model: CAPTURED, version: 1 });
      expect(line.captureData.endpointInput).toMatchObject({ mode: "INPUT", encoding: "JSON" });
      expect(JSON.parse(line.captureData.endpointOutput?.data ?? "")).toMatchObject({
        model_name: CAPTURED,
        model_version: "1",
      });
    }
    const times = printed.map((line) => Date.parse(line.eventMetadata.inferenceTime));
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(new Set(printed.map((line) => line.eventMetadata.eventId)).size).toBe(SENT);
  });

  it("prints only the last N exchanges with --limit N, and the same with --version 1", async () => {
    const limited = await maas("capture", CAPTURED, "--limit", "2");
    const versioned = await maas("capture", CAPTURED, "--version", "1", "--limit", "2");

    expect(limited.code, limited.stderr).toBe(0);
    expect(lines(limited.stdout).map((line) => JSON.parse(line.captureData.endpointInput!.data).id)).toEqual([
      "sent-1",
      "sent-2",
    ]);
    expect(versioned.code, versioned.stderr).toBe(0);
    expect(versioned.stdout).toBe(limited.stdout);
  });

  it("leaves out exchanges older than --since", async () => {
    await until("a second past the last capture", () => Date.now() - lastSentAt > 1_500, 5_000);

    const result = await maas("capture", CAPTURED, "--since", "1s");

    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(new RegExp(`no captures of ${CAPTURED} in the last 1s`));
  });

  it("prints nothing for a model without captures, with a note on stderr, and exits 0", async () => {
    const quiet = await maas("capture", QUIET);
    const otherVersion = await maas("capture", CAPTURED, "--version", "2");

    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stdout).toBe("");
    expect(quiet.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^maas capture: no captures of/)]);
    expect(otherVersion.code, otherVersion.stderr).toBe(0);
    expect(otherVersion.stdout).toBe("");
    expect(otherVersion.stderr).toMatch(new RegExp(`no captures of ${CAPTURED} version 2 in the last 1h`));
  });

  it("reads every hour of the window, sorts by inference time, and skips malformed lines on stderr", async () => {
    const now = Date.now();
    const current = captureHourPrefix("cli-written", 1, now);
    const threeHoursAgo = captureHourPrefix("cli-written", 1, now - 3 * 3_600_000);
    await putCapture(
      `${current}20200101T000000000Z-aaaaaaaaaaaa.jsonl`,
      [
        handWritten("late", now - 1_000, "late"),
        '{"captureData": {"endpointInput"',
        handWritten("early", now - 60_000, "early"),
        handWritten("stale", now - 5 * 3_600_000, "stale"),
        JSON.stringify({ eventVersion: "0" }),
        "",
      ].join("\n"),
    );
    await putCapture(
      `${threeHoursAgo}20200101T000000000Z-bbbbbbbbbbbb.jsonl`,
      `${handWritten("old", now - 3 * 3_600_000 + 1_000, "old")}\n`,
    );

    const lastHour = await maas("capture", "cli-written", "--since", "1h");
    const lastFour = await maas("capture", "cli-written", "--since", "4h");

    expect(lastHour.code, lastHour.stderr).toBe(0);
    expect(lines(lastHour.stdout).map((line) => line.eventMetadata.eventId)).toEqual(["early", "late"]);
    expect(lastHour.stderr).toMatch(/skipped line 2 of capture\/cli-written\/1\/.*: not JSON/);
    expect(lastHour.stderr).toMatch(/skipped line 5 of capture\/cli-written\/1\/.*: not a capture line/);
    expect(lastFour.code, lastFour.stderr).toBe(0);
    expect(lines(lastFour.stdout).map((line) => line.eventMetadata.eventId)).toEqual([
      "old",
      "early",
      "late",
    ]);
  });

  it("refuses bad usage with exit code 2 and a message that says what is wrong", async () => {
    const duration = await maas("capture", CAPTURED, "--since", "5x");
    const alias = await maas("capture", CAPTURED, "--version", "latest");
    const name = await maas("capture", "Not/A/Model");
    const unversioned = await maas("capture", CAPTURED, "--set", "50");
    const percent = await maas("capture", CAPTURED, "--version", "1", "--set", "150");
    const limit = await maas("capture", CAPTURED, "--limit", "0");

    for (const result of [duration, alias, name, unversioned, percent, limit]) {
      expect(result.code, result.stderr).toBe(2);
      expect(result.stdout).toBe("");
    }
    expect(duration.stderr).toMatch(/--since '5x' is not a duration/);
    expect(alias.stderr).toMatch(/--version 'latest' is not a version number/);
    expect(name.stderr).toMatch(/'Not\/A\/Model' is not a valid model name/);
    expect(unversioned.stderr).toMatch(/--set needs --version/);
    expect(percent.stderr).toMatch(/--set '150' is not a percentage/);
    expect(limit.stderr).toMatch(/--limit '0' is not a positive whole number/);
    expect(await captureOf(CAPTURED, 1)).toEqual({ samplePercent: 100, requests: true, responses: true });
  });

  it("switches a version's capture on with --set and off with --off, through the admin API", async () => {
    const on = await maas("capture", SWITCHED, "--version", "1", "--set", "50");
    const afterOn = await captureOf(SWITCHED, 1);
    const requestsOnly = await maas(
      "capture",
      SWITCHED,
      "--version",
      "1",
      "--set",
      "20",
      "--no-responses",
      "--json",
    );
    const afterRequestsOnly = await captureOf(SWITCHED, 1);
    const off = await maas("capture", SWITCHED, "--version", "1", "--off");
    const afterOff = await captureOf(SWITCHED, 1);

    expect(on.code, on.stderr).toBe(0);
    expect(on.stdout.trim()).toBe(
      `${SWITCHED} version 1 captures 50% of its exchanges: requests and responses; inference sees it within the registry cache's TTL`,
    );
    expect(afterOn).toEqual({ samplePercent: 50, requests: true, responses: true });
    expect(requestsOnly.code, requestsOnly.stderr).toBe(0);
    expect(JSON.parse(requestsOnly.stdout)).toMatchObject({
      name: SWITCHED,
      version: 1,
      capture: { samplePercent: 20, requests: true, responses: false },
    });
    expect(afterRequestsOnly).toEqual({ samplePercent: 20, requests: true, responses: false });
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout).toMatch(new RegExp(`^${SWITCHED} version 1 captures nothing;`));
    expect(afterOff?.samplePercent).toBe(0);
  });

  it("--follow prints an exchange captured after it started, once, until interrupted", async () => {
    const child = spawn(process.execPath, [...CLI, "capture", CAPTURED, "--follow", "--since", "1h"], {
      cwd: ROOT,
      env: { ...process.env, MAAS_DATA_DIR: dataDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const output = collect(child);
    const exited = once(child, "exit");
    try {
      await until(
        "the follower printed the window and started following",
        () => output.stderr.includes("following") && output.stdout.split("\n").length > SENT,
      );
      expect(lines(output.stdout)).toHaveLength(SENT);

      await infer(CAPTURED, request("followed", 42));
      await until("the new exchange printed", () => output.stdout.includes('\\"id\\":\\"followed\\"'));
      // Another poll or two: what was printed is not printed again.
      await new Promise((wake) => setTimeout(wake, 4_500));
    } finally {
      child.kill("SIGINT");
    }
    const [code] = await exited;

    expect(code, output.stderr).toBe(0);
    const printed = lines(output.stdout);
    expect(printed.map((line) => JSON.parse(line.captureData.endpointInput!.data).id)).toEqual([
      "sent-0",
      "sent-1",
      "sent-2",
      "followed",
    ]);
    expect(printed[SENT]?.captureData.endpointInput?.data).toBe(request("followed", 42));
  }, 40_000);
});
