#!/usr/bin/env node
// Deletes onnxruntime-node's native binaries for other platforms after `npm ci`: the package ships
// bin/napi-v*/<os>/<arch>/ for darwin, linux and win32 (~300 MB), and only this host's is ever loaded.
// Keeps bin/napi-v*/<process.platform>/<process.arch>/ whole (the CUDA provider files that
// client/cuda_provider.py installs live there). Run by scripts/setup.sh and by the zoo's first-use
// set-up (__init__.py ensure_sidecar_built), after npm ci.
//   node scripts/prune-onnxruntime.mjs [ROOT]   (ROOT: the folder holding node_modules; default: this repo)
// Prints one JSON line: {"kept": "linux/x64", "removed": [...], "bytes": N}.
import { existsSync, lstatSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), ".."));
const bin = join(root, "node_modules", "onnxruntime-node", "bin");

function size(path) {
  const st = lstatSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((n, name) => n + size(join(path, name)), 0);
}

const keep = `${process.platform}/${process.arch}`;
const removed = [];
let bytes = 0;
if (existsSync(bin)) {
  for (const napi of readdirSync(bin).filter((d) => d.startsWith("napi-v"))) {
    const napiDir = join(bin, napi);
    if (!existsSync(join(napiDir, process.platform, process.arch))) {
      // Never leave a package with no binary for this host: prune only when this host's is there.
      continue;
    }
    for (const os of readdirSync(napiDir)) {
      const osDir = join(napiDir, os);
      if (!lstatSync(osDir).isDirectory()) continue;
      for (const arch of readdirSync(osDir)) {
        if (os === process.platform && arch === process.arch) continue;
        const dir = join(osDir, arch);
        bytes += size(dir);
        rmSync(dir, { recursive: true, force: true });
        removed.push(`${napi}/${os}/${arch}`);
      }
      if (os !== process.platform && readdirSync(osDir).length === 0) rmSync(osDir, { recursive: true, force: true });
    }
  }
}
console.log(JSON.stringify({ kept: keep, removed, bytes }));
