/** Deterministic blob contents for the castore crash tests. */

/** A blob of 0 .. ~2.5 MiB whose size and bytes depend only on `seed`. */
export function blobForSeed(seed: number): Uint8Array {
  let x = (seed * 2654435761) >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  const sizes = [0, 1, 1000, 131072, 300_000, 700_000, 1_500_000, 2_600_000];
  const n = sizes[next() % sizes.length] + (next() % 1000);
  const out = new Uint8Array(n);
  // half the blobs share a common prefix (overlapping chunks between blobs)
  const shared = seed % 2 === 0 ? Math.min(n, 600_000) : 0;
  let y = 12345;
  for (let i = 0; i < shared; i++) {
    y = (Math.imul(y, 1103515245) + 12345) >>> 0;
    out[i] = y >>> 24;
  }
  for (let i = shared; i < n; i++) out[i] = next() & 255;
  return out;
}
