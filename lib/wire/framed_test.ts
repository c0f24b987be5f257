import assert from "node:assert/strict";
import { FramedSink, framedSource } from "./framed.ts";
import { WireReader } from "./reader.ts";
import { collectingWriter, encode, readerOf } from "./test_util.ts";

/** 1 MiB of patterned data sent as 32 KiB frames (as Nix sends them), then the number 42. */
async function framedBytes(
  frame = 32 << 10,
): Promise<[Uint8Array, Uint8Array]> {
  const data = new Uint8Array(1 << 20).map((_, i) => (i * 131) >> 3);
  const { w, bytes } = collectingWriter();
  const sink = new FramedSink(w, frame);
  await sink.write(data);
  await sink.close();
  w.u64(42);
  await w.flush();
  return [data, bytes()];
}

Deno.test("framed: pieces are gathered across frames (64 KiB to 256 KiB) and views never overlap", async () => {
  const [data, bytes] = await framedBytes();
  // Socket-like reads: 64 KiB at most.
  const r = readerOf(bytes, [65536, 13000, 65536]);
  const src = framedSource(r, 1 << 20);
  const pieces: Uint8Array[] = [];
  for await (const c of src.stream) pieces.push(c);
  for (const p of pieces.slice(0, -1)) {
    assert.ok(p.length >= 64 << 10 && p.length <= 256 << 10, `${p.length}`);
  }
  // Kept views still hold their bytes after later pieces were gathered.
  let o = 0;
  for (const p of pieces) {
    assert.deepEqual(p, data.subarray(o, o + p.length));
    o += p.length;
  }
  assert.equal(o, data.length);
  assert.ok(src.done);
  assert.equal(await r.readNumber(), 42);
});

Deno.test("framed: read directly by a nested WireReader; drain after a partial read", async () => {
  const [data, bytes] = await framedBytes(1000);
  const r = readerOf(bytes, [4096, 7, 100000]);
  const src = framedSource(r, 1 << 20);
  const inner = new WireReader(src);
  assert.deepEqual(await inner.readExact(5), data.subarray(0, 5));
  assert.deepEqual(await inner.readExact(300000), data.subarray(5, 300005));
  await src.drain();
  assert.ok(src.done);
  assert.equal(await r.readNumber(), 42);
  // Reading on through the nested reader reaches the end of the frames.
  const r2 = readerOf(bytes, [65536]);
  const inner2 = new WireReader(framedSource(r2, 1 << 20));
  assert.deepEqual(await inner2.readExact(data.length), data);
  assert.ok(await inner2.atEnd());
  assert.equal(await r2.readNumber(), 42);
});

Deno.test("framed: direct reads report a cut frame and a huge length; drain then fails too", async () => {
  const cut = await encode((w) => w.u64(100).raw(new Uint8Array(10)));
  const src = framedSource(readerOf(cut), 1 << 20);
  await assert.rejects(
    new WireReader(src).readExact(50),
    /unexpected end of stream inside a frame/,
  );
  await assert.rejects(src.drain(), /unexpected end of stream inside a frame/);
  const huge = await encode((w) => w.u64(2n ** 40n));
  await assert.rejects(
    new WireReader(framedSource(readerOf(huge), 1 << 20)).readExact(1),
    /frame length 1099511627776 is out of range/,
  );
});
