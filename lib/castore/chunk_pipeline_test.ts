import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { LocalBlobService } from "./local_blob_service.ts";
import { ChunkPipeline, QUEUED_WRITER } from "./chunk_pipeline.ts";
import { chunkAll } from "./chunker.ts";
import { blake3Sync } from "./digest.ts";
import { pseudoRandom } from "./_test_blob_service.ts";
import { zstdCompressor } from "../runtime/zstd.ts";
import type { BlobWriter } from "./blob_service.ts";
import { collect } from "../nix/_test_streams.ts";

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
