/**
 * Re-slices a byte stream into messages of a bounded size: small pieces are
 * coalesced up to `min` bytes, large ones split at `max` bytes, so gRPC
 * messages neither flood the peer with tiny frames nor exceed its limit.
 *
 * @module
 */
import { concatBytes } from "../nix/bytes.ts";

/** Yields the bytes of `source` in pieces of `min`..`max` bytes (the last may be shorter). */
export async function* rechunk(
  source: AsyncIterable<Uint8Array>,
  min: number,
  max: number,
): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  const flush = (): Uint8Array => {
    const out = pending.length === 1
      ? pending[0]
      : concatBytes(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    return out;
  };
  for await (const piece of source) {
    let p = piece;
    while (p.length > 0) {
      if (pendingBytes === 0 && p.length >= min) {
        // Fast path: no copy for pieces already big enough.
        const take = Math.min(p.length, max);
        yield p.subarray(0, take);
        p = p.subarray(take);
        continue;
      }
      const take = Math.min(p.length, max - pendingBytes);
      pending.push(p.subarray(0, take));
      pendingBytes += take;
      p = p.subarray(take);
      if (pendingBytes >= min) yield flush();
    }
  }
  if (pendingBytes > 0) yield flush();
}

/**
 * Like {@linkcode rechunk}, but without copying: yields groups of pieces
 * (views of the source's pieces) whose sizes add up to `min`..`max` bytes
 * (the last group may be smaller), for a writer that frames one message
 * around several pieces.
 */
export async function* regroup(
  source: AsyncIterable<Uint8Array>,
  min: number,
  max: number,
): AsyncGenerator<Uint8Array[]> {
  let group: Uint8Array[] = [];
  let groupBytes = 0;
  for await (const piece of source) {
    let p = piece;
    while (p.length > 0) {
      const take = Math.min(p.length, max - groupBytes);
      group.push(take === p.length ? p : p.subarray(0, take));
      groupBytes += take;
      p = p.subarray(take);
      if (groupBytes >= min) {
        yield group;
        group = [];
        groupBytes = 0;
      }
    }
  }
  if (groupBytes > 0) yield group;
}
