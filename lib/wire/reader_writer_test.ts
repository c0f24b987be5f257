import assert from "node:assert/strict";
import fc from "fast-check";
import { WireError } from "./errors.ts";
import { WireWriter } from "./writer.ts";
import {
  collectingWriter,
  drainStream,
  encode,
  readerOf,
} from "./test_util.ts";

const cutsArb = fc.array(fc.integer({ min: 1, max: 20 }), {
  minLength: 1,
  maxLength: 5,
});

Deno.test("wire: u64, bool, strings round-trip across any chunking", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.boolean(),
      fc.string({ unit: "grapheme", maxLength: 40 }),
      fc.uint8Array({ maxLength: 50 }),
      fc.array(fc.string({ maxLength: 10 }), { maxLength: 6 }),
      cutsArb,
      async (n, b, s, bytes, list, cuts) => {
        const data = await encode((w) =>
          w.u64(n).bool(b).string(s).bytes(bytes).strings(list)
        );
        assert.equal(data.length % 8, 0);
        const r = readerOf(data, cuts);
        assert.equal(await r.readU64(), n);
        assert.equal(await r.readBool(), b);
        assert.equal(await r.readString(1 << 20), s);
        assert.deepEqual(await r.readBytes(1 << 20), bytes);
        assert.deepEqual(await r.readStrings(100, 100), list);
        assert.ok(await r.atEnd());
      },
    ),
  );
});

Deno.test("wire: numbers as JS numbers, safe range only", async () => {
  await fc.assert(
    fc.asyncProperty(fc.maxSafeNat(), async (n) => {
      const r = readerOf(await encode((w) => w.u64(n)));
      assert.equal(await r.readNumber(), n);
    }),
  );
  const r = readerOf(await encode((w) => w.u64(2n ** 60n)));
  await assert.rejects(
    r.readNumber("string length"),
    /string length 1152921504606846976 is out of range/,
  );
});

Deno.test("wire: string maps and sets are written sorted by bytes", async () => {
  const data = await encode((w) =>
    w.stringSet(["b", "a", "é", "z", "a"]).stringMap([["y", "1"], ["x", "2"]])
  );
  const r = readerOf(data);
  assert.deepEqual(await r.readStrings(10, 10), ["a", "b", "z", "é"]);
  assert.deepEqual([...(await r.readStringMap(10, 10))], [["x", "2"], [
    "y",
    "1",
  ]]);
});

Deno.test("wire: bounds, padding and truncation are clear errors", async () => {
  const long = await encode((w) => w.string("x".repeat(100)));
  await assert.rejects(readerOf(long).readString(99, "store path"), (e) => {
    assert.ok(e instanceof WireError);
    assert.match(
      e.message,
      /store path length 100 is out of range \(at most 99\) \(at byte 0\)/,
    );
    return true;
  });
  const bad = await encode((w) => w.string("abc"));
  bad[12] = 1; // padding byte
  await assert.rejects(readerOf(bad).readString(10), /non-zero padding/);
  await assert.rejects(
    readerOf(long.subarray(0, 50)).readString(1000),
    /unexpected end of stream/,
  );
  await assert.rejects(
    readerOf(await encode((w) => w.u64(2))).readBool(),
    /must be 0 or 1/,
  );
  await assert.rejects(
    readerOf(new Uint8Array(3)).readNumber(),
    /unexpected end of stream/,
  );
  const many = await encode((w) => w.u64(1e9));
  await assert.rejects(
    readerOf(many).readStrings(1000, 10, "references"),
    /references size 1000000000 is out of range/,
  );
});

Deno.test("wire: streamExact delivers the bytes and skips padding; cancel skips the rest", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 300 }),
      cutsArb,
      async (payload, cuts) => {
        const data = await encode((w) => w.bytes(payload).u64(7));
        const r = readerOf(data, cuts);
        const len = await r.readNumber();
        assert.deepEqual(await drainStream(r.streamExact(len, true)), payload);
        assert.equal(await r.readNumber(), 7);
        const r2 = readerOf(data, cuts);
        const s = r2.streamExact(await r2.readNumber(), true);
        await assert.rejects(r2.readNumber(), /still open/);
        await s.cancel();
        assert.equal(await r2.readNumber(), 7);
      },
    ),
  );
});

Deno.test("wire: writer batches small values and passes big ones through", async () => {
  const { w, bytes } = collectingWriter(64);
  for (let i = 0; i < 20; i++) w.u64(i);
  const big = new Uint8Array(10000).fill(7);
  await w.write(big);
  w.string("end");
  await w.flush();
  const r = readerOf(bytes());
  for (let i = 0; i < 20; i++) assert.equal(await r.readNumber(), i);
  assert.deepEqual(await r.readExact(10000), big);
  assert.equal(await r.readString(10), "end");
});

Deno.test("wire: a list of strings is bounded in total, not only per item", async () => {
  const many = await encode((w) =>
    w.strings(Array.from({ length: 100 }, () => "x".repeat(1000)))
  );
  assert.equal((await readerOf(many).readStrings(1000, 1000)).length, 100);
  await assert.rejects(
    readerOf(many).readStrings(1000, 1000, "references", 50_000),
    /references exceed 50000 bytes in total/,
  );
});

Deno.test("wire: writer hands a big chunk to the sink as is when nothing is buffered", async () => {
  const got: Uint8Array[] = [];
  const w = new WireWriter({
    write: (c) => void got.push(c),
    close: () => {},
    abort: () => {},
  }, 256 << 10);
  const big = new Uint8Array(256 << 10).fill(3);
  w.u64(1);
  await w.write(big); // after a buffered value: order kept
  await w.write(big); // nothing buffered: the same array, not a copy
  await w.flush();
  const total = got.reduce((a, c) => a + c.length, 0);
  assert.equal(total, 8 + 2 * big.length);
  assert.ok(got.includes(big));
  const all = new Uint8Array(total);
  let o = 0;
  for (const c of got) {
    all.set(c, o);
    o += c.length;
  }
  const r = readerOf(all);
  assert.equal(await r.readNumber(), 1);
  assert.deepEqual(await r.readExact(big.length), big);
  assert.deepEqual(await r.readExact(big.length), big);
});
