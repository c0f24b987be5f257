import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as zlib from "node:zlib";
import { zstdCompressor, zstdDecompressor } from "./zstd.ts";

function sample(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed * 2 + 1;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    // Half text-like runs, half noise: compressible but not trivially.
    out[i] = (i >> 12) % 2 ? (x >>> 24) : 97 + (i % 7);
  }
  return out;
}

Deno.test("zstd via libzstd FFI: frames decode with node:zlib and the zstd tool, one context for many calls", async () => {
  const z = await zstdCompressor();
  assert.ok(z, "libzstd.so.1 loads here (Deno with FFI, Bun)");
  for (
    const [n, seed] of [[0, 1], [1, 2], [100_000, 3], [300_000, 4], [17, 5]]
  ) {
    const data = sample(n, seed);
    const c: Uint8Array = z.compress(data, 1);
    assert.ok(n < 1000 || c.length < n, "compressible data shrinks");
    const back = zlib.zstdDecompressSync(c);
    assert.deepEqual(new Uint8Array(back), data);
    // The reference decoder agrees (the zstd CLI from Debian's zstd package).
    const cli: Uint8Array = execFileSync("zstd", ["-d", "-c", "-q"], {
      input: c,
    });
    assert.deepEqual(new Uint8Array(cli), data);
  }
  // The returned arrays are independent of the reused output buffer.
  const a = z.compress(sample(5000, 9), 1);
  const aCopy = a.slice();
  z.compress(sample(5000, 10), 1);
  assert.deepEqual(a, aCopy);
});

Deno.test("zstd via libzstd FFI: decompresses frames of every maker to exactly the expected size, refuses the rest", async () => {
  const z = await zstdCompressor();
  const d = await zstdDecompressor();
  assert.ok(z && d, "libzstd.so.1 loads here (Deno with FFI, Bun)");
  for (const [n, seed] of [[0, 1], [1, 2], [100_000, 3], [300_000, 4]]) {
    const data = sample(n, seed);
    const frames: Uint8Array[] = [
      z.compress(data, 1),
      new Uint8Array(zlib.zstdCompressSync(data)), // no content size recorded
      new Uint8Array(execFileSync("zstd", ["-c", "-q"], { input: data })),
    ];
    assert.equal(d.contentSize(frames[0]), n); // ours record it
    // node:zlib's record none under Deno (some runtimes record it).
    assert.ok([undefined, n].includes(d.contentSize(frames[1])));
    for (const f of frames) {
      assert.deepEqual(d.decompress(f, n), data);
      if (n > 0) {
        assert.throws(
          () => d.decompress(f, n - 1),
          /zstd decompression failed/,
        );
      }
      assert.throws(() => d.decompress(f, n + 1), /holds \d+ bytes, expected/);
    }
  }
  assert.throws(
    () => d.decompress(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), 8),
    /zstd decompression failed/,
  );
  assert.throws(() => d.decompress(new Uint8Array(0), 0), /zstd/);
  assert.equal(
    d.contentSize(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])),
    undefined,
  );
  assert.equal(d.contentSize(new Uint8Array(0)), undefined);
});
