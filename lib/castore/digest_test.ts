import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  blake3,
  createBlake3,
  digestFromHex,
  digestToHex,
  digestToString,
  validateDigest,
} from "./digest.ts";
import { b3sum } from "./_test_blob_service.ts";

// Known answers: BLAKE3("") from snix/castore/src/proto/tests/directory.rs (the
// empty Directory encodes to zero bytes), BLAKE3([0x01]) from
// snix/store-go/export_test.go (BLAKE3_DIGEST_0X01).
const EMPTY =
  "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
const ONE = "48fc721fbbc172e0925fa27af1671de225ba927134802998b10a1568a188652b";

Deno.test("blake3 known answers", async () => {
  assert.equal(digestToHex(await blake3(new Uint8Array())), EMPTY);
  assert.equal(digestToHex(await blake3(new Uint8Array([1]))), ONE);
});

Deno.test("interleaved incremental hashers stay independent", async () => {
  const data = new Uint8Array(300_000).map((_, i) => (i * 31) & 255);
  const a = createBlake3();
  const b = createBlake3();
  const c = createBlake3();
  for (let o = 0; o < data.length; o += 7001) {
    a.update(data.subarray(o, o + 7001));
    b.update(new Uint8Array([1]));
    if (o % 2 === 0) c.update(data.subarray(o, o + 7001));
    else c.update(data.subarray(o, o + 7001));
  }
  const whole = await blake3(data);
  assert.deepEqual(a.digest(), whole);
  assert.deepEqual(c.digest(), whole);
  assert.equal(b.digest().length, 32);
  assert.throws(() => a.update(new Uint8Array(1)), /after digest/);
});

Deno.test("blake3 matches b3sum on random data", async () => {
  const data = crypto.getRandomValues(new Uint8Array(65536));
  const out = b3sum(data);
  assert.equal(digestToHex(await blake3(data)), out);
});

Deno.test("digest printing and parsing", () => {
  const d = digestFromHex(EMPTY);
  assert.equal(digestToHex(d), EMPTY);
  assert.equal(
    digestToString(d),
    "blake3-rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=",
  );
  assert.throws(() => digestFromHex("xyz"), /not a hex BLAKE3 digest/);
});

Deno.test("validateDigest rejects wrong lengths with InvalidArgument", () => {
  validateDigest(new Uint8Array(32));
  for (const n of [0, 1, 31, 33, 64]) {
    assert.throws(
      () => validateDigest(new Uint8Array(n), "blob digest"),
      (e) =>
        e instanceof ConnectError && e.code === Code.InvalidArgument &&
        e.rawMessage === `invalid blob digest: expected 32 bytes, got ${n}`,
    );
  }
});

Deno.test("one-shot and incremental BLAKE3 agree with b3sum around block and chunk edges", async () => {
  const data = new Uint8Array(1 << 20).map((_, i) => (i * 2654435761) >>> 24);
  for (
    const n of [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 4097, 65537, 1 << 20]
  ) {
    const part = data.subarray(0, n);
    const want = b3sum(part);
    assert.equal(digestToHex(await blake3(part)), want, `one-shot, ${n} bytes`);
    const h = createBlake3();
    for (let o = 0; o < n; o += 3001) h.update(part.subarray(o, o + 3001));
    assert.equal(digestToHex(h.digest()), want, `incremental, ${n} bytes`);
  }
});
