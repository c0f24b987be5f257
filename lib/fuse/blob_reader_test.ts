import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  BlobService,
  ByteRange,
  ChunkMeta,
} from "../castore/blob_service.ts";
import { BlobReader } from "./blob_reader.ts";

/** A fake chunked blob service over one byte array: chunks of varying sizes, an optional bad chunk. */
function fakeService(data: Uint8Array, chunkSizes: number[], bad?: number) {
  const digest = new Uint8Array(32).fill(7);
  const chunks: ChunkMeta[] = chunkSizes.map((size, i) => ({
    digest: new Uint8Array(32).fill(i + 10),
    size,
  }));
  const starts: number[] = [];
  chunkSizes.reduce((o, s) => (starts.push(o), o + s), 0);
  let reads = 0;
  const svc: BlobService = {
    has: () => Promise.resolve(true),
    chunks: () => Promise.resolve(chunks),
    put: () => {
      throw new Error("read-only");
    },
    read(_d: Uint8Array, range?: ByteRange) {
      reads++;
      const start = range?.offset ?? 0;
      const end = Math.min(data.length, start + (range?.length ?? data.length));
      let pos = start;
      return Promise.resolve(
        new ReadableStream<Uint8Array>({
          pull(c) {
            if (pos >= end) return c.close();
            // Deliver in chunk-sized pieces, as a chunked backend does.
            const i = starts.findLastIndex((s) => s <= pos);
            if (i === bad) {
              return c.error(
                new ConnectError(
                  "chunk does not match its digest",
                  Code.DataLoss,
                ),
              );
            }
            const to = Math.min(end, starts[i] + chunkSizes[i]);
            c.enqueue(data.slice(pos, to));
            pos = to;
          },
        }),
      );
    },
  };
  return { svc, digest, reads: () => reads };
}

function bytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 2654435761) >>> 24;
  return b;
}

Deno.test("BlobReader: sequential and random reads return the right bytes with few backend reads", async () => {
  const sizes = [300_000, 1 << 20, 5, 700_000, 2_000_000, 123_457];
  const total = sizes.reduce((a, b) => a + b, 0);
  const data = bytes(total);
  const { svc, digest, reads } = fakeService(data, sizes);
  const r = new BlobReader(svc, 64 << 20);
  for (let off = 0; off < total; off += 131072) {
    assert.deepEqual(
      await r.read(digest, total, off, 131072),
      data.subarray(off, Math.min(total, off + 131072)),
    );
  }
  assert.equal(reads(), 1, "one stream for a sequential pass");
  const r2 = new BlobReader(svc, 1 << 20);
  for (let i = 0; i < 200; i++) {
    const off = Math.floor(Math.random() * total);
    const len = Math.floor(Math.random() * 300_000);
    assert.deepEqual(
      await r2.read(digest, total, off, len),
      data.subarray(off, Math.min(total, off + len)),
    );
  }
  // Reads past the end are empty; concurrent reads of one region agree.
  assert.equal((await r2.read(digest, total, total, 10)).length, 0);
  const same = await Promise.all(
    [1, 2, 3].map(() => r2.read(digest, total, 1_000_000, 1_500_000)),
  );
  for (const s of same) {
    assert.deepEqual(s, data.subarray(1_000_000, 2_500_000));
  }
  assert.ok(r2.openStreams <= 4 * 1 + 1);
  // readParts: views of the segments a range spans, in order, uncopied.
  const parts = await r.readParts(digest, total, 299_000, 800_000);
  assert.deepEqual(parts.map((p) => p.byteLength), [1000, 799_000]);
  const wide = await r.readParts(digest, total, 100, total);
  assert.equal(wide.length, sizes.length);
  assert.deepEqual(
    new Uint8Array(wide.flatMap((p) => [...p])),
    data.subarray(100),
  );
  assert.deepEqual(
    (await r.readParts(digest, total, total, 5)).map((p) => p.byteLength),
    [0],
  );
});

Deno.test("BlobReader: a bad chunk fails only the reads that touch it", async () => {
  const sizes = [200_000, 200_000, 200_000, 200_000, 200_000, 200_000];
  const total = sizes.reduce((a, b) => a + b, 0);
  const data = bytes(total);
  const { svc, digest } = fakeService(data, sizes, 2);
  const r = new BlobReader(svc, 64 << 20);
  assert.deepEqual(
    await r.read(digest, total, 0, 150_000),
    data.subarray(0, 150_000),
  );
  await assert.rejects(
    r.read(digest, total, 350_000, 100_000),
    /does not match/,
  );
  // Chunks after the bad one still read (a fresh stream starts past it).
  assert.deepEqual(
    await r.read(digest, total, 600_000, 400_000),
    data.subarray(600_000, 1_000_000),
  );
  await assert.rejects(r.read(digest, total, 450_000, 10), /does not match/);
});
