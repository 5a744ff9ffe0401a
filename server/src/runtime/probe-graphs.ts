// Two tiny ONNX graphs that tell whether an execution provider works (fp32) and whether it runs
// fp16 kernels (the same MatMul → Transpose in half precision), built with the compiler's own graph
// builder. Inputs, weights and results are small integers, exact in fp16, so the check is equality.
import { DataType, GraphBuilder, int, ints } from "../compiler/onnx-graph.js";
import { OPSET } from "../compiler/vit.js";
import { PRODUCT } from "../version.js";

export interface ProbeGraph {
  bytes: Uint8Array;
  input: { name: string; data: Float32Array; dims: number[] };
  output: { name: string; expected: Float32Array };
}

const X = [1, 2, 3, 4, -1, 0, 2, -3];
const W = [1, 0, 2, 0, 1, -1, 1, 1, 0, -2, 0, 1];

/** y = (x [2, 4] · w [4, 3])ᵀ, [3, 2]. */
function expected(): Float32Array {
  const y = new Float32Array(6);
  for (let i = 0; i < 2; i++)
    for (let j = 0; j < 3; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += X[i * 4 + k]! * W[k * 3 + j]!;
      y[j * 2 + i] = s;
    }
  return y;
}

/** fp16: the MatMul and Transpose run in half precision (Casts at both ends), as in fp16 graphs. */
export function probeGraph(precision: "fp32" | "fp16"): ProbeGraph {
  const g = new GraphBuilder(OPSET);
  const half = precision === "fp16";
  let x = g.input("x", DataType.FLOAT, [2, 4]);
  if (half) x = g.op("Cast", [x], { to: int(DataType.FLOAT16) });
  const w = g.floatConst(W, [4, 3], half ? DataType.FLOAT16 : DataType.FLOAT, "w");
  let y = g.op("Transpose", [g.op("MatMul", [x, w])], { perm: ints([1, 0]) });
  if (half) y = g.op("Cast", [y], { to: int(DataType.FLOAT) });
  g.output(y, "y", DataType.FLOAT, [3, 2]);
  return {
    bytes: g.build({ name: PRODUCT.name, version: PRODUCT.version }, { purpose: `execution provider probe (${precision})` }),
    input: { name: "x", data: Float32Array.from(X), dims: [2, 4] },
    output: { name: "y", expected: expected() },
  };
}
