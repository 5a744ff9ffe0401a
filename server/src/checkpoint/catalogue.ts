// The official checkpoints by their short names (the zoo model's name without nv_labs/), and the other
// Hugging Face files their text features need. This is the one place these repo and file names are
// written down: everything else asks here.

/** A Hugging Face repo at a default revision. */
export interface HubRef {
  repo: string;
  /** Default revision. Pass a commit to pin exactly; the resolved commit is recorded in metadata.json. */
  revision: string;
}

/**
 * The SigLIP2 text tower an adaptor was distilled from. RADIO's teacher entry names it by a short model id
 * (`args.teachers[i].model`), which upstream's `radio/siglip2_adaptor.py` maps to the Hugging Face repo.
 */
export interface TextTowerRef extends HubRef {
  /** the adaptor (teacher name) whose summary space the text tower shares */
  adaptor: string;
  /** the teacher's `model` field in the checkpoint args */
  teacherModel: string;
}

/** What the Hugging Face config class fills in for fields a config.json may leave null. */
export interface ConfigDefaults {
  patchSize: number;
  maxResolution: number;
  preferred: [number, number];
}

export interface KnownCheckpoint extends HubRef {
  /** Read by spec.ts where config.json has null (keyed by config.version, which is the short name). */
  configDefaults?: ConfigDefaults;
  /**
   * torch.hub checkpoint in `repo` holding the adaptor heads (siglip2-g, dino_v3_7b, sam3). The repo's
   * model.safetensors holds only the backbone, so the heads come from this file (a torch.save zip).
   */
  adaptorCheckpoint?: string;
  /** text tower paired with the siglip2-g adaptor */
  textTower?: TextTowerRef;
}

/**
 * The v4 siglip2-g teacher is `model: siglip2-g-384` → google/siglip2-giant-opt-patch16-384 (upstream
 * `_VERSION_MAP`; see shared/docs/cradio-v4-adaptors-facts.md §5–7). Upstream pins no revision.
 */
export const SIGLIP2_G_TEXT_TOWER: Readonly<TextTowerRef> = Object.freeze({
  adaptor: "siglip2-g",
  teacherModel: "siglip2-g-384",
  repo: "google/siglip2-giant-opt-patch16-384",
  revision: "main",
});

export const KNOWN_CHECKPOINTS: Readonly<Record<string, KnownCheckpoint>> = {
  "c-radio_v4-h": {
    repo: "nvidia/C-RADIOv4-H",
    revision: "main",
    configDefaults: { patchSize: 16, maxResolution: 2048, preferred: [512, 512] },
    adaptorCheckpoint: "c-radio_v4-h_half.pth.tar",
    textTower: SIGLIP2_G_TEXT_TOWER,
  },
  "c-radio_v4-so400m": {
    repo: "nvidia/C-RADIOv4-SO400M",
    revision: "main",
    configDefaults: { patchSize: 16, maxResolution: 2048, preferred: [512, 512] },
    adaptorCheckpoint: "c-radio_v4-so400m_half.pth.tar",
    textTower: SIGLIP2_G_TEXT_TOWER,
  },
};

/**
 * A short name (also as the zoo model's name, with nv_labs/) or a Hugging Face repo id. A repo id of a
 * known checkpoint (e.g. nvidia/C-RADIOv4-H) gets that entry, adaptor checkpoint and text tower included.
 */
export function resolveCheckpoint(name: string): KnownCheckpoint {
  const short = name.replace(/^nv_labs\//, "");
  const known = KNOWN_CHECKPOINTS[short] ?? Object.values(KNOWN_CHECKPOINTS).find((checkpoint) => checkpoint.repo === name);
  if (known) return known;
  if (/^[\w.-]+\/[\w.-]+$/.test(name)) return { repo: name, revision: "main" };
  throw new Error(`unknown checkpoint ${JSON.stringify(name)}: use ${Object.keys(KNOWN_CHECKPOINTS).join(" or ")}, or a Hugging Face repo id`);
}
