import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeBase16,
  decodeBase64,
  type HashAlgo,
  hashStream,
  makeHash,
  parseHash,
  printHash,
  printSri,
  sha256,
} from "./hash.ts";

// RFC 4634 digests of "abc" (as in Nix's libutil-tests/hash.cc); nix32 and SRI
// forms printed by Nix 2.8 (`nix hash to-base32`, `nix hash to-sri`).
const ABC_SHA256 =
  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

Deno.test("hash: sha256 of abc in every encoding", () => {
  const h = makeHash("sha256", sha256("abc"));
  assert.equal(printHash(h, "base16"), `sha256:${ABC_SHA256}`);
  assert.equal(
    printHash(h),
    "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
  );
  assert.equal(
    printSri(h),
    "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
  );
  assert.equal(
    printHash(h, "base64"),
    "sha256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
  );
  for (
    const s of [
      `sha256:${ABC_SHA256}`,
      "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
      "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
      "sha256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
    ]
  ) {
    assert.deepEqual(parseHash(s).digest, decodeBase16(ABC_SHA256));
  }
  assert.deepEqual(
    parseHash(ABC_SHA256, "sha256").digest,
    decodeBase16(ABC_SHA256),
  );
});

Deno.test("hash: sha1, md5, sha512 nix32", () => {
  assert.equal(
    printHash(parseHash("sha1:a9993e364706816aba3e25717850c26c9cd0d89d")),
    "sha1:kpcd173cq987hw957sx6m0868wv3x6d9",
  );
  assert.equal(
    printHash(parseHash("md5:900150983cd24fb0d6963f7d28e17f72")),
    "md5:3jgzhjhz9zjvbb0kyj7jc500ch",
  );
  assert.equal(
    printHash(parseHash(
      "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    )),
    "sha512:2gs8k559z4rlahfx0y688s49m2vvszylcikrfinm30ly9rak69236nkam5ydvly1ai7xac99vxfc4ii84hawjbk876blyk1jfhkbbyx",
  );
});

Deno.test("hash: rejects bad input", () => {
  const bad: [string, RegExp][] = [
    ["sha257:abcd", /unknown hash algorithm/],
    ["sha256:abcd", /wrong length/],
    [`sha256:${ABC_SHA256.slice(0, 63)}g`, /invalid base16/],
    [
      "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5e",
      /invalid character/,
    ],
    ["sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0", /invalid base64/],
    ["sha256-AAAA", /must be 32 bytes/],
    [ABC_SHA256, /does not name its algorithm/],
  ];
  for (const [s, re] of bad) assert.throws(() => parseHash(s), re, s);
  assert.throws(
    () => decodeBase64("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa1="),
    /non-canonical/,
  );
});

Deno.test("hash: streaming equals one-shot", async () => {
  const data = new Uint8Array(100_000).map((_, i) => (i * 7) & 0xff);
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < data.length; i += 4096) {
        c.enqueue(data.subarray(i, i + 4096));
      }
      c.close();
    },
  });
  assert.deepEqual(await sha256(stream), sha256(data));
  assert.deepEqual(
    sha256().update(data.subarray(0, 10)).update(data.subarray(10)).digest(),
    sha256(data),
  );
  assert.deepEqual(
    await hashStream("sha256", new ReadableStream({ start: (c) => c.close() })),
    sha256(new Uint8Array(0)),
  );
});

Deno.test("hash: property: every encoding round-trips", () => {
  const algos: HashAlgo[] = ["md5", "sha1", "sha256", "sha512"];
  const sizes = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };
  fc.assert(
    fc.property(
      fc.constantFrom(...algos),
      fc.infiniteStream(fc.integer({ min: 0, max: 255 })),
      (algo, bytes) => {
        const digest = Uint8Array.from(bytes.take(sizes[algo]));
        const h = makeHash(algo, digest);
        for (const enc of ["base16", "nix32", "base64"] as const) {
          assert.deepEqual(parseHash(printHash(h, enc)), h);
        }
        assert.deepEqual(parseHash(printSri(h)), h);
      },
    ),
  );
});
