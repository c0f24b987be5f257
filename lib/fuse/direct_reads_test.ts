// The reply workers against a real local blob service, with a plain file as
// the "device" (a reply is appended to it as the kernel would take it), so
// any offset and size can be asked for; runs under Deno and Bun.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalBlobService } from "../castore/local_blob_service.ts";
import { nativeBlake3 } from "../castore/blake3_native.ts";
import { chunkLayout, DirectReads } from "./direct_reads.ts";
import { flipStoredByte, pseudoRandom } from "../castore/_test_blob_service.ts";

/** Deterministic bytes that do not compress (xorshift32). */

/** The replies in `file`: unique -> [error, data]. */
function parseReplies(file: string): Map<number, [number, Uint8Array]> {
  const b = fs.readFileSync(file);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = new Map<number, [number, Uint8Array]>();
  for (let at = 0; at < b.byteLength;) {
    const len = v.getUint32(at, true);
    assert.ok(len >= 16 && at + len <= b.byteLength, `reply at ${at}`);
    out.set(Number(v.getBigUint64(at + 8, true)), [
      v.getInt32(at + 4, true),
      b.subarray(at + 16, at + len),
    ]);
    at += len;
  }
  return out;
}

async function until(f: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function directReads(): Promise<void> {
  const dir = fs.mkdtempSync(join(tmpdir(), "snix-direct-"));
  const open: DirectReads[] = [];
  try {
    const blobs = await LocalBlobService.open(join(dir, "data"));
    const size = (6 << 20) + 12345;
    const src = pseudoRandom(size, 7);
    // As an ingestion writes it: into a pack.
    const session = blobs.openSession()!;
    const w = blobs.putDeferred(session);
    await w.write(src);
    const digest = await w.close();
    await session.finish();
    const layout = await chunkLayout(
      blobs,
      (d) => blobs.locateChunk(d),
      digest,
      size,
    );
    assert.ok(layout, "all chunks are pack records");
    assert.ok(layout.starts.length >= 8, `${layout.starts.length} chunks`);
    const s = layout.starts;

    const run = async (asks: [number, number][]) => {
      const device = join(dir, `replies-${open.length}`);
      const fd = fs.openSync(device, "a");
      const back: number[] = [];
      const dr = new DirectReads((u) => back.push(u));
      open.push(dr);
      assert.ok(await dr.start(fd), "the workers start");
      const id = dr.register("blob", layout);
      asks.forEach(([off, n], i) => dr.read(BigInt(1000 + i), id, off, n));
      await until(
        async () => (await dr.replies()) + back.length === asks.length,
        "replies",
      );
      fs.closeSync(fd);
      return { replies: parseReplies(device), back, dr };
    };

    const asks: [number, number][] = [
      [0, 4096],
      [0, 131072],
      [12345, 99999], // odd offset and size
      [s[2] - 1000, 5000], // straddles a boundary
      [s[3] - 7, 3 << 18], // several chunks from an odd offset
      [s[5], s[6] - s[5]], // exactly one chunk
      [1 << 20, 1 << 20], // a whole MiB
      [2 << 20, 1 << 20], // the other worker (2 MiB routing spans)
      [(3 << 20) + 1, 1 << 20],
      [size - 100, 4096], // short at the end
      [size, 4096], // at the end: empty
      [size + 10, 100], // past the end: empty
      [12345, 99999], // again: from a worker's cache
    ];
    const { replies, back, dr } = await run(asks);
    assert.deepEqual(back, []);
    assert.equal(dr.dispatched, asks.length);
    asks.forEach(([off, n], i) => {
      const r = replies.get(1000 + i);
      assert.ok(r, `reply ${i}`);
      assert.equal(r[0], 0);
      const want = src.subarray(Math.min(off, size), Math.min(size, off + n));
      assert.equal(r[1].byteLength, want.byteLength, `length of reply ${i}`);
      assert.ok(Buffer.from(r[1]).equals(want), `bytes of reply ${i}`);
    });

    // Damage chunk 4's stored frame: READs touching it come back (nothing
    // written for them), the others are answered.
    flipStoredByte(layout.ranges[4]);
    const bad: [number, number][] = [
      [s[4] + 10, 100], // inside chunk 4
      [s[3], s[5] - s[3]], // across it
      [0, 8192], // chunk 0: fine
      [s[6] + 1, 300000], // fine
    ];
    const second = await run(bad);
    assert.deepEqual(second.back.sort(), [1000, 1001]);
    assert.deepEqual([...second.replies.keys()].sort(), [1002, 1003]);
    for (const i of [2, 3]) {
      const [off, n] = bad[i];
      assert.ok(
        Buffer.from(second.replies.get(1000 + i)![1]).equals(
          src.subarray(off, off + n),
        ),
      );
    }
    await blobs.close?.();
  } finally {
    for (const dr of open) dr.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

Deno.test({
  name:
    "direct reads: workers answer READs at odd offsets and across chunk boundaries with the stored bytes; a chunk that does not check out gives its READs back unanswered",
  // The workers need the native BLAKE3 (else READs stay on the main thread).
  ignore: nativeBlake3 === undefined,
  fn: directReads,
});
