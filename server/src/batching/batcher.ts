// Dynamic batching (Triton's idea): items wait in one FIFO per key (the pipeline's: graph ×
// embedding space × input height × width); a key's batch is ready when it holds maxBatch items or its
// oldest item has waited maxDelayMs. A batch is only formed when a runner slot is free, so while
// every worker is busy items keep accumulating into fuller batches instead of queueing as small ones.
// While images are still being decoded (`pending`), a partial batch waits for them past maxDelayMs,
// up to maxHoldMs: the images of one call are decoded a few at a time, and without the hold a call of
// 16 ran as batches of ~2.
export interface Batchable {
  /** Items with the same key can share a batch. */
  readonly key: string;
  /** performance.now() when the item entered the queue. */
  readonly enqueuedAt: number;
}

export interface BatcherOptions<T> {
  maxBatch: number;
  /** A smaller cap for a key's batches, from its head item (e.g. a token budget); at most maxBatch. */
  limit?: (head: T) => number;
  maxDelayMs: number;
  /** Items still on their way (being decoded); a partial batch waits for them up to maxHoldMs. */
  pending?: () => number;
  /** Longest a partial batch's oldest item waits while items are pending (≥ maxDelayMs). */
  maxHoldMs?: number;
  /** Batches that may run at once (one per inference worker). */
  concurrency: number;
  /** Runs one batch; the slot is free again when the promise settles. Must not throw synchronously. */
  runBatch: (key: string, items: T[]) => Promise<void>;
}

export class DynamicBatcher<T extends Batchable> {
  private readonly queues = new Map<string, T[]>();
  private size = 0;
  private active = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly options: BatcherOptions<T>) {
    if (!(options.maxBatch >= 1) || !(options.concurrency >= 1) || !(options.maxDelayMs >= 0)) throw new RangeError("invalid batcher options");
  }

  /** Items waiting (not yet in a batch). */
  get depth(): number {
    return this.size;
  }

  /** Batches running now. */
  get running(): number {
    return this.active;
  }

  add(item: T): void {
    if (this.closed) throw new Error("the batcher is closed");
    let q = this.queues.get(item.key);
    if (!q) this.queues.set(item.key, (q = []));
    q.push(item);
    this.size++;
    this.pump();
  }

  /** Takes out every waiting item that matches (e.g. a cancelled request's) and returns them. */
  remove(match: (item: T) => boolean): T[] {
    const removed: T[] = [];
    for (const [key, q] of this.queues) {
      const keep = q.filter((it) => (match(it) ? (removed.push(it), false) : true));
      if (keep.length === 0) this.queues.delete(key);
      else if (keep.length !== q.length) this.queues.set(key, keep);
    }
    this.size -= removed.length;
    if (removed.length) this.pump();
    return removed;
  }

  /** Starts the batches that are ready now: call when `pending` drops without an add (an image failed to decode). */
  startReadyBatches(): void {
    if (!this.closed) this.pump();
  }

  /** Resolves when nothing waits and nothing runs. */
  idle(): Promise<void> {
    if (this.size === 0 && this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): void {
    this.closed = true;
    this.clearTimer();
  }

  private cap(head: T): number {
    const limit = this.options.limit ? this.options.limit(head) : this.options.maxBatch;
    return Math.max(1, Math.min(this.options.maxBatch, Math.floor(limit)));
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }

  /** Starts every batch that is ready while slots are free; otherwise waits for the oldest item's delay. */
  private pump(): void {
    while (this.active < this.options.concurrency && this.size > 0) {
      const now = performance.now();
      let best: string | null = null;
      let bestHead = Infinity;
      let nextDue = Infinity;
      const holding = (this.options.pending?.() ?? 0) > 0;
      for (const [key, q] of this.queues) {
        const head = q[0]!.enqueuedAt;
        const due = head + (holding ? Math.max(this.options.maxDelayMs, this.options.maxHoldMs ?? 0) : this.options.maxDelayMs);
        if (q.length >= this.cap(q[0]!) || due <= now) {
          if (head < bestHead) {
            bestHead = head;
            best = key;
          }
        } else if (due < nextDue) {
          nextDue = due;
        }
      }
      if (best === null) {
        this.schedule(nextDue, now);
        return;
      }
      const q = this.queues.get(best)!;
      const batch = q.splice(0, this.cap(q[0]!));
      if (q.length === 0) this.queues.delete(best);
      this.size -= batch.length;
      this.active++;
      this.options
        .runBatch(best, batch)
        .catch(() => undefined) // runBatch() reports its own failures per item
        .finally(() => {
          this.active--;
          this.pump();
          if (this.size === 0 && this.active === 0) this.idleWaiters.splice(0).forEach((w) => w());
        });
    }
    if (this.size === 0) this.clearTimer();
    if (this.size === 0 && this.active === 0) this.idleWaiters.splice(0).forEach((w) => w());
  }

  private schedule(at: number, now: number): void {
    if (this.timer && this.timerAt <= at) return;
    this.clearTimer();
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.timerAt = Infinity;
        this.pump();
      },
      Math.max(0, at - now),
    );
  }
}
