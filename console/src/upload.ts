/**
 * Publishing from the browser: each file PUT to its presigned URL with XMLHttpRequest (fetch reports no
 * upload progress), in the order the admin API gave (model.onnx last: registration reads the others
 * when it arrives). Files above one part go up in parts, as S3 clients do (the local S3 emulator takes
 * at most about 11 MiB in one request).
 */
import { ApiError } from "./api.ts";
import type { UploadTickets } from "./schemas.ts";

export const PART_BYTES = 8 * 1024 * 1024;

/** How many parts a file goes up in: 1 is a single PUT. */
export function partsFor(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / PART_BYTES));
}

export type Progress = (file: string, loaded: number, total: number) => void;

/** S3 answers errors in XML: its Message is what the publisher needs. */
function storageError(status: number, text: string): ApiError {
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
  return new ApiError(
    status,
    `The upload was refused (${status}): ${message ?? (text.slice(0, 200) || "no reason given")}`,
  );
}

function send(
  method: "PUT" | "POST",
  url: string,
  body: Blob | string,
  onProgress: (loaded: number) => void,
): Promise<XMLHttpRequest> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr);
      else reject(storageError(xhr.status, xhr.responseText));
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "The upload failed: the connection was lost.")),
    );
    xhr.addEventListener("abort", () => reject(new ApiError(0, "The upload was cancelled.")));
    xhr.send(body);
  });
}

export async function uploadFiles(
  tickets: UploadTickets,
  files: ReadonlyMap<string, File>,
  base: URL,
  onProgress: Progress,
): Promise<void> {
  for (const ticket of tickets.uploads) {
    const file = files.get(ticket.file);
    if (file === undefined) throw new ApiError(0, `${ticket.file} was not chosen`);
    const absolute = (url: string) => new URL(url, base).toString();
    if ("url" in ticket) {
      await send("PUT", absolute(ticket.url), file, (loaded) => onProgress(ticket.file, loaded, file.size));
      onProgress(ticket.file, file.size, file.size);
      continue;
    }
    const etags: string[] = [];
    for (const [index, partUrl] of ticket.partUrls.entries()) {
      const start = index * PART_BYTES;
      const part = file.slice(start, Math.min(file.size, start + PART_BYTES));
      const xhr = await send("PUT", absolute(partUrl), part, (loaded) =>
        onProgress(ticket.file, start + loaded, file.size),
      );
      const etag = xhr.getResponseHeader("ETag");
      if (etag === null)
        throw new ApiError(0, "The storage did not say which part it received (no ETag header).");
      etags.push(etag);
    }
    const parts = etags
      .map((etag, index) => `<Part><PartNumber>${index + 1}</PartNumber><ETag>${etag}</ETag></Part>`)
      .join("");
    const xml = `<CompleteMultipartUpload>${parts}</CompleteMultipartUpload>`;
    const completed = await send("POST", absolute(ticket.completeUrl), xml, () => undefined);
    // S3 may answer 200 with an error in the body when completion fails late.
    if (completed.responseText.includes("<Error>"))
      throw storageError(completed.status, completed.responseText);
    onProgress(ticket.file, file.size, file.size);
  }
}
