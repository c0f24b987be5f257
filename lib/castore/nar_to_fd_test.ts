// The NAR workers (./nar_to_fd.ts) write a local store's NAR to a file
// descriptor byte for byte as `nix-store --dump` writes it (big files of
// several chunks, many small files, empty, executable, symlinks), under Deno
// and the Bun runner; a damaged chunk in the middle stops the output with
// the blob service's error naming the digest, after a prefix of the NAR;
// jobs the workers give back (packs moved after planning) are read again.
// Skipped where the workers cannot run (no native BLAKE3 addon).
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { LocalBlobService } from "./local_blob_service.ts";
import { LocalDirectoryService } from "./local_directory_service.ts";
import { ingestTree } from "./ingest_tree.ts";
import { nativeBlake3 } from "./blake3_native.ts";
import { digestToString } from "./digest.ts";
import { closeNarWorkers, writeJobsToFd, writeNarToFd } from "./nar_to_fd.ts";
import { type NarJob, planNar } from "./nar_plan.ts";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import {
  flipStoredByte,
  pseudoRandom,
  runTool,
  tempDir,
} from "./_test_blob_service.ts";

/** A tree with big files of several chunks and many small ones. */
function makeTree(dir: string): void {
  fs.mkdirSync(join(dir, "a/b/c"), { recursive: true });
  fs.writeFileSync(join(dir, "big"), pseudoRandom(3_000_000, 7));
  const text = new TextEncoder().encode("compressible text line\n".repeat(9e4));
  fs.writeFileSync(join(dir, "a/big-text"), text);
  for (let i = 0; i < 400; i++) {
    const sub = ["", "a", "a/b", "a/b/c"][i % 4];
    fs.writeFileSync(
      join(dir, sub, `f${i}`),
      pseudoRandom((i * 997) % 6000, i + 1),
    );
  }
  fs.writeFileSync(join(dir, "empty"), "");
  fs.writeFileSync(join(dir, "a/run"), "#!/bin/sh\n");
  fs.chmodSync(join(dir, "a/run"), 0o755);
  fs.symlinkSync("../big", join(dir, "a/link"));
}

Deno.test({
  name:
    "nar workers: the NAR written to a file descriptor equals nix-store --dump; a damaged chunk mid-NAR stops it with an error naming the digest; jobs given back (packs moved) are read again",
  ignore: nativeBlake3 === undefined,
  fn: async () => {
    const tmp = await tempDir("snix-nar-workers-");
    try {
      const src = join(tmp, "src");
      makeTree(src);
      let blobs = await LocalBlobService.open(join(tmp, "data"));
      const directories = await LocalDirectoryService.open(join(tmp, "data"));
      const entry = await ingestTree(src, blobs, directories);
      const want = runTool("nix-store", ["--dump", src]);
      const packDir = join(tmp, "data", "castore", "packs", "blobs");
      const write = async (file: string) => {
        const fd = fs.openSync(file, "w");
        try {
          return await writeNarToFd(entry, blobs, directories, fd, 1 << 30);
        } finally {
          fs.closeSync(fd);
        }
      };
      const n = await write(join(tmp, "out.nar"));
      assert.equal(n, want.length, "written by the workers");
      assert.deepEqual(
        new Uint8Array(fs.readFileSync(join(tmp, "out.nar"))),
        want,
      );
      // Too small for the workers: nothing written, the caller streams.
      assert.equal(
        await writeNarToFd(entry, blobs, directories, 1, 1000),
        undefined,
      );

      // Damage the middle chunk of the big file.
      const root = await directories.get(
        (entry.entry.value as { digest: Uint8Array }).digest,
      );
      const big = root!.files.find((f) =>
        new TextDecoder().decode(f.name) === "big"
      )!;
      const chunks = blobs.chunkList(big.digest)!.chunks;
      assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
      const bad = chunks[chunks.length >> 1].digest;
      flipStoredByte(blobs.locateChunk(bad)!);
      await assert.rejects(
        write(join(tmp, "bad.nar")),
        (e: Error) => e.message.includes(digestToString(bad)),
      );
      const got = new Uint8Array(fs.readFileSync(join(tmp, "bad.nar")));
      assert.ok(got.length < want.length, "stopped early");
      assert.deepEqual(got, want.subarray(0, got.length), "a prefix");
      // The workers serve the next NAR. (The damaged chunk is repaired in
      // place, which never happens to a pack otherwise: a service that read
      // it may still hold the damaged bytes in a pack read window, so a
      // fresh one reads on, as another process would.)
      flipStoredByte(blobs.locateChunk(bad)!);
      blobs = await LocalBlobService.open(join(tmp, "data"));
      assert.equal(await write(join(tmp, "again.nar")), want.length);
      // Packs merged away after planning: every job comes back from the
      // workers (no such file) and is read again where the records moved.
      const planned: NarJob[] = [];
      for await (const j of planNar(entry, blobs, directories)) planned.push(j);
      assert.ok(planned.length > 1);
      for (const name of fs.readdirSync(packDir)) {
        if (name.endsWith(".pack")) {
          fs.renameSync(join(packDir, name), join(packDir, `moved-${name}`));
        }
      }
      const fdm = fs.openSync(join(tmp, "moved.nar"), "w");
      try {
        const m = await writeJobsToFd(
          (async function* () {
            yield* planned;
          })(),
          blobs,
          fdm,
        );
        assert.equal(m, want.length);
      } finally {
        fs.closeSync(fdm);
      }
      assert.deepEqual(
        new Uint8Array(fs.readFileSync(join(tmp, "moved.nar"))),
        want,
      );
      // A store path that is one file.
      const fileEntry = { entry: { case: "file", value: big } } as Entry;
      const fd = fs.openSync(join(tmp, "file.nar"), "w");
      try {
        await writeNarToFd(fileEntry, blobs, directories, fd, 1 << 30);
      } finally {
        fs.closeSync(fd);
      }
      assert.deepEqual(
        new Uint8Array(fs.readFileSync(join(tmp, "file.nar"))),
        runTool("nix-store", ["--dump", join(src, "big")]),
      );
    } finally {
      await closeNarWorkers();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
});
