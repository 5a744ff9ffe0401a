// The zoo's models (manifest.json) and the sidecar's checkpoint catalogue name the same checkpoints:
// every zoo model's short name resolves to the repo its manifest entry links to.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { KNOWN_CHECKPOINTS, resolveCheckpoint } from "../../server/src/checkpoint/catalogue.js";

const manifest = JSON.parse(readFileSync(new URL("../../manifest.json", import.meta.url), "utf8")) as {
  models: { base_name: string; source: string }[];
};

describe("checkpoint catalogue", () => {
  it("has one entry per zoo model, resolving to the repo the manifest links", () => {
    const shortNames = manifest.models.map((m) => m.base_name.replace(/^nv_labs\//, ""));
    assert.deepEqual(shortNames.sort(), Object.keys(KNOWN_CHECKPOINTS).sort());
    for (const m of manifest.models) {
      const checkpoint = resolveCheckpoint(m.base_name);
      assert.equal(m.source, `https://huggingface.co/${checkpoint.repo}`, m.base_name);
      assert.equal(resolveCheckpoint(checkpoint.repo), checkpoint, "the repo id resolves to the same entry");
    }
  });

  it("refuses a name that is neither a known checkpoint nor a repo id, listing the known ones", () => {
    assert.throws(() => resolveCheckpoint("c-radio_v9"), /unknown checkpoint "c-radio_v9": use c-radio_v4-h or c-radio_v4-so400m/);
  });
});
