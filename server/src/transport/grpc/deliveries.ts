// The results an Embed call has written and its client has not taken yet. grpc-js calls a write's
// callback once HTTP/2 flow control has let the message out; until then it sits in memory, so the
// pipeline counts it against the queue until its delivery promise (made here) settles. grpc-js never
// calls back a write on a call that is gone, so every promise also settles when the call ends
// (settleAll). While results wait, a call whose client takes none of them for stallMs is stalled:
// onStall runs (once, unless a later write starts the clock again). A client reading slowly but
// steadily takes one now and then, which restarts the clock.
export class Deliveries {
  private readonly waiting = new Set<() => void>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    /** 0 = never stalled. */
    private readonly stallMs: number,
    private readonly onStall: () => void,
  ) {}

  /** Results written and not yet taken. */
  get pending(): number {
    return this.waiting.size;
  }

  /** Runs write(done) and returns a promise that settles when done is called or the call ends. */
  track(write: (done: () => void) => void): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiting.add(resolve);
      if (this.waiting.size === 1) this.restartClock();
      write(() => {
        if (!this.waiting.delete(resolve)) return; // settled when the call ended
        resolve();
        this.restartClock();
      });
    });
  }

  /** The call ended: every delivery still waiting settles, and the clock stops. */
  settleAll(): void {
    const waiting = [...this.waiting];
    this.waiting.clear();
    this.restartClock();
    for (const resolve of waiting) resolve();
  }

  /** Progress (or the first result waiting): the stall clock starts from now, or stops if nothing waits. */
  private restartClock(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.waiting.size === 0 || this.stallMs <= 0) return;
    this.timer = setTimeout(this.onStall, this.stallMs);
    // The call itself keeps the server up; this timer alone must not keep a process alive.
    this.timer.unref();
  }
}
