// C-RADIOv4 adaptor heads (siglip2-g, dino_v3_7b, sam3, …), read from the torch.hub checkpoint
// (`c-radio_v4-h_half.pth.tar`): the Hugging Face files carry only the backbone. For each requested
// adaptor this finds its summary head (`_heads.<name|index>.*`) and dense head
// (`_feature_projections.<name|index>.*`) in the state dict, works out the head types from
// `args` and every width from the tensor shapes, and writes the heads' tensors, upcast to float32,
// into a safetensors file under `adaptors.<name>.{summary,features}.<param>` so the compiler's
// WeightStore serves them like any other checkpoint tensor.
import { basename } from "node:path";
import { writeSafetensors, type TensorToWrite } from "./safetensors.js";
import { PyNamespace, TorchTensor, TorchZipCheckpoint } from "./torch-zip.js";

/** The v2 MLP ("MLP2"): fc1 (no activation) → residual blocks x + Linear(GELU(LN(x))) → Linear(GELU(LN(x))). */
export interface Mlp2Head {
  type: "v2";
  /** Key prefix of the head's tensors in the adaptor safetensors file (ends with "."). */
  prefix: string;
  inputDim: number;
  hiddenDim: number;
  outputDim: number;
  numBlocks: number;
}

/** The `attn` dense head (AttnFDHead): pre-LN ViT blocks on the patch tokens, then an MLP2 without residual blocks. */
export interface AttnHead {
  type: "attn";
  prefix: string;
  inputDim: number;
  outputDim: number;
  numAttnBlocks: number;
  numHeads: number;
  /** Width of the blocks' own MLP (4 × inputDim upstream). */
  blockMlpDim: number;
  mlp: Mlp2Head;
}

export interface AdaptorSpec {
  name: string;
  /** Which cls token feeds the summary head (teacher `token_slot`, else the teacher's index). */
  tokenSlot: number;
  summary: Mlp2Head;
  features: Mlp2Head | AttnHead;
}

/** Attention heads in the `attn` head's blocks: fixed upstream (timm Block(num_heads=16)). */
const ATTN_HEAD_NUM_HEADS = 16;

export class AdaptorError extends Error {
  override name = "AdaptorError";
}

interface Teacher {
  name: string;
  index: number;
  entry: Map<unknown, unknown>;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** The pieces of a torch.hub RADIO checkpoint the adaptors need. */
function readTorchhubArgs(ckpt: TorchZipCheckpoint): { state: Map<string, TorchTensor>; args: PyNamespace; teachers: Teacher[] } {
  const where = ckpt.path;
  const root = ckpt.root;
  if (!(root instanceof Map)) throw new AdaptorError(`${where}: the checkpoint is not a dict (expected {state_dict, args, …})`);
  // Upstream prefers the EMA weights when the file has them.
  const rawState = root.get("state_dict_ema") ?? root.get("state_dict");
  if (!(rawState instanceof Map)) throw new AdaptorError(`${where}: no state_dict in the checkpoint (top-level keys: ${[...root.keys()].join(", ")})`);
  const state = new Map<string, TorchTensor>();
  for (const [k, v] of rawState) {
    if (typeof k !== "string" || !(v instanceof TorchTensor)) continue;
    state.set(k.startsWith("module.") ? k.slice("module.".length) : k, v);
  }
  const args = root.get("args");
  if (!(args instanceof PyNamespace)) throw new AdaptorError(`${where}: no args (argparse.Namespace) in the checkpoint`);
  const list = args.get("teachers");
  if (!Array.isArray(list)) throw new AdaptorError(`${where}: args.teachers is not a list`);
  const teachers = list.map((entry, index) => {
    const name = entry instanceof Map ? str(entry.get("name")) : undefined;
    if (name === undefined) throw new AdaptorError(`${where}: args.teachers[${index}] has no name`);
    return { name, index, entry: entry as Map<unknown, unknown> };
  });
  return { state, args, teachers };
}

/**
 * Reads the requested adaptors' heads from a torch.hub checkpoint and writes their tensors (float32)
 * to `outFile`. Returns each adaptor's spec, in the order asked.
 */
export async function extractAdaptors(pthPath: string, names: readonly string[], outFile: string): Promise<AdaptorSpec[]> {
  if (new Set(names).size !== names.length) throw new AdaptorError(`adaptor names repeat: ${names.join(", ")}`);
  const ckpt = TorchZipCheckpoint.open(pthPath);
  try {
    const { state, args, teachers } = readTorchhubArgs(ckpt);
    const where = basename(pthPath);
    const toWrite: TensorToWrite[] = [];
    const specs = names.map((name) => {
      const teacher = teachers.find((t) => t.name === name);
      if (!teacher) throw new AdaptorError(`${where} has no adaptor ${JSON.stringify(name)}; its teachers are ${teachers.map((t) => t.name).join(", ")}`);
      return readAdaptor(where, state, args, teacher, toWrite);
    });
    await writeSafetensors(outFile, toWrite, { format: "pt", source: where });
    return specs;
  } finally {
    ckpt.close();
  }

  function readAdaptor(where: string, state: Map<string, TorchTensor>, args: PyNamespace, teacher: Teacher, out: TensorToWrite[]): AdaptorSpec {
    const { name, entry } = teacher;
    const upsample = entry.get("fd_upsample_factor");
    if (upsample !== undefined && upsample !== null && upsample !== 1) {
      throw new AdaptorError(`${where}: adaptor ${name} has fd_upsample_factor ${String(upsample)} (pixel-shuffled dense head), which is not supported`);
    }
    const summaryType = str(entry.get("mlp_version")) ?? str(args.get("mlp_version"));
    const denseType = str(entry.get("spatial_mlp_version")) ?? str(args.get("spatial_mlp_version")) ?? str(args.get("mlp_version"));
    const slotRaw = entry.get("token_slot");
    const cpt = args.get("cls_token_per_teacher");
    const tokenSlot = typeof slotRaw === "number" ? slotRaw : cpt === false ? 0 : teacher.index;

    const summaryKeys = headTensors(state, "_heads", teacher, where, "summary");
    const denseKeys = headTensors(state, "_feature_projections", teacher, where, "dense");
    const summary = mlpHead(where, `${name} summary head`, summaryType, summaryKeys, `adaptors.${name}.summary.`, "");
    const features =
      denseType === "attn"
        ? attnHead(where, `${name} dense head`, denseKeys, `adaptors.${name}.features.`)
        : mlpHead(where, `${name} dense head`, denseType, denseKeys, `adaptors.${name}.features.`, "");
    const used = new Set<string>();
    collect("summary", summary, summaryKeys, used, out, ckpt);
    collect("dense", features, denseKeys, used, out, ckpt);
    for (const [kind, keys] of [
      ["summary", summaryKeys],
      ["dense", denseKeys],
    ] as const) {
      const extra = [...keys.keys()].filter((k) => !used.has(`${kind}:${k}`));
      if (extra.length)
        throw new AdaptorError(
          `${where}: adaptor ${name}'s ${kind} head has tensors this head type (${kind === "summary" ? summaryType : denseType}) does not use: ${extra.join(", ")} (unsupported head layout?)`,
        );
    }
    return { name, tokenSlot, summary, features };
  }
}

/** The head's tensors by parameter name (prefix `<group>.<name>.` or `<group>.<teacher index>.`). */
function headTensors(state: Map<string, TorchTensor>, group: string, teacher: Teacher, where: string, kind: string): Map<string, TorchTensor> {
  for (const id of [teacher.name, String(teacher.index)]) {
    const prefix = `${group}.${id}.`;
    const found = new Map<string, TorchTensor>();
    for (const [k, t] of state) if (k.startsWith(prefix)) found.set(k.slice(prefix.length), t);
    if (found.size) return found;
  }
  throw new AdaptorError(`${where}: adaptor ${teacher.name} has no ${kind} head (no ${group}.${teacher.name}.* or ${group}.${teacher.index}.* tensors)`);
}

function shapeOf(keys: Map<string, TorchTensor>, param: string, where: string, what: string): readonly number[] {
  const t = keys.get(param);
  if (!t) throw new AdaptorError(`${where}: ${what} is missing tensor ${param}`);
  return t.shape;
}

function expect(keys: Map<string, TorchTensor>, param: string, shape: number[], where: string, what: string): void {
  const s = shapeOf(keys, param, where, what);
  if (s.length !== shape.length || s.some((d, i) => d !== shape[i])) {
    throw new AdaptorError(`${where}: ${what} tensor ${param} has shape [${s.join(", ")}], expected [${shape.join(", ")}]`);
  }
}

/** An MLP2 head under `inner` (""/"mlp.") of a head's tensors; widths from fc1 and final.2. */
function mlpHead(where: string, what: string, type: string | undefined, keys: Map<string, TorchTensor>, prefix: string, inner: string): Mlp2Head {
  if (type !== "v2") {
    throw new AdaptorError(`${where}: ${what} is of type ${JSON.stringify(type ?? null)}; only the v2 MLP and attn heads are supported`);
  }
  const fc1 = shapeOf(keys, `${inner}fc1.weight`, where, what);
  if (fc1.length !== 2) throw new AdaptorError(`${where}: ${what} tensor ${inner}fc1.weight is not a matrix`);
  const [hiddenDim, inputDim] = fc1 as [number, number];
  const fin = shapeOf(keys, `${inner}final.2.weight`, where, what);
  if (fin.length !== 2 || fin[1] !== hiddenDim)
    throw new AdaptorError(`${where}: ${what} tensor ${inner}final.2.weight has shape [${fin.join(", ")}], expected [out, ${hiddenDim}]`);
  const outputDim = fin[0]!;
  let numBlocks = 0;
  while (keys.has(`${inner}blocks.${numBlocks}.0.weight`)) numBlocks++;
  expect(keys, `${inner}fc1.bias`, [hiddenDim], where, what);
  for (let i = 0; i < numBlocks; i++) {
    expect(keys, `${inner}blocks.${i}.0.weight`, [hiddenDim], where, what);
    expect(keys, `${inner}blocks.${i}.0.bias`, [hiddenDim], where, what);
    expect(keys, `${inner}blocks.${i}.2.weight`, [hiddenDim, hiddenDim], where, what);
    expect(keys, `${inner}blocks.${i}.2.bias`, [hiddenDim], where, what);
  }
  expect(keys, `${inner}final.0.weight`, [hiddenDim], where, what);
  expect(keys, `${inner}final.0.bias`, [hiddenDim], where, what);
  expect(keys, `${inner}final.2.bias`, [outputDim], where, what);
  return { type: "v2", prefix: prefix + inner, inputDim, hiddenDim, outputDim, numBlocks };
}

/** The parameter names of one `attn` head block. */
function attnBlockParams(b: number): string[] {
  const p = `blocks.${b}.`;
  return [
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.proj.weight",
    "attn.proj.bias",
    "ls1.gamma",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
    "ls2.gamma",
  ].map((s) => p + s);
}

function attnHead(where: string, what: string, keys: Map<string, TorchTensor>, prefix: string): AttnHead {
  const mlp = mlpHead(where, `${what} (its MLP)`, "v2", keys, prefix, "mlp.");
  if (mlp.numBlocks !== 0) throw new AdaptorError(`${where}: ${what}'s MLP has residual blocks; the attn head's MLP has none`);
  const C = mlp.inputDim;
  if (C % ATTN_HEAD_NUM_HEADS !== 0) throw new AdaptorError(`${where}: ${what} width ${C} is not divisible by ${ATTN_HEAD_NUM_HEADS} heads`);
  let numAttnBlocks = 0;
  while (keys.has(`blocks.${numAttnBlocks}.norm1.weight`)) numAttnBlocks++;
  if (numAttnBlocks === 0) throw new AdaptorError(`${where}: ${what} (attn) has no blocks.0.norm1.weight`);
  const blockMlpDim = shapeOf(keys, "blocks.0.mlp.fc1.weight", where, what)[0]!;
  for (let b = 0; b < numAttnBlocks; b++) {
    const p = `blocks.${b}.`;
    for (const n of ["norm1.weight", "norm1.bias", "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc2.bias", "ls2.gamma"])
      expect(keys, p + n, [C], where, what);
    expect(keys, `${p}attn.qkv.weight`, [3 * C, C], where, what);
    if (keys.has(`${p}attn.qkv.bias`)) throw new AdaptorError(`${where}: ${what} has ${p}attn.qkv.bias; the attn head's qkv is bias-free`);
    expect(keys, `${p}attn.proj.weight`, [C, C], where, what);
    expect(keys, `${p}mlp.fc1.weight`, [blockMlpDim, C], where, what);
    expect(keys, `${p}mlp.fc1.bias`, [blockMlpDim], where, what);
    expect(keys, `${p}mlp.fc2.weight`, [C, blockMlpDim], where, what);
  }
  return { type: "attn", prefix, inputDim: C, outputDim: mlp.outputDim, numAttnBlocks, numHeads: ATTN_HEAD_NUM_HEADS, blockMlpDim, mlp };
}

/** Every tensor a head uses, by parameter name. */
function headParams(h: Mlp2Head | AttnHead): string[] {
  if (h.type === "attn") {
    const blocks = Array.from({ length: h.numAttnBlocks }, (_, b) => attnBlockParams(b)).flat();
    return [...blocks, ...headParams(h.mlp).map((p) => `mlp.${p}`)];
  }
  const out = ["fc1.weight", "fc1.bias"];
  for (let i = 0; i < h.numBlocks; i++) out.push(`blocks.${i}.0.weight`, `blocks.${i}.0.bias`, `blocks.${i}.2.weight`, `blocks.${i}.2.bias`);
  out.push("final.0.weight", "final.0.bias", "final.2.weight", "final.2.bias");
  return out;
}

/** Queues a head's tensors (float32) for the adaptor file and marks them used. */
function collect(
  kind: "summary" | "dense",
  h: Mlp2Head | AttnHead,
  keys: Map<string, TorchTensor>,
  used: Set<string>,
  out: TensorToWrite[],
  ckpt: TorchZipCheckpoint,
): void {
  for (const param of headParams(h)) {
    const t = keys.get(param)!; // present: the head's shapes were checked
    used.add(`${kind}:${param}`);
    out.push({ name: h.prefix + param, dtype: "F32", shape: [...t.shape], data: () => new Uint8Array(ckpt.readFloat32(t).buffer) });
  }
}
