// The heatmap PCA's heavy half as extra outputs of the image graph (compile --heatmap), so that a GPU
// does it and only ~0.3 MB an image leaves the device instead of the features (5.3 MB for H at 512²).
// It runs stages 1–4 of postprocess/heatmap.ts on the graph's features, in float32: non-finite → 0,
// the per-channel 1st/99th-percentile clip, the high-norm tokens (median/MAD of the unclipped norms),
// the inlier mean, and `HEATMAP_LANCZOS_STEPS` Lanczos steps with full reorthogonalisation on the
// inliers' covariance, from the same start vector as the CPU solver. The CPU then solves the small
// tridiagonal eigenproblem and does the rest (postprocess/device-pca.ts): ~2 ms instead of ~40.
// Outputs (float32): `heatmap.basis` [B, m, C] (Lanczos vectors), `heatmap.tridiagonal` [B, 2, m]
// (α, β), `heatmap.projections` [B, h·w, m] (centred features · basis), `heatmap.outliers` [B, h·w]
// (1 = high-norm token), `heatmap.norms` [B, h·w] (norms of the clipped features, for the sign rule).
import { HEATMAP_PCA_DEFAULTS } from "../defaults.js";
import { deterministicStartVector } from "../lanczos-start.js";
import { DataType, type GraphBuilder, int, ints } from "./onnx-graph.js";
import type { VitTaps } from "./vit.js";

/**
 * Krylov dimension. The CPU solver stops at a relative residual of 1e-6, after 6–14 steps on
 * C-RADIO maps; a fixed 24 leaves room for harder ones and costs ~1 MFLOP an image a step.
 */
export const HEATMAP_LANCZOS_STEPS = 24;

export const HEATMAP_OUTPUTS = {
  basis: "heatmap.basis",
  tridiagonal: "heatmap.tridiagonal",
  projections: "heatmap.projections",
  outliers: "heatmap.outliers",
  norms: "heatmap.norms",
} as const;

const F = DataType.FLOAT;
const F64 = DataType.DOUBLE;

/** A float64 constant (GraphBuilder.floatConst stores float32 only). */
function doubleConst(graph: GraphBuilder, values: number[], stem: string): string {
  const name = graph.fresh(stem);
  return graph.initializer({ name, dataType: F64, dims: [values.length], rawData: new Uint8Array(Float64Array.from(values).buffer) });
}

export function buildHeatmapHead(taps: VitTaps, steps = HEATMAP_LANCZOS_STEPS): void {
  const { build, features } = taps;
  const { graph, spec } = build;
  const C = spec.width;
  const op = graph.op.bind(graph);
  const f = (v: number) => graph.floatConst([v], [], F);
  const axis = (a: number) => graph.int64([a]);

  // 1. float32, non-finite → 0.
  let x = build.dtype === F ? features : op("Cast", [features], { to: int(F) });
  x = op("Where", [op("Or", [op("IsNaN", [x]), op("IsInf", [x])]), f(0), x], {}, { stem: "hm_sanitised" }); // [B, N, C]
  const rowNorms = (t: string) => op("Sqrt", [op("ReduceSumSquare", [t, axis(2)], { keepdims: int(0) })]); // [B, N]
  const rawNorms = rowNorms(x);

  const shape = op("Shape", [x]);
  const batch = op("Slice", [shape, graph.int64([0]), graph.int64([1])]);
  const n = op("Slice", [shape, graph.int64([1]), graph.int64([2])]); // [1] int64
  const nDouble = op("Cast", [n], { to: int(F64) });
  const one = graph.int64([1]);
  const nLast = op("Sub", [n, one]);
  const asInt = (t: string) => op("Cast", [op("Floor", [t])], { to: int(DataType.INT64) });
  const half = doubleConst(graph, [0.5], "hm_half");
  const oneD = doubleConst(graph, [1], "hm_one");

  // 2. Per-channel percentiles over the positions, numpy's 'linear' method in float64 (percentile.ts).
  const percentile = (q: number, lowEnd: boolean): string => {
    const virtual = op("Mul", [op("Cast", [nLast], { to: int(F64) }), doubleConst(graph, [q / 100], "hm_q")]);
    const prev = op("Min", [op("Max", [asInt(virtual), graph.int64([0])]), nLast]);
    const next = op("Min", [op("Add", [prev, one]), nLast]);
    const gamma = op("Sub", [virtual, op("Cast", [prev], { to: int(F64) })]);
    // The smallest (prev + 2) values ascending, or the largest (n − prev) descending: sorted[i] is at
    // i there, at n − 1 − i here.
    const k = lowEnd ? op("Add", [next, one]) : op("Sub", [n, prev]);
    const [sorted] = graph.opMulti("TopK", [x, k], { axis: int(1), largest: int(lowEnd ? 0 : 1), sorted: int(1) }, { outputs: 2, stem: "hm_sorted" });
    const at = (i: string) => op("Cast", [op("Gather", [sorted!, lowEnd ? i : op("Sub", [nLast, i])], { axis: int(1) })], { to: int(F64) }); // [B, 1, C]
    const a = at(prev);
    const b = at(next);
    const diff = op("Sub", [b, a]);
    const lerp = op("Where", [
      op("GreaterOrEqual", [gamma, half]),
      op("Sub", [b, op("Mul", [diff, op("Sub", [oneD, gamma])])]),
      op("Add", [a, op("Mul", [diff, gamma])]),
    ]);
    return op("Cast", [lerp], { to: int(F) });
  };
  const [qLow, qHigh] = HEATMAP_PCA_DEFAULTS.clipPercentiles;
  const clipped = op("Max", [op("Min", [x, percentile(qHigh, false)]), percentile(qLow, true)], {}, { stem: "hm_clipped" });
  const norms = rowNorms(clipped);

  // 3. High-norm tokens (outliers.ts): norm > max(ratio·median, median + mads·MAD), the longest
  // `maxFraction`·n of them at most (TopK breaks ties by position, as the CPU rule does).
  const median = (t: string): string => {
    const k = op("Add", [op("Div", [n, graph.int64([2])]), one]);
    const [s] = graph.opMulti("TopK", [t, k], { axis: int(1), largest: int(0), sorted: int(1) }, { outputs: 2, stem: "hm_median_sorted" });
    const lo = op("Gather", [s!, op("Div", [nLast, graph.int64([2])])], { axis: int(1) });
    const hi = op("Gather", [s!, op("Div", [n, graph.int64([2])])], { axis: int(1) });
    return op("Div", [op("Add", [lo, hi]), f(2)]); // [B, 1]
  };
  const med = median(rawNorms);
  const mad = median(op("Abs", [op("Sub", [rawNorms, med])]));
  const { ratio, mads, maxFraction } = HEATMAP_PCA_DEFAULTS.highNorm;
  const threshold = op("Max", [op("Mul", [med, f(ratio)]), op("Add", [med, op("Mul", [mad, f(mads)])])]);
  const cap = asInt(op("Mul", [nDouble, doubleConst(graph, [maxFraction], "hm_fraction")]));
  const over = op("Greater", [rawNorms, threshold]);
  const [longest, where] = graph.opMulti(
    "TopK",
    [op("Where", [over, rawNorms, f(-1)]), op("Max", [cap, one])],
    { axis: int(1), largest: int(1), sorted: int(1) },
    { outputs: 2, stem: "hm_longest" },
  );
  const allowed = op("And", [op("Greater", [cap, graph.int64([0])]), op("Greater", [med, f(0)])]); // [B, 1]
  const taken = op("Cast", [op("And", [op("Greater", [longest!, threshold]), allowed])], { to: int(F) });
  const zeros = op("Cast", [op("Less", [rawNorms, f(Number.NEGATIVE_INFINITY)])], { to: int(F) });
  const outliers = op("ScatterElements", [zeros, where!, taken], { axis: int(1) }, { stem: "hm_outliers" }); // [B, N]

  // 4. Inlier mean, then Lanczos on A = Xwᵀ Xw, Xw = the centred inlier rows (outliers zeroed).
  const inlier = op("Unsqueeze", [op("Sub", [f(1), outliers]), axis(2)]); // [B, N, 1]
  const kept = op("ReduceSum", [inlier, axis(1)], { keepdims: int(1) });
  const mean = op("Div", [op("ReduceSum", [op("Mul", [clipped, inlier]), axis(1)], { keepdims: int(1) }), kept]); // [B, 1, C]
  const centred = op("Sub", [clipped, mean], {}, { stem: "hm_centred" });
  const xw = op("Mul", [centred, inlier]);
  const xwT = op("Transpose", [xw], { perm: ints([0, 2, 1]) }); // [B, C, N]

  const start = deterministicStartVector(C);
  const startNorm = Math.hypot(...start);
  const q0 = graph.floatConst(
    Array.from(start, (v) => v / startNorm),
    [1, 1, C],
    F,
    "hm_start",
  );
  let q = op("Expand", [q0, op("Concat", [batch, graph.int64([1, C])], { axis: int(0) })]); // [B, 1, C]
  let qPrev = "";
  let betaPrev = "";
  let basis = q;
  const alphas: string[] = [];
  const betas: string[] = [];
  const dot = (a: string, b: string) => op("ReduceSum", [op("Mul", [a, b]), axis(2)], { keepdims: int(1) });
  for (let j = 0; j < steps; j++) {
    let w = op("MatMul", [op("MatMul", [q, xwT]), xw]); // A q: [B, 1, C]
    const a = dot(q, w); // [B, 1, 1]
    w = op("Sub", [w, op("Mul", [a, q])]);
    if (j > 0) w = op("Sub", [w, op("Mul", [betaPrev, qPrev])]);
    for (let pass = 0; pass < 2; pass++) {
      // w −= Vᵀ (V w), "twice is enough"
      const coef = dot(basis, w); // [B, j + 1, 1]
      w = op("Sub", [w, op("ReduceSum", [op("Mul", [coef, basis]), axis(1)], { keepdims: int(1) })]);
    }
    const b = op("Sqrt", [op("ReduceSumSquare", [w, axis(2)], { keepdims: int(1) })]);
    alphas.push(a);
    betas.push(b);
    if (j === steps - 1) break;
    qPrev = q;
    betaPrev = b;
    q = op("Div", [w, op("Max", [b, f(1e-30)])], {}, { stem: "hm_lanczos_q" });
    basis = op("Concat", [basis, q], { axis: int(1) });
  }
  const tridiagonal = op("Concat", [op("Concat", alphas, { axis: int(2) }), op("Concat", betas, { axis: int(2) })], { axis: int(1) }); // [B, 2, m]
  const projections = op("MatMul", [centred, op("Transpose", [basis], { perm: ints([0, 2, 1]) })]); // [B, N, m]

  graph.output(basis, HEATMAP_OUTPUTS.basis, F, ["batch", steps, C]);
  graph.output(tridiagonal, HEATMAP_OUTPUTS.tridiagonal, F, ["batch", 2, steps]);
  graph.output(projections, HEATMAP_OUTPUTS.projections, F, ["batch", "patches", steps]);
  graph.output(outliers, HEATMAP_OUTPUTS.outliers, F, ["batch", "patches"]);
  graph.output(norms, HEATMAP_OUTPUTS.norms, F, ["batch", "patches"]);
}
