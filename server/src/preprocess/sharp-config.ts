/**
 * Process-wide sharp settings. Not applied on import: call `configureSharp()`
 * once at server startup.
 *
 * Concurrency model: every sharp call runs on a libuv threadpool thread
 * (UV_THREADPOOL_SIZE, default 4), and `sharp.concurrency(n)` is the number of
 * libvips threads *each* image may use. For a serving sidecar it is better to
 * decode several images in parallel with one vips thread each than one image
 * with many threads (small images parallelise badly inside libvips).
 *
 * On 2 cores: `sharp.concurrency(1)` and at most 2 preprocess calls in flight
 * (the caller bounds this; the default libuv pool of 4 leaves room for fs reads
 * and other async work). That keeps both cores busy decoding while the main
 * thread stays free for gRPC and batching. More in-flight decodes than cores
 * only adds memory (each holds its decoded image) without throughput.
 *
 * The libvips operation cache is disabled: every image is seen once, so the
 * cache (50 MB by default) only holds memory.
 */

import os from "node:os";
import sharp from "sharp";

export interface SharpSettings {
  /** libvips threads per image. Default 1. */
  readonly concurrency: number;
  /** libvips operation cache. Default false. */
  readonly cache: boolean;
}

/** Suggested cap on concurrent preprocess calls: one per core. */
export function recommendedDecodeParallelism(cores: number = os.availableParallelism()): number {
  return Math.max(1, Math.floor(cores));
}

export function configureSharp(settings: Partial<SharpSettings> = {}): SharpSettings & { simd: boolean } {
  const concurrency = settings.concurrency ?? 1;
  const cache = settings.cache ?? false;
  sharp.concurrency(concurrency);
  sharp.cache(cache);
  return { concurrency: sharp.concurrency(), cache, simd: sharp.simd() };
}
