// The bounded queue's admission rule: a request's images are admitted all together or not at all,
// so a rejected call has done nothing. An image holds its slot from admission until it starts
// running (or fails, or is dropped), and holds one again from when its result is handed to the
// transport until its client has taken it: results a client does not read stay in the server's
// memory, so they count too, and a client that stops reading cannot make the server keep more than
// the queue's capacity. Such a hold never waits and is never refused (it may take the queue past
// its capacity for a while); it only makes new requests wait (queue_full).
export class Admission {
  /** Images admitted and not yet running. */
  private queued = 0;
  /** Results handed to the transport and not yet taken by their clients. */
  private holds = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`queue capacity must be a positive integer, got ${capacity}`);
  }

  /** Slots in use: images queued plus results not yet taken. */
  get admitted(): number {
    return this.queued + this.holds;
  }

  /** Of those, results not yet taken by their clients. */
  get held(): number {
    return this.holds;
  }

  /** True (and reserved) if n more images fit. */
  tryReserve(n: number): boolean {
    if (this.admitted + n > this.capacity) return false;
    this.queued += n;
    return true;
  }

  release(n = 1): void {
    this.queued = Math.max(0, this.queued - n);
  }

  /** A result waits for its client: it counts again, whatever the queue holds. */
  hold(n = 1): void {
    this.holds += n;
  }

  releaseHold(n = 1): void {
    this.holds = Math.max(0, this.holds - n);
  }
}
