/**
 * `npm run bench:ab -- <git ref> [rounds]`: `npm run bench` on a commit and on the working tree, in
 * alternating rounds (ABBA), on one machine; prints each round's warm and cold figures and their
 * medians. A change to the serving path is within the noise when its medians sit inside the spread
 * of the other tree's rounds. The commit is checked out in a worktree under the system's temp folder
 * that shares this tree's node_modules (so it needs no dependency this tree lacks).
 */
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { formatMs, median, printTable } from "./stats.ts";

const run = promisify(execFile);

interface Figures {
  readonly irisOverheadMs: number;
  readonly mlpOverheadMs: number;
  readonly mlpRatio: number;
  readonly coldRatio: number;
}

/** The figures `npm run bench` prints: its warm table's rows and its cold summary line. */
export function parseBench(output: string): Figures {
  const row = (model: string) => {
    const line = output.split("\n").find((text) => text.startsWith(`| ${model}`));
    const cells = line?.split("|").map((cell) => cell.trim());
    if (cells === undefined) throw new Error(`no warm row for ${model} in:\n${output}`);
    return { overhead: Number(cells[4]), ratio: Number(cells[5]) };
  };
  const cold = /handler without the emulator's transfer: [\d.]+ ms, ([\d.]+) × raw/.exec(output);
  if (cold === null) throw new Error(`no cold summary in:\n${output}`);
  return {
    irisOverheadMs: row("iris").overhead,
    mlpOverheadMs: row("mlp50").overhead,
    mlpRatio: row("mlp50").ratio,
    coldRatio: Number(cold[1]),
  };
}

async function worktree(ref: string): Promise<string> {
  const { stdout } = await run("git", ["rev-parse", "--short", ref]);
  const dir = join(tmpdir(), `maas-ab-${stdout.trim()}`);
  if (!existsSync(dir)) {
    await run("git", ["worktree", "add", "--detach", dir, ref]);
    await symlink(join(process.cwd(), "node_modules"), join(dir, "node_modules"));
  }
  return dir;
}

function bench(cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--disable-warning=ExperimentalWarning", "--import", "tsx", "bench/inference.ts"],
      { cwd, stdio: ["ignore", "pipe", "inherit"] },
    );
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(output) : reject(new Error(`bench in ${cwd} exited ${code}`)),
    );
  });
}

async function main() {
  const [ref, roundsArg] = process.argv.slice(2);
  if (ref === undefined) throw new Error("usage: npm run bench:ab -- <git ref> [rounds]");
  const rounds = Number(roundsArg ?? 3);
  const trees = { [ref]: await worktree(ref), "working tree": process.cwd() };
  const names = Object.keys(trees);
  const results: Record<string, Figures[]> = Object.fromEntries(names.map((name) => [name, []]));
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? names : [...names].reverse();
    for (const name of order) {
      const figures = parseBench(await bench(trees[name]!));
      results[name]!.push(figures);
      console.error(`round ${round + 1}, ${name}: ${JSON.stringify(figures)}`);
    }
  }
  const column = (name: string, key: keyof Figures, format: (value: number) => string) => {
    const values = results[name]!.map((figures) => figures[key]);
    return `${values.map(format).join(" ")} (median ${format(median(values))})`;
  };
  const ratio = (value: number) => value.toFixed(3);
  printTable(
    ["tree", "iris overhead ms", "MLP overhead ms", "warm MLP ratio", "cold ratio without transfer"],
    names.map((name) => [
      name,
      column(name, "irisOverheadMs", formatMs),
      column(name, "mlpOverheadMs", formatMs),
      column(name, "mlpRatio", ratio),
      column(name, "coldRatio", ratio),
    ]),
  );
}

await main();
