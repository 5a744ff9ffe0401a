// A small builder over the maintained ONNX protobuf definition (onnx-proto): names values, adds
// nodes and initializers, and serialises the model. It knows nothing about RADIO.
import onnxProto from "onnx-proto";

const onnx = onnxProto.onnx;
export type TensorProto = onnxProto.onnx.ITensorProto;
export const DataType = onnx.TensorProto.DataType;
export type DataTypeValue = onnxProto.onnx.TensorProto.DataType;

export type Attr = { i: number } | { f: number } | { ints: number[] } | { floats: number[] } | { s: string };

export const int = (i: number): Attr => ({ i });
export const float = (f: number): Attr => ({ f });
export const ints = (v: number[]): Attr => ({ ints: v });
export const str = (s: string): Attr => ({ s });

/** A symbolic or fixed dimension of a graph input/output. */
export type Dim = number | string;

const MS_DOMAIN = "com.microsoft";

function attribute(name: string, a: Attr): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if ("i" in a) return { name, type: T.INT, i: a.i };
  if ("f" in a) return { name, type: T.FLOAT, f: a.f };
  if ("ints" in a) return { name, type: T.INTS, ints: a.ints };
  if ("floats" in a) return { name, type: T.FLOATS, floats: a.floats };
  return { name, type: T.STRING, s: new TextEncoder().encode(a.s) };
}

export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly used = new Set<string>();
  private readonly constCache = new Map<string, string>();
  private usesMsDomain = false;

  constructor(readonly opset: number) {}

  /** A fresh value name with the given stem. */
  fresh(stem: string): string {
    let name = stem;
    for (let i = 1; this.used.has(name); i++) name = `${stem}_${i}`;
    this.used.add(name);
    return name;
  }

  input(name: string, elemType: DataTypeValue, dims: Dim[]): string {
    this.used.add(name);
    this.inputs.push({ name, type: { tensorType: { elemType, shape: { dim: dims.map(dimProto) } } } });
    return name;
  }

  output(value: string, name: string, elemType: DataTypeValue, dims: Dim[]): void {
    this.op("Identity", [value], {}, { outputs: [name] });
    this.outputs.push({ name, type: { tensorType: { elemType, shape: { dim: dims.map(dimProto) } } } });
  }

  /** Adds a node; returns its (first) output name. */
  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, opts: { outputs?: string[] | number; domain?: "ms"; stem?: string } = {}): string {
    return this.opMulti(opType, inputs, attrs, opts)[0]!;
  }

  opMulti(
    opType: string,
    inputs: string[],
    attrs: Record<string, Attr> = {},
    opts: { outputs?: string[] | number; domain?: "ms"; stem?: string } = {},
  ): string[] {
    const stem = opts.stem ?? opType.toLowerCase();
    const outputs = Array.isArray(opts.outputs)
      ? opts.outputs.map((output) => (this.used.add(output), output))
      : Array.from({ length: opts.outputs ?? 1 }, () => this.fresh(stem));
    const domain = opts.domain === "ms" ? MS_DOMAIN : "";
    if (domain) this.usesMsDomain = true;
    this.nodes.push({
      opType,
      domain,
      name: this.fresh(`node_${stem}`),
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outputs;
  }

  /** A constant int64 tensor (1-D, or scalar when scalar=true), deduplicated. */
  int64(values: number[], scalar = false): string {
    const key = `i64:${scalar}:${values.join(",")}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh("const_i64");
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dataType: DataType.INT64, dims: scalar ? [] : [values.length], rawData: new Uint8Array(data.buffer) });
    this.constCache.set(key, name);
    return name;
  }

  /** A small constant float tensor stored inline. */
  floatConst(values: number[], dims: number[], elemType: DataTypeValue = DataType.FLOAT, stem = "const_f"): string {
    const key = `f:${elemType}:${dims.join("x")}:${values.join(",")}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh(stem);
    const raw = elemType === DataType.FLOAT16 ? float32ToFloat16Bytes(Float32Array.from(values)) : new Uint8Array(Float32Array.from(values).buffer);
    this.initializers.push({ name, dataType: elemType, dims, rawData: raw });
    this.constCache.set(key, name);
    return name;
  }

  initializer(t: TensorProto & { name: string }): string {
    this.used.add(t.name);
    this.initializers.push(t);
    return t.name;
  }

  build(producer: { name: string; version: string }, metadata: Record<string, string>): Uint8Array {
    const opsetImport: onnxProto.onnx.IOperatorSetIdProto[] = [{ domain: "", version: this.opset }];
    if (this.usesMsDomain) opsetImport.push({ domain: MS_DOMAIN, version: 1 });
    const model: onnxProto.onnx.IModelProto = {
      irVersion: 9,
      producerName: producer.name,
      producerVersion: producer.version,
      opsetImport,
      metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
      graph: { name: "radio", node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
    };
    return onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
  }

  get nodeCount(): number {
    return this.nodes.length;
  }
}

function dimProto(d: Dim): onnxProto.onnx.TensorShapeProto.IDimension {
  return typeof d === "number" ? { dimValue: d } : { dimParam: d };
}

/** IEEE binary16 from binary32, round to nearest even (Node 20 has no Float16Array). */
export function float32ToFloat16Bytes(src: Float32Array): Uint8Array {
  const out = new Uint16Array(src.length);
  const u32 = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u32[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
    } else if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && h & 1)) h++;
      out[i] = sign | h;
    } else {
      let h = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
      out[i] = sign | h;
    }
  }
  return new Uint8Array(out.buffer);
}
