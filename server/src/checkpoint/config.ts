// The Hugging Face config.json of a RADIO checkpoint, as the real repos ship it. Only the fields the
// upstream HF config class reads are typed; the many inert training args pass through untouched.
import { readFileSync } from "node:fs";
import { z } from "zod";

const Teacher = z.looseObject({
  name: z.string(),
  type: z.string().optional(),
  use_summary: z.boolean().optional(),
});

const Args = z.looseObject({
  model: z.string(),
  model_kwargs: z.record(z.string(), z.unknown()).nullish(),
  cpe_max_size: z.number().int().positive().nullish(),
  cpe_num_registers: z.number().int().nonnegative().nullish(),
  register_multiple: z.number().int().positive().nullish(),
  cls_token_per_teacher: z.boolean().nullish(),
  model_norm: z.boolean().nullish(),
  dtype: z.string().nullish(),
  teachers: z.array(Teacher).min(1),
});

export const RadioConfigSchema = z.looseObject({
  args: Args,
  version: z.string().nullish(),
  patch_size: z.number().int().positive().nullish(),
  max_resolution: z.number().int().positive().nullish(),
  preferred_resolution: z.tuple([z.number().int().positive(), z.number().int().positive()]).nullish(),
  adaptor_names: z.union([z.string(), z.array(z.string())]).nullish(),
  vitdet_window_size: z.number().int().positive().nullish(),
  feature_normalizer_config: z.record(z.string(), z.unknown()).nullish(),
});

export type RadioConfig = z.infer<typeof RadioConfigSchema>;

export class CheckpointError extends Error {
  override name = "CheckpointError";
}

function parseRadioConfig(json: unknown, source: string): RadioConfig {
  const r = RadioConfigSchema.safeParse(json);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `  ${i.path.join(".") || "(root)"}: ${i.message}`).join("\n");
    throw new CheckpointError(`${source} is not a RADIO config.json:\n${issues}`);
  }
  return r.data;
}

export function readRadioConfig(path: string): RadioConfig {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new CheckpointError(`cannot read ${path}: ${(err as Error).message}`);
  }
  return parseRadioConfig(json, path);
}
