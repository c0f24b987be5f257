/**
 * NAR ingestion against real Nix: `nix-store --dump` output ingested into
 * castore renders back byte for byte; truncated, garbage and mismatching NARs
 * are rejected with a clear error and leave no PathInfo.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBlobService } from "../lib/castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../lib/castore/memory_directory_service.ts";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import { ingestNar } from "../lib/castore/ingest_nar.ts";
import { renderNar } from "../lib/castore/render_nar.ts";
import { MemoryPathInfoService } from "../lib/store/memory_path_info_service.ts";
import { importNar } from "../lib/store/import_nar.ts";
import { hashNar } from "../lib/store/nar_calculation.ts";
import { makeHash } from "../lib/nix/hash.ts";
import { makeSourcePath } from "../lib/nix/store_path.ts";
import type { NixPathInfo } from "../lib/store/path_info.ts";

function memServices() {
  return {
    blobs: new MemoryBlobService(),
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  };
}

function streamOf(b: Uint8Array, chunk = 4096): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream({
    pull(c) {
      if (o >= b.length) return c.close();
      c.enqueue(b.slice(o, o + chunk));
      o += chunk;
    },
  });
}

async function bytesOf(s: ReadableStream<Uint8Array>): Promise<Buffer> {
  return Buffer.from(await new Response(s).arrayBuffer());
}

const DOC_SUBSET = [
  "/usr/share/doc/adduser",
  "/usr/share/doc/nix-bin",
  "/usr/share/doc/zstd",
];

Deno.test("store nar: nix-store --dump round-trips through castore, memory and local (dirs, file, symlink roots)", async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-nar-"));
  try {
    await fsp.writeFile(join(dir, "f"), "just a file\n", { mode: 0o755 });
    await fsp.symlink("/some/where", join(dir, "l"));
    const sources = [
      ...DOC_SUBSET.filter((p) => {
        try {
          Deno.statSync(p);
          return true;
        } catch {
          return false;
        }
      }),
      join(dir, "f"),
      join(dir, "l"),
      dir,
    ];
    const local = {
      blobs: await LocalBlobService.open(join(dir, "data")),
      directories: await LocalDirectoryService.open(join(dir, "data")),
    };
    for (
      const [s, src] of [memServices(), local].flatMap((s) =>
        sources.map((src) => [s, src] as const)
      )
    ) {
      const dump = execFileSync("nix-store", ["--dump", src], {
        maxBuffer: 256 << 20,
      });
      const want = await hashNar(streamOf(dump));
      const r = await ingestNar(
        streamOf(dump, 1000),
        s.blobs,
        s.directories,
        want,
      );
      assert.equal(r.narSize, dump.length);
      assert.deepEqual(r.narSha256, want.narSha256);
      const back = await bytesOf(renderNar(r.entry, s.blobs, s.directories));
      assert.ok(
        back.equals(dump),
        `${src}: rendered NAR differs from nix-store --dump`,
      );
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("store nar: truncated, garbage and mismatching NARs leave no PathInfo", async () => {
  const src = "/usr/share/doc/adduser";
  const dump = execFileSync("nix-store", ["--dump", src], {
    maxBuffer: 64 << 20,
  });
  const want = await hashNar(streamOf(dump));
  const info = (narSha256: Uint8Array, narSize: number): NixPathInfo => ({
    path: makeSourcePath(want.narSha256, "adduser"),
    narHash: makeHash("sha256", narSha256),
    narSize,
    references: [],
    registrationTime: 0,
    ultimate: false,
    sigs: [],
  });
  const flipped = Uint8Array.from(dump);
  flipped[flipped.length - 200] ^= 1; // inside the last file's contents or padding
  const cases: [string, Uint8Array, NixPathInfo, RegExp][] = [
    [
      "truncated",
      dump.subarray(0, dump.length - 50),
      info(want.narSha256, 0),
      /NAR|end|truncated|unexpected/i,
    ],
    [
      "garbage",
      new TextEncoder().encode("this is not a NAR at all, sorry".repeat(10)),
      info(want.narSha256, 0),
      /NAR|magic/i,
    ],
    [
      "trailing bytes",
      Buffer.concat([dump, Buffer.alloc(8)]),
      info(want.narSha256, 0),
      /after|trailing|end/i,
    ],
    ["hash mismatch", flipped, info(want.narSha256, 0), /mismatch|padding/i],
    [
      "size mismatch",
      dump,
      info(want.narSha256, dump.length + 8),
      /size mismatch/,
    ],
  ];
  for (const [what, bytes, i, re] of cases) {
    const s = memServices();
    await assert.rejects(importNar(streamOf(bytes), i, s), (e: Error) => {
      assert.match(e.message, re, `${what}: ${e.message}`);
      assert.ok(!e.message.includes("\n"), `${what}: one line`);
      return true;
    });
    assert.equal(await s.pathInfos.get(i.path.digest), undefined, what);
    const all = [];
    for await (const p of s.pathInfos.list()) all.push(p);
    assert.equal(all.length, 0, what);
  }
  // and the good one goes in
  const s = memServices();
  const good = await importNar(
    streamOf(dump),
    info(want.narSha256, dump.length),
    s,
  );
  assert.ok(
    await s.pathInfos.get(makeSourcePath(want.narSha256, "adduser").digest),
  );
  assert.equal(Number(good.narinfo!.narSize), dump.length);
});

Deno.test("store nar: a big NAR (hashed on a second thread) round-trips, and a flipped byte in it is a hash mismatch", async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-bignar-"));
  try {
    const src = join(dir, "src");
    await fsp.mkdir(src);
    const big = new Uint8Array(20 << 20);
    for (let i = 0; i < big.length; i += 65536) {
      crypto.getRandomValues(big.subarray(i, i + 65536));
    }
    await fsp.writeFile(join(src, "big"), big);
    await fsp.writeFile(join(src, "small"), "small\n");
    const dump = execFileSync("nix-store", ["--dump", src], {
      maxBuffer: 64 << 20,
    });
    const want = await hashNar(streamOf(dump));
    const data = join(dir, "data");
    const s = {
      blobs: await LocalBlobService.open(data),
      directories: await LocalDirectoryService.open(data),
    };
    const r = await ingestNar(
      streamOf(dump, 13_000),
      s.blobs,
      s.directories,
      want,
    );
    assert.deepEqual(r.narSha256, want.narSha256);
    assert.ok(
      (await bytesOf(renderNar(r.entry, s.blobs, s.directories))).equals(dump),
    );
    const flipped = Uint8Array.from(dump);
    flipped[dump.length >> 1] ^= 1;
    await assert.rejects(
      ingestNar(streamOf(flipped, 13_000), s.blobs, s.directories, want),
      /hash mismatch/,
    );
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
