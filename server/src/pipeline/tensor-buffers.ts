// The pipeline's batch tensors, reused between batches (the inference worker hands each one back).
/**
 * Batch tensors, reused. Filling fresh memory costs the main thread more than refilling a buffer the
 * worker handed back (first touch: page faults, zeroing; ~1.4 CPU-ms an image when the tensors were
 * float32, 3.2 MB an image at 592×448; uint8 is a quarter of that). Keeps at most `max` free
 * buffers; a batch takes the smallest free one that fits and is not over twice its size (the tensor
 * is a view of its first B·H·W·3 bytes).
 */
export class TensorBuffers {
  private readonly free: ArrayBuffer[] = [];
  constructor(private readonly max: number) {}

  take(bytes: number): Uint8Array {
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const b = this.free[i]!.byteLength;
      if (b >= bytes && b <= 2 * bytes && (best < 0 || b < this.free[best]!.byteLength)) best = i;
    }
    if (best < 0) return new Uint8Array(bytes);
    const [buf] = this.free.splice(best, 1);
    return new Uint8Array(buf!, 0, bytes);
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
