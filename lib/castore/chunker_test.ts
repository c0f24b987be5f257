import assert from "node:assert/strict";
import fc from "fast-check";
import { chunkAll, Chunker, DEFAULT_AVG_CHUNK_SIZE } from "./chunker.ts";
import { pseudoRandom } from "./_test_blob_service.ts";
import { concatBytes } from "../nix/bytes.ts";

function checkBounds(chunks: Uint8Array[], min: number, max: number) {
  chunks.forEach((c, i) => {
    assert.ok(c.length > 0, "empty chunk");
    assert.ok(c.length <= max, `chunk ${i} too big: ${c.length}`);
    if (i < chunks.length - 1) {
      assert.ok(c.length > min, `chunk ${i} too small: ${c.length}`);
    }
  });
}

Deno.test("chunker property: deterministic, concatenates to input, split-independent, bounded", () => {
  const avg = 1024;
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 40_000 }),
      fc.integer({ min: 1, max: 2 ** 31 - 1 }),
      fc.array(fc.integer({ min: 1, max: 5000 }), {
        minLength: 1,
        maxLength: 20,
      }),
      (n, seed, splits) => {
        // mix random bytes with runs of zeros, where gear hashes degenerate
        const data = pseudoRandom(n, seed);
        for (let o = seed % 3000; o < n; o += 9000) data.fill(0, o, o + 2500);
        const whole = chunkAll(data, { avgSize: avg });
        assert.deepEqual(concatBytes(whole), data);
        checkBounds(whole, avg / 2, avg * 2);
        const c = new Chunker({ avgSize: avg });
        const pieces: Uint8Array[] = [];
        let o = 0;
        for (let k = 0; o < n; k++) {
          const len = splits[k % splits.length];
          pieces.push(...c.push(data.subarray(o, o + len)));
          o += len;
        }
        pieces.push(...c.finish());
        assert.deepEqual(
          pieces.map((p) => p.length),
          whole.map((p) => p.length),
        );
        assert.deepEqual(
          chunkAll(data, { avgSize: avg }).map((p) => p.length),
          whole.map((p) => p.length),
        );
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("chunker defaults: 128..512 KiB chunks, average near 256 KiB, boundaries survive an insert", () => {
  const data = pseudoRandom(24 << 20, 42);
  const chunks = chunkAll(data);
  checkBounds(chunks, DEFAULT_AVG_CHUNK_SIZE / 2, DEFAULT_AVG_CHUNK_SIZE * 2);
  const mean = data.length / chunks.length;
  assert.ok(mean > 180_000 && mean < 360_000, `mean chunk size ${mean}`);
  // inserting bytes near the start changes only the first chunk or two
  const shifted = concatBytes([
    data.subarray(0, 1000),
    new Uint8Array(77).fill(9),
    data.subarray(1000),
  ]);
  const again = chunkAll(shifted);
  const key = (c: Uint8Array) =>
    Buffer.from(c.subarray(0, 32)).toString("hex") + c.length;
  const before = new Set(chunks.map(key));
  const shared = again.filter((c) => before.has(key(c))).length;
  assert.ok(
    shared >= chunks.length - 2,
    `only ${shared} of ${chunks.length} chunks survive`,
  );
  // all-zero input: no content cuts, max-size chunks
  const zeros = chunkAll(new Uint8Array(2 << 20));
  assert.deepEqual(zeros.map((c) => c.length), [
    524288,
    524288,
    524288,
    524288,
  ]);
});

Deno.test("chunker: empty input gives no chunks; small input one chunk", () => {
  assert.deepEqual(chunkAll(new Uint8Array()), []);
  assert.equal(chunkAll(new Uint8Array(5)).length, 1);
  assert.throws(() => new Chunker({ avgSize: 1000 }), /power of two/);
});

Deno.test("chunker: cut points are stable (stored chunks of earlier imports keep deduplicating)", () => {
  // Recorded from this implementation; a change here means every chunk
  // boundary moved, and new imports stop sharing chunks with old ones.
  const sizes = chunkAll(pseudoRandom(4 << 20, 7), { avgSize: 64 << 10 })
    .map((c) => c.length);
  assert.equal(sizes.length, 47);
  assert.deepEqual(
    sizes.slice(0, 12),
    [
      131072,
      118116,
      131072,
      88303,
      117935,
      109106,
      131072,
      56044,
      75072,
      57489,
      121284,
      43016,
    ],
  );
});

Deno.test("chunker: cut points at the default 256 KiB average are stable (random and low-entropy data)", () => {
  // Recorded from the implementation of 2026-11 before the chunker was also
  // run on the ingest worker (../runtime/ingest_worker.ts): every stored
  // chunk of every existing data directory depends on these boundaries.
  const random = chunkAll(pseudoRandom(16 << 20, 11)).map((c) => c.length);
  assert.deepEqual(random, [
    288095,
    186980,
    348635,
    524288,
    231386,
    298704,
    524288,
    484939,
    426375,
    266673,
    220287,
    502032,
    309705,
    385755,
    333064,
    524288,
    357451,
    415403,
    235941,
    301140,
    524288,
    277665,
    345468,
    245131,
    524288,
    284293,
    274000,
    280913,
    441011,
    154473,
    524288,
    133760,
    223082,
    311875,
    359047,
    299361,
    393813,
    397716,
    171618,
    132632,
    217530,
    441843,
    193283,
    274550,
    307787,
    417383,
    311159,
    263588,
    156038,
    168934,
    421323,
    139647,
  ]);
  const r = pseudoRandom(8 << 20, 5);
  const text = new Uint8Array(8 << 20);
  for (let i = 0; i < text.length; i++) text[i] = 97 + (r[i] % 4);
  assert.deepEqual(chunkAll(text).map((c) => c.length), [
    275420,
    139311,
    343135,
    315831,
    524288,
    270951,
    295777,
    454268,
    267517,
    454182,
    524288,
    189756,
    310777,
    268008,
    326885,
    272258,
    483384,
    305381,
    181166,
    193089,
    198043,
    524288,
    380796,
    353938,
    339442,
    196429,
  ]);
});
