import assert from "node:assert/strict";
import { createHasher } from "./hash.ts";
import { createThreadedHasher } from "./threaded_hasher.ts";

Deno.test("threaded hasher: same digests as inline hashing, for any split", async () => {
  const data = new Uint8Array(9 * 1024 * 1024 + 12345).map((_, i) =>
    (i * 131 + (i >> 13)) & 0xff
  );
  for (
    const [len, piece] of [
      [0, 1],
      [5, 1],
      [1 << 20, 1 << 20],
      [data.length, 256 * 1024],
      [data.length, 3 * 1024 * 1024 + 7],
      [2 * 1024 * 1024 + 3, 4093],
    ]
  ) {
    for (const algo of ["sha256", "sha512"] as const) {
      const t = createThreadedHasher(algo);
      assert.ok(t.threaded, "Deno and Bun have workers");
      const scratch = new Uint8Array(piece);
      for (let o = 0; o < len; o += piece) {
        // The caller may reuse its buffer as soon as update resolves.
        const n = Math.min(piece, len - o);
        scratch.set(data.subarray(o, o + n));
        await t.update(scratch.subarray(0, n));
        scratch.fill(0);
      }
      const got = await t.digest();
      const h = createHasher(algo);
      h.update(data.subarray(0, len));
      assert.deepEqual(got, h.digest(), `${algo} ${len}/${piece}`);
    }
  }
});

Deno.test("threaded hasher: close without digest ends the thread", async () => {
  const t = createThreadedHasher("sha256");
  await t.update(new Uint8Array(3 << 20));
  t.close();
  t.close();
});
