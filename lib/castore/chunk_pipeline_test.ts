import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LocalBlobService } from "./local_blob_service.ts";
import { ChunkPipeline, QUEUED_WRITER } from "./chunk_pipeline.ts";
import { chunkAll } from "./chunker.ts";
import { blake3Sync } from "./digest.ts";
import { pseudoRandom } from "./_test_blob_service.ts";
import { zstdCompressor } from "../runtime/zstd.ts";
import type { BlobWriter } from "./blob_service.ts";
import { collect } from "../nix/_test_streams.ts";
import { ingestTree } from "./ingest_tree.ts";
import { LocalDirectoryService } from "./local_directory_service.ts";
import { MemoryBlobService } from "./memory_blob_service.ts";
import { MemoryDirectoryService } from "./memory_directory_service.ts";

/** Low-entropy bytes (compressible, FastCDC still cuts them). */
function text(n: number, seed: number): Uint8Array {
  const r = pseudoRandom(n, seed);
  return r.map((b) => 97 + (b % 4));
}

const pipelineUp = (await ChunkPipeline.shared(await zstdCompressor(), -1)) !==
  undefined;

Deno.test({
  name:
    "chunk pipeline: blobs through the ingest worker get the chunker's cut points, BLAKE3 digests and read back intact (interleaved writers, abort, empty, small)",
  ignore: !pipelineUp,
  async fn() {
    const dir = mkdtempSync("/tmp/snix-pipe-test-");
    try {
      const svc = await LocalBlobService.open(dir, { ingestWorker: true });
      const session = svc.openSession()!;
      // The worker is up already (above), so these writers use it.
      const blobs = [
        new Uint8Array(0),
        pseudoRandom(100, 1),
        pseudoRandom((128 << 10) - 1, 2),
        pseudoRandom(128 << 10, 3),
        pseudoRandom(3 << 20, 4),
        text(5 << 20, 5),
        pseudoRandom(3 << 20, 4), // again: deduplicated in the pack
      ];
      const writers: BlobWriter[] = blobs.map(() => svc.putDeferred(session));
      assert.ok(writers.every((w) => QUEUED_WRITER in w), "worker writers");
      const aborted = svc.putDeferred(session);
      await aborted.write(pseudoRandom(1 << 20, 9));
      // Interleaved writes in odd piece sizes.
      const step = 300_001;
      for (let o = 0; o < 5 << 20; o += step) {
        for (const [i, b] of blobs.entries()) {
          if (o < b.length) await writers[i].write(b.subarray(o, o + step));
        }
        if (o === 0) await aborted.abort();
      }
      const digests = await Promise.all(writers.map((w) => w.close()));
      await session.finish();
      for (const [i, b] of blobs.entries()) {
        assert.deepEqual(digests[i], blake3Sync(b), `digest of blob ${i}`);
        const chunks = await svc.chunks(digests[i]);
        const want = chunkAll(b);
        if (want.length > 1) {
          assert.deepEqual(
            chunks?.map((c) => c.size),
            want.map((c) => c.length),
            `cut points of blob ${i}`,
          );
          assert.deepEqual(
            chunks?.map((c) => c.digest),
            want.map((c) => blake3Sync(c)),
          );
        }
        assert.deepEqual(await collect((await svc.read(digests[i]))!), b);
      }
      await assert.rejects(aborted.close(), /aborted/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
});

/** A tree of nested directories with files from 0 B to 3 MiB. */
function makeTree(root: string): void {
  const sizes = [0, 100, (128 << 10) + 1, 3 << 20, 700_000];
  for (const [d, dir] of ["a", "a/b", "a/b/c", "d", ""].entries()) {
    mkdirSync(join(root, dir), { recursive: true });
    for (const [i, n] of sizes.entries()) {
      writeFileSync(join(root, dir, `f${i}`), pseudoRandom(n, 10 * d + i));
    }
  }
}

Deno.test({
  name:
    "ingestion with the ingest worker: the same root digest as without it (directories no longer wait for their blobs in the walk), and a blob failing late still fails the import",
  ignore: !pipelineUp,
  async fn() {
    const tmp = mkdtempSync("/tmp/snix-pipe-ingest-test-");
    try {
      const src = join(tmp, "src");
      makeTree(src);
      const roots: Uint8Array[] = [];
      for (const ingestWorker of [true, false]) {
        const data = join(tmp, `data-${ingestWorker}`);
        const blobs = await LocalBlobService.open(data, { ingestWorker });
        const dirs = await LocalDirectoryService.open(data);
        // The first session starts the worker; the second uses it.
        await ingestTree(src, blobs, dirs);
        const entry = await ingestTree(src, blobs, dirs);
        assert.equal(entry.entry.case, "directory");
        roots.push((entry.entry.value as { digest: Uint8Array }).digest);
      }
      assert.deepEqual(roots[0], roots[1], "root digests with and without");

      // A blob whose close fails after the walk went on: the import fails.
      const inner = new MemoryBlobService();
      let n = 0;
      const failing = {
        has: (d: Uint8Array) => inner.has(d),
        chunks: (d: Uint8Array) => inner.chunks(d),
        read: (d: Uint8Array) => inner.read(d),
        put: (): BlobWriter => {
          const w = inner.put();
          const bad = ++n === 3;
          return {
            write: (b) => w.write(b),
            close: async () => {
              if (!bad) return await w.close();
              await new Promise((r) => setTimeout(r, 20));
              throw new Error("disk on fire");
            },
            abort: () => w.abort(),
          };
        },
      };
      await assert.rejects(
        ingestTree(src, failing, new MemoryDirectoryService()),
        /disk on fire/,
      );
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  },
});
