import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { RangeDecoder } from "./range_decoder.ts";
import { blake3Sync, digestToString } from "./digest.ts";
import { nativeBlake3File } from "./blake3_native.ts";
import { LocalBlobService } from "./local_blob_service.ts";
import { LocalDirectoryService } from "./local_directory_service.ts";
import { ingestTree } from "./ingest_tree.ts";
import { renderNar } from "./render_nar.ts";
import { PackFile, PackKind } from "./pack.ts";

// The decoder thread is opt-in for now (see RangeDecoder.shared).
process.env.SNIX_DECODE_WORKER = "1";

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-decoder-"));
  try {
    await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Semi-compressible bytes, different per seed. */
function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < n; i++) {
    if (i % 64 === 0) x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (i & 8) ? x >>> 24 : i & 0x3f;
  }
  return b;
}

/** A tree of about 14 MiB (more than the 8 MiB after which renders go parallel). */
function makeTree(src: string): void {
  for (let i = 0; i < 6; i++) {
    fs.mkdirSync(join(src, `d${i}`), { recursive: true });
    fs.writeFileSync(join(src, `d${i}`, "big"), bytes(2_000_000 + i, i));
    for (let k = 0; k < 40; k++) {
      fs.writeFileSync(
        join(src, `d${i}`, `f${k}`),
        bytes(100 + k * 997, i * 100 + k),
      );
    }
  }
}

Deno.test("range decoder: long NAR renders use the decoder thread and equal nix-store --dump; damage is still DataLoss naming the chunk", async () => {
  await withTmp(async (dir) => {
    const src = join(dir, "src");
    makeTree(src);
    const data = join(dir, "data");
    const blobs = await LocalBlobService.open(data, { avgChunkSize: 64 << 10 });
    const dirs = await LocalDirectoryService.open(data);
    const entry = await ingestTree(src, blobs, dirs);
    const want = execFileSync("nix-store", ["--dump", src], {
      maxBuffer: 64 << 20,
    });
    const render = async (b: LocalBlobService) =>
      new Uint8Array(
        await new Response(renderNar(entry, b, dirs)).arrayBuffer(),
      );
    const fresh = await LocalBlobService.open(data);
    assert.ok(RangeDecoder.shared(), "a decoder thread can start here");
    const before = RangeDecoder.decoded;
    const got = await render(fresh);
    assert.ok(RangeDecoder.decoded - before > 100, "the thread decoded chunks");
    assert.equal(got.length, want.length);
    assert.ok(Buffer.from(got).equals(want), "NAR equals nix-store --dump");
    // Flip a byte of a chunk of a big file, far into the NAR.
    const packDir = join(data, "castore", "packs", "blobs");
    const path = join(packDir, fs.readdirSync(packDir)[0]);
    const pack = PackFile.load(path);
    let victim = -1;
    for (let i = 0; i < pack.count; i++) {
      const r = pack.record(i);
      if (r.kind === PackKind.chunk && r.rawSize > 30_000) victim = i;
    }
    const r = pack.record(victim);
    const b = fs.readFileSync(path);
    b[r.offset + (r.length >> 1)] ^= 0x10;
    fs.writeFileSync(path, b);
    await assert.rejects(
      render(await LocalBlobService.open(data)),
      (e: Error) =>
        /corrupt/.test(e.message) &&
        e.message.includes(digestToString(pack.digest(victim))),
    );
  });
});

Deno.test("range decoder: unreadable or undecodable ranges come back undefined, good ones exact", async () => {
  await withTmp(async (dir) => {
    const path = join(dir, "f");
    const frame = execFileSync("zstd", ["-c", "-q"], {
      input: Buffer.from("hello, decoder\n".repeat(100)),
    });
    fs.writeFileSync(path, Buffer.concat([Buffer.from("junk"), frame]));
    const release = RangeDecoder.hold();
    try {
      const d = RangeDecoder.shared()!;
      assert.ok(d);
      const text = "hello, decoder\n".repeat(100);
      const digest = blake3Sync(new TextEncoder().encode(text));
      const other = blake3Sync(new TextEncoder().encode("other"));
      const [good, wrongSize, garbage, missing, past, wrongDigest] =
        await Promise.all([
          d.decode(path, 4, frame.length, 1500, digest),
          d.decode(path, 4, frame.length, 1499, digest),
          d.decode(path, 0, frame.length, 1500, digest),
          d.decode(join(dir, "nope"), 0, 10, 10, digest),
          d.decode(path, 4, frame.length + 100, 1500, digest),
          d.decode(path, 4, frame.length, 1500, other),
        ]);
      assert.equal(new TextDecoder().decode(good!.bytes), text);
      // The native addon is a file here (not a compiled binary): the
      // thread checks digests itself.
      assert.equal(good!.verified, nativeBlake3File !== undefined);
      if (good!.verified) assert.equal(wrongDigest, undefined);
      else assert.ok(wrongDigest);
      assert.equal(wrongSize, undefined);
      assert.equal(garbage, undefined);
      assert.equal(missing, undefined);
      assert.equal(past, undefined);
    } finally {
      release();
    }
  });
});
