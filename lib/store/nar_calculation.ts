/**
 * NAR size and SHA-256 of a castore tree, computed by rendering the NAR and
 * hashing it as it streams, with a cache keyed by the root's digest (the
 * contents are content addressed, so the result never changes).
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import { renderNar } from "../castore/render_nar.ts";

/** NAR size and hash of a tree. */
export interface NarCalculation {
  /** NAR size in bytes. */
  narSize: number;
  /** SHA-256 of the NAR. */
  narSha256: Uint8Array;
}

/** Entries kept in the cache before the oldest are dropped. */
const CACHE_LIMIT = 10_000;
const cache = new Map<string, NarCalculation>();

function cacheKey(entry: Entry): string | undefined {
  const e = entry.entry;
  if (e.case === "directory") {
    return "d" + Buffer.from(e.value.digest).toString("hex");
  }
  if (e.case === "file") {
    return (e.value.executable ? "x" : "f") +
      Buffer.from(e.value.digest).toString("hex") + ":" +
      e.value.size;
  }
  return undefined; // symlinks are cheap to render
}

/** Hashes a NAR stream: its size and SHA-256. */
export async function hashNar(
  nar: ReadableStream<Uint8Array>,
): Promise<NarCalculation> {
  const h = createHash("sha256");
  let narSize = 0;
  for await (const chunk of nar) {
    h.update(chunk);
    narSize += chunk.length;
  }
  return { narSize, narSha256: new Uint8Array(h.digest()) };
}

/**
 * The NAR size and SHA-256 of `entry`'s tree (its name is ignored). Cached
 * per process by the entry's digest; errors (missing or corrupt data) are
 * not cached.
 */
export async function calculateNar(
  entry: Entry,
  blobs: BlobService,
  directories: DirectoryService,
): Promise<NarCalculation> {
  const key = cacheKey(entry);
  const hit = key && cache.get(key);
  if (hit) {
    // refresh its position (Map keeps insertion order: oldest first)
    cache.delete(key);
    cache.set(key, hit);
    return { narSize: hit.narSize, narSha256: hit.narSha256.slice() };
  }
  const r = await hashNar(renderNar(entry, blobs, directories));
  if (key) {
    cache.set(key, r);
    if (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value!);
  }
  return { narSize: r.narSize, narSha256: r.narSha256.slice() };
}

/** Records a known result (e.g. computed while ingesting) so later calls are free. */
export function rememberNar(entry: Entry, result: NarCalculation): void {
  const key = cacheKey(entry);
  if (!key) return;
  cache.set(key, {
    narSize: result.narSize,
    narSha256: result.narSha256.slice(),
  });
  if (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value!);
}
