// The graphs a server serves: compiled graph folders, their metadata and the names clients use.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { readGraphMetadata, type GraphMetadata } from "../compiler/metadata.js";
import { readTextMetadata, TEXT_DIR, type TextGraphMetadata } from "../compiler/text-metadata.js";
import type { GraphGeometry } from "../preprocess/index.js";

export interface GraphSource {
  /** Defaults to defaultGraphName(metadata): <variant>-<precision>. */
  name?: string;
  dir: string;
}

export interface ServedGraph {
  name: string;
  dir: string;
  metadata: GraphMetadata;
  geometry: GraphGeometry;
  /** The adaptor heads in the graph (embedding spaces besides the backbone's). */
  adaptors: GraphMetadata["adaptors"];
  /** The text tower compiled beside the graph (`<dir>/text/`), aligned with one of the adaptors. */
  text: { dir: string; metadata: TextGraphMetadata } | null;
}

/** e.g. "c-radio_v4-h-fp32": the variant and precision, so an fp32 and an fp16 graph can be served side by side. */
function defaultGraphName(graph: GraphMetadata): string {
  return `${graph.variant}-${graph.precision}`;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function loadServedGraphs(sources: readonly GraphSource[]): ServedGraph[] {
  if (sources.length === 0) throw new Error("no graphs to serve: give at least one --graph [name=]DIR");
  const out: ServedGraph[] = [];
  for (const s of sources) {
    const dir = resolve(s.dir);
    const metadata = readGraphMetadata(dir);
    const name = s.name ?? defaultGraphName(metadata);
    if (!NAME.test(name)) throw new Error(`invalid graph name ${JSON.stringify(name)} (letters, digits, '.', '_', ':', '-')`);
    if (out.some((graph) => graph.name === name)) throw new Error(`two graphs are named ${JSON.stringify(name)}; name them with --graph NAME=DIR`);
    const textDir = join(dir, TEXT_DIR);
    const text = existsSync(textDir) ? { dir: textDir, metadata: readTextMetadata(textDir) } : null;
    if (text && !metadata.adaptors.some((a) => a.name === text.metadata.space)) {
      throw new Error(
        `${dir}: its text tower is aligned with adaptor ${text.metadata.space}, which the graph was compiled without; recompile with --adaptors ${text.metadata.space}`,
      );
    }
    out.push({
      name,
      dir,
      metadata,
      adaptors: metadata.adaptors,
      text,
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
