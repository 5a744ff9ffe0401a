// The models a server serves: compiled graph folders, their metadata and the names clients use.
import { resolve } from "node:path";
import { readGraphMetadata, type GraphMetadata } from "../compiler/metadata.js";
import type { ModelGeometry } from "../preprocess/index.js";

export interface ModelSource {
  /** Defaults to defaultModelName(metadata). */
  name?: string;
  dir: string;
}

export interface ServedModel {
  name: string;
  dir: string;
  metadata: GraphMetadata;
  geometry: ModelGeometry;
}

/** e.g. "c-radio_v4-h-fp32": the variant and precision, so an fp32 and an fp16 graph can be served side by side. */
export function defaultModelName(m: GraphMetadata): string {
  return `${m.variant}-${m.precision}`;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function loadServedModels(sources: readonly ModelSource[]): ServedModel[] {
  if (sources.length === 0) throw new Error("no models to serve: give at least one --model [name=]DIR");
  const out: ServedModel[] = [];
  for (const s of sources) {
    const dir = resolve(s.dir);
    const metadata = readGraphMetadata(dir);
    const name = s.name ?? defaultModelName(metadata);
    if (!NAME.test(name)) throw new Error(`invalid model name ${JSON.stringify(name)} (letters, digits, '.', '_', ':', '-')`);
    if (out.some((m) => m.name === name)) throw new Error(`two models are named ${JSON.stringify(name)}; name them with --model NAME=DIR`);
    out.push({
      name,
      dir,
      metadata,
      geometry: {
        patchSize: metadata.patchSize,
        windowSize: metadata.windowSize,
        maxResolution: metadata.resolution.max,
        preferred: metadata.resolution.preferred,
      },
    });
  }
  return out;
}
