import { readFileSync } from "node:fs";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { name: string; version: string; radioGraphFormat: string };

export const PRODUCT = { name: pkg.name, version: pkg.version } as const;

/**
 * The compiled graph's on-disk contract (its inputs and metadata.json). package.json holds it because
 * the zoo (Python) reads it too, to recompile graphs an earlier version wrote. radio-onnx/2: `pixels`
 * is uint8 RGB [B, H, W, 3]; radio-onnx/1 took float32 [B, 3, H, W] in [0, 1].
 */
export const GRAPH_FORMAT = pkg.radioGraphFormat;
