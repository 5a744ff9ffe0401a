// The pipeline's batch tensors, reused between batches (the inference worker hands each one back).
/**
 * Batch tensors, reused. Filling fresh memory costs the main thread ~1.4 CPU-ms more an image than
 * refilling a buffer the worker handed back (first touch: page faults, zeroing; 592×448, 3.2 MB an
 * image). Keeps at most `max` free buffers; a batch takes the smallest free one that fits and is not
 * over twice its size (the tensor is a view of its first B·3·H·W values).
 */
export class TensorBuffers {
  private readonly free: ArrayBuffer[] = [];
  constructor(private readonly max: number) {}

  take(length: number): Float32Array {
    const bytes = length * Float32Array.BYTES_PER_ELEMENT;
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const b = this.free[i]!.byteLength;
      if (b >= bytes && b <= 2 * bytes && (best < 0 || b < this.free[best]!.byteLength)) best = i;
    }
    if (best < 0) return new Float32Array(length);
    const [buf] = this.free.splice(best, 1);
    return new Float32Array(buf!, 0, length);
  }

  give(buffer: ArrayBufferLike | undefined): void {
    if (!(buffer instanceof ArrayBuffer) || buffer.byteLength === 0 || this.free.includes(buffer)) return;
    this.free.push(buffer);
    if (this.free.length > this.max) this.free.shift(); // the oldest goes
  }

  get size(): number {
    return this.free.length;
  }
}
