import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { AssetManifestArtifact, type CloudAssembly } from "aws-cdk-lib/cx-api";

/** Lambda's limit on a function's unzipped code (and layers): 250 MB. */
export const LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024;

export interface FunctionAsset {
  readonly stack: string;
  /** Construct path of the function, e.g. `MaasService/Inference/Resource`. */
  readonly path: string;
  readonly logicalId: string;
  /** The asset's directory inside the cloud assembly. */
  readonly directory: string;
  readonly bytes: number;
  readonly files: readonly string[];
}

interface TemplateResource {
  readonly Type?: string;
  readonly Metadata?: Record<string, unknown>;
}

/** Every Lambda function with a directory asset in the assembly (inline handlers have none). */
export function functionAssets(assembly: CloudAssembly): FunctionAsset[] {
  const assets: FunctionAsset[] = [];
  for (const stack of assembly.stacks) {
    const resources = (stack.template as { Resources?: Record<string, TemplateResource> }).Resources ?? {};
    for (const [logicalId, resource] of Object.entries(resources)) {
      const assetPath = resource.Metadata?.["aws:asset:path"];
      if (resource.Type !== "AWS::Lambda::Function" || typeof assetPath !== "string") continue;
      const directory = join(assembly.directory, assetPath);
      assets.push({
        stack: stack.stackName,
        path: String(resource.Metadata?.["aws:cdk:path"] ?? logicalId),
        logicalId,
        directory,
        ...directoryContents(directory),
      });
    }
  }
  return assets;
}

export interface ImageAsset {
  /** The asset's display name, e.g. `SageMaker/Image`. */
  readonly displayName: string;
  /** The staged Docker build context inside the cloud assembly. */
  readonly directory: string;
  /** The Dockerfile, relative to `directory`. */
  readonly dockerFile: string;
  readonly platform?: string;
  readonly bytes: number;
  readonly files: readonly string[];
}

/** Every Docker image asset in the assembly, with its staged build context (built at deploy, not here). */
export function imageAssets(assembly: CloudAssembly): ImageAsset[] {
  return assembly.artifacts
    .filter((artifact) => AssetManifestArtifact.isAssetManifestArtifact(artifact))
    .flatMap((artifact) =>
      Object.entries(artifact.contents.dockerImages ?? {}).flatMap(([hash, image]) => {
        if (image.source.directory === undefined) return [];
        const directory = join(assembly.directory, image.source.directory);
        return [
          {
            displayName: image.displayName ?? hash,
            directory,
            dockerFile: image.source.dockerFile ?? "Dockerfile",
            platform: image.source.platform,
            ...directoryContents(directory),
          },
        ];
      }),
    );
}

/** The files under `directory` and their summed sizes (a link counts as itself). */
function directoryContents(directory: string): { files: string[]; bytes: number } {
  const files = listFiles(directory);
  return { files, bytes: files.reduce((sum, file) => sum + lstatSync(join(directory, file)).size, 0) };
}

/** Paths relative to `directory`, recursively; links are listed, not followed. */
export function listFiles(directory: string, prefix = ""): string[] {
  return readdirSync(join(directory, prefix), { withFileTypes: true }).flatMap((entry) => {
    const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
    return entry.isDirectory() ? listFiles(directory, relative) : [relative];
  });
}

export function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** One line per function asset, and whether any exceeds Lambda's unzipped limit. */
export function assetSizeReport(assets: readonly FunctionAsset[]): {
  lines: string[];
  oversized: FunctionAsset[];
} {
  const lines = assets.map(
    (asset) => `${asset.path.padEnd(36)} ${formatMiB(asset.bytes).padStart(11)}  ${asset.files.length} files`,
  );
  return { lines, oversized: assets.filter((asset) => asset.bytes > LAMBDA_UNZIPPED_LIMIT_BYTES) };
}
