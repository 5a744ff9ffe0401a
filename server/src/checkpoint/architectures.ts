// Defaults of the timm architectures RADIO checkpoints name in args.model. Only the head count cannot
// be read from tensor shapes; the rest is here to cross-check a checkpoint against its config.
export interface ArchitectureDefaults {
  patchSize: number;
  width: number;
  depth: number;
  numHeads: number;
  mlpWidth: number;
}

const vit = (patchSize: number, width: number, depth: number, numHeads: number, mlpWidth = width * 4): ArchitectureDefaults => ({
  patchSize,
  width,
  depth,
  numHeads,
  mlpWidth,
});

export const ARCHITECTURES: Readonly<Record<string, ArchitectureDefaults>> = {
  vit_base_patch16_224: vit(16, 768, 12, 12),
  vit_large_patch16_224: vit(16, 1024, 24, 16),
  vit_huge_patch16_224: vit(16, 1280, 32, 16),
  vit_giant_patch16_224: vit(16, 1536, 40, 24),
  // SO400M: MLP ratio 4304/1152 (timm rounds width * ratio down to 4304).
  vit_so400m_patch16_224: vit(16, 1152, 27, 16, 4304),
};

/** The architecture's defaults with args.model_kwargs applied, as the timm constructor would. */
export function resolveArchitecture(name: string, kwargs: Record<string, unknown>): ArchitectureDefaults {
  const base = ARCHITECTURES[name];
  if (!base) {
    throw new Error(`unknown architecture args.model=${JSON.stringify(name)}; supported: ${Object.keys(ARCHITECTURES).join(", ")}`);
  }
  const num = (key: string): number | undefined => {
    const v = kwargs[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number") throw new Error(`args.model_kwargs.${key} must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const width = num("embed_dim") ?? base.width;
  // timm: hidden = int(embed_dim * mlp_ratio), in the same double arithmetic as Python.
  const mlpRatio = num("mlp_ratio") ?? base.mlpWidth / base.width;
  return {
    patchSize: num("patch_size") ?? base.patchSize,
    width,
    depth: num("depth") ?? base.depth,
    numHeads: num("num_heads") ?? base.numHeads,
    mlpWidth: Math.floor(width * mlpRatio),
  };
}
