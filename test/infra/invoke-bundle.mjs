// Invokes one handler of a synthesized bundle the way Lambda's Node.js runtime does: imports the
// module from the asset directory, calls the export once with the event and a context, and writes
// the result (or the error) as JSON to a file. Run in its own process so bundles share no state.

import { randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [modulePath, exportName, eventFile, resultFile] = process.argv.slice(2);
const event = JSON.parse(readFileSync(eventFile, "utf8"));
const functionName = process.env.AWS_LAMBDA_FUNCTION_NAME ?? "bundle";
const deadline = Date.now() + 60_000;
const context = {
  callbackWaitsForEmptyEventLoop: true,
  functionName,
  functionVersion: "$LATEST",
  invokedFunctionArn: `arn:aws:lambda:${process.env.AWS_REGION}:000000000000:function:${functionName}`,
  memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE ?? "128",
  awsRequestId: randomUUID(),
  logGroupName: `/aws/lambda/${functionName}`,
  logStreamName: "smoke",
  getRemainingTimeInMillis: () => deadline - Date.now(),
  done: () => {},
  fail: () => {},
  succeed: () => {},
};

try {
  const module = await import(pathToFileURL(modulePath).href);
  if (typeof module[exportName] !== "function")
    throw new Error(`${modulePath} exports no function ${exportName}`);
  const result = await module[exportName](event, context);
  writeFileSync(resultFile, JSON.stringify({ ok: true, result }));
} catch (error) {
  writeFileSync(resultFile, JSON.stringify({ ok: false, error: String(error?.stack ?? error) }));
}
