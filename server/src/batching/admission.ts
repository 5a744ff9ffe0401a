// The bounded queue's admission rule: a request's images are admitted all together or not at all,
// so a rejected call has done nothing. An image holds its slot from admission until it starts
// running (or fails, or is dropped).
export class Admission {
  private used = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`queue capacity must be a positive integer, got ${capacity}`);
  }

  get admitted(): number {
    return this.used;
  }

  /** True (and reserved) if n more images fit. */
  tryReserve(n: number): boolean {
    if (this.used + n > this.capacity) return false;
    this.used += n;
    return true;
  }

  release(n = 1): void {
    this.used = Math.max(0, this.used - n);
  }
}
