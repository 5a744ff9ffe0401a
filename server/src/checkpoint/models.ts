// The official checkpoints by their zoo names.
export interface KnownModel {
  repo: string;
  /** Default revision. Pass a commit to pin exactly; the resolved commit is recorded in metadata.json. */
  revision: string;
}

export const KNOWN_MODELS: Readonly<Record<string, KnownModel>> = {
  "c-radio_v4-h": { repo: "nvidia/C-RADIOv4-H", revision: "main" },
  "c-radio_v4-so400m": { repo: "nvidia/C-RADIOv4-SO400M", revision: "main" },
};

/** A zoo name (with or without the nv_labs/ prefix) or a Hugging Face repo id. */
export function resolveModelName(name: string): KnownModel {
  const short = name.replace(/^nv_labs\//, "");
  const known = KNOWN_MODELS[short];
  if (known) return known;
  if (/^[\w.-]+\/[\w.-]+$/.test(name)) return { repo: name, revision: "main" };
  throw new Error(`unknown model ${JSON.stringify(name)}: use ${Object.keys(KNOWN_MODELS).join(" or ")}, or a Hugging Face repo id`);
}
