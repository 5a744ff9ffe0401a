// A FIFO counting semaphore whose waiters can give up (an AbortSignal: the request was cancelled).
export class Semaphore {
  private free: number;
  private readonly waiters: { resolve: (ok: boolean) => void; signal: AbortSignal | undefined; onAbort: () => void }[] = [];

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`semaphore capacity must be a positive integer, got ${capacity}`);
    this.free = capacity;
  }

  get inUse(): number {
    return this.capacity - this.free;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Resolves true once a permit is held, or false if `signal` aborted first (no permit held). */
  acquire(signal?: AbortSignal): Promise<boolean> {
    if (signal?.aborted) return Promise.resolve(false);
    if (this.free > 0 && this.waiters.length === 0) {
      this.free--;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const w = {
        resolve,
        signal,
        onAbort: () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve(false);
        },
      };
      signal?.addEventListener("abort", w.onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  release(): void {
    const w = this.waiters.shift();
    if (w) {
      w.signal?.removeEventListener("abort", w.onAbort);
      w.resolve(true);
    } else {
      this.free = Math.min(this.capacity, this.free + 1);
    }
  }
}
