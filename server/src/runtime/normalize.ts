// L2 normalisation of embedding rows, as torch.nn.functional.normalize (and SigLIP's
// encode_text(normalize=True)) does. No onnxruntime here: the pipeline calls it on the main thread.

/** Divides each row of `cols` values by max(‖row‖₂, 1e-12); a new array. */
export function l2NormalizeRows(x: Float32Array, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += x[r * cols + c]! ** 2;
    const n = Math.max(Math.sqrt(ss), 1e-12);
    for (let c = 0; c < cols; c++) out[r * cols + c] = x[r * cols + c]! / n;
  }
  return out;
}
