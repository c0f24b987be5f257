import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { encodeChunkList, LocalBlobService } from "./local_blob_service.ts";
import { chunkAll } from "./chunker.ts";
import {
  blobServiceCases,
  pseudoRandom,
  putBlob,
  readAll,
  runTool,
  tempDir as makeTemp,
} from "./_test_blob_service.ts";
import { rejectsWith } from "./_test_directory_service.ts";
import { blake3Sync, digestToString } from "./digest.ts";

async function tempDir(): Promise<string> {
  return await makeTemp("castore-blob-");
}

blobServiceCases("LocalBlobService", async () => {
  const dir = await tempDir();
  return {
    svc: await LocalBlobService.open(dir),
    cleanup: () => fs.rm(dir, { recursive: true, force: true }),
  };
});

Deno.test("LocalBlobService: data survives reopening; chunks are deduplicated", async () => {
  const dir = await tempDir();
  try {
    const a = pseudoRandom(3 << 20, 11);
    const svc = await LocalBlobService.open(dir);
    const da = await putBlob(svc, a);
    const chunksA = (await svc.chunks(da))!;
    assert.ok(chunksA.length >= 5, `${chunksA.length} chunks`);
    // b = a with 100 bytes changed in the middle: most chunks shared
    const b = a.slice();
    b.fill(1, 1 << 20, (1 << 20) + 100);
    const db = await putBlob(svc, b);
    const chunksB = (await svc.chunks(db))!;
    const setA = new Set(chunksA.map((c) => digestToString(c.digest)));
    const shared = chunksB.filter((c) =>
      setA.has(digestToString(c.digest))
    ).length;
    assert.ok(
      shared >= chunksB.length - 2,
      `only ${shared}/${chunksB.length} shared`,
    );
    const svc2 = await LocalBlobService.open(dir);
    assert.ok(
      Buffer.from(await readAll((await svc2.read(db))!)).equals(Buffer.from(b)),
    );
    const listed = [];
    for await (const d of svc2.listBlobs()) listed.push(digestToString(d));
    assert.ok(
      listed.includes(digestToString(da)) &&
        listed.includes(digestToString(db)),
    );
    for (const c of chunksB) {
      assert.ok(listed.includes(digestToString(c.digest)));
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

async function flipByte(path: string, at: (size: number) => number) {
  const b = await fs.readFile(path);
  b[at(b.length)] ^= 0x55;
  await fs.writeFile(path, b);
}

for (const asyncReads of [false, true]) {
  Deno.test(`LocalBlobService: a flipped byte in a chunk file is DataLoss naming the digest${asyncReads ? " (read-ahead off-thread)" : ""}`, async () => {
    const dir = await tempDir();
    try {
      const svc = await LocalBlobService.open(dir, { asyncReads });
      const data = pseudoRandom(2 << 20, 3);
      const digest = await putBlob(svc, data);
      const chunks = (await svc.chunks(digest))!;
      const victim = chunks[2];
      await flipByte(svc.chunkPath(victim.digest), (n) => Math.floor(n / 2));
      const name = digestToString(victim.digest).replace(/[+/=]/g, "\\$&");
      // whole read: the bytes of chunks before the victim may arrive, then an error
      const s = (await svc.read(digest))!;
      const got: Uint8Array[] = [];
      await rejectsWith(
        (async () => {
          for await (const p of s) got.push(p);
        })(),
        Code.DataLoss,
        new RegExp(`chunk ${name} of blob .* is corrupt`),
      );
      const n = got.reduce((a, p) => a + p.length, 0);
      assert.equal(
        n,
        chunks[0].size + chunks[1].size,
        "only verified chunks were delivered",
      );
      // a ranged read inside the victim fails too; one outside it works
      const off = chunks[0].size + chunks[1].size + 10;
      await rejectsWith(
        readAll((await svc.read(digest, { offset: off, length: 5 }))!),
        Code.DataLoss,
        new RegExp(name),
      );
      const ok = await readAll(
        (await svc.read(digest, { offset: 5, length: 100 }))!,
      );
      assert.ok(Buffer.from(ok).equals(Buffer.from(data.subarray(5, 105))));
      // a missing chunk: the read fails at it, saying so
      await fs.rm(svc.chunkPath(chunks[4].digest));
      await rejectsWith(
        readAll((await svc.read(digest, { offset: off - 10 + victim.size }))!),
        Code.DataLoss,
        /is missing/,
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
}

Deno.test("LocalBlobService: corrupt small blob, damaged chunk list, missing chunk", async () => {
  const dir = await tempDir();
  try {
    const svc = await LocalBlobService.open(dir);
    const small = pseudoRandom(1000, 8);
    const ds = await putBlob(svc, small);
    assert.deepEqual(await svc.chunks(ds), []);
    // replace the chunk file with a valid zstd frame of other bytes
    const other = pseudoRandom(1000, 9);
    const dOther = await putBlob(svc, other);
    await fs.copyFile(svc.chunkPath(dOther), svc.chunkPath(ds));
    await rejectsWith(
      readAll((await svc.read(ds))!),
      Code.DataLoss,
      new RegExp(
        `blob ${digestToString(ds).replace(/[+/=]/g, "\\$&")} is corrupt`,
      ),
    );
    // garbage instead of zstd
    await fs.writeFile(svc.chunkPath(ds), "garbage");
    await rejectsWith(
      readAll((await svc.read(ds))!),
      Code.DataLoss,
      /cannot decompress/,
    );

    const big = pseudoRandom(1 << 20, 10);
    const db = await putBlob(svc, big);
    await flipByte(svc.blobListPath(db), () => 30);
    await rejectsWith(
      svc.chunks(db),
      Code.DataLoss,
      /chunk list of blob .* is damaged/,
    );
    await rejectsWith(svc.read(db), Code.DataLoss, /damaged/);

    const big2 = pseudoRandom(1 << 20, 12);
    const db2 = await putBlob(svc, big2);
    const c = (await svc.chunks(db2))!;
    await fs.rm(svc.chunkPath(c[c.length - 1].digest));
    await rejectsWith(
      readAll((await svc.read(db2))!),
      Code.DataLoss,
      /is missing/,
    );
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("LocalBlobService: layout on disk and the empty blob", async () => {
  const dir = await tempDir();
  try {
    const svc = await LocalBlobService.open(dir);
    const empty = await putBlob(svc, new Uint8Array());
    assert.deepEqual(empty, blake3Sync(new Uint8Array()));
    assert.equal(await svc.has(empty), true);
    const hex = Buffer.from(empty).toString("hex");
    await fs.stat(join(dir, "castore", "chunks", hex.slice(0, 2), hex));
    const big = pseudoRandom(1 << 20, 1);
    const d = await putBlob(svc, big);
    const bh = Buffer.from(d).toString("hex");
    await fs.stat(join(dir, "castore", "blobs", bh.slice(0, 2), bh));
    // chunk files are zstd frames that the zstd tool can read
    const c0 = (await svc.chunks(d))![0];
    const out = { stdout: runTool("zstd", ["-dc", svc.chunkPath(c0.digest)]) };
    assert.ok(
      Buffer.from(out.stdout).equals(Buffer.from(big.subarray(0, c0.size))),
    );
    assert.deepEqual(await fs.readdir(join(dir, "tmp")), []);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("LocalBlobService: open errors are one clear line", async () => {
  await assert.rejects(
    LocalBlobService.open("/dev/null/snix"),
    (e: Error) => {
      assert.equal(
        e.message,
        "cannot write to /dev/null/snix: not a directory (use --data-dir DIR or run as root)",
      );
      return true;
    },
  );
  const d = await makeTemp("castore-f-");
  const f = join(d, "file");
  await fs.writeFile(f, "");
  await assert.rejects(LocalBlobService.open(f), /is not a directory/);
  await fs.rm(d, { recursive: true });
});

Deno.test("LocalBlobService: stale temp files are removed on open, fresh ones kept", async () => {
  const dir = await tempDir();
  try {
    await LocalBlobService.open(dir);
    const stale = join(dir, "tmp", "1-dead.tmp");
    const fresh = join(dir, "tmp", "2-live.tmp");
    await fs.writeFile(stale, "x");
    await fs.writeFile(fresh, "y");
    const old = new Date(Date.now() - 3600_000);
    await fs.utimes(stale, old, old);
    await LocalBlobService.open(dir);
    assert.deepEqual(await fs.readdir(join(dir, "tmp")), ["2-live.tmp"]);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("LocalBlobService: a chunk list verifies only under its own blob digest; version 1 lists still read", async () => {
  const dir = await tempDir();
  try {
    const svc = await LocalBlobService.open(dir);
    const a = pseudoRandom(1 << 20, 21);
    const b = pseudoRandom(1 << 20, 22);
    const da = await putBlob(svc, a);
    const db = await putBlob(svc, b);
    // b's (intact) list under a's name: every chunk would verify, but the
    // list is not a's, so nothing of b may be delivered as a
    await fs.copyFile(svc.blobListPath(db), svc.blobListPath(da));
    await rejectsWith(svc.read(da), Code.DataLoss, /not this blob's list/);
    // a version 1 list (body checksum only) under a's name: read, and the
    // whole-blob hash catches that the chunks are b's
    const chunksB = (await svc.chunks(db))!;
    const v1 = encodeChunkList(chunksB, db);
    v1.set(new TextEncoder().encode("SNIXBL1\n"), 0);
    v1.set(
      blake3Sync(v1.subarray(0, v1.length - 32)),
      v1.length - 32,
    );
    await fs.writeFile(svc.blobListPath(da), v1);
    await rejectsWith(
      readAll((await svc.read(da))!),
      Code.DataLoss,
      /is corrupt: its chunks hash to/,
    );
    // and a correct version 1 list reads back
    const chunksA = chunkAll(a).map((c) => ({
      digest: blake3Sync(c),
      size: c.length,
    }));
    const v1a = encodeChunkList(chunksA, da);
    v1a.set(new TextEncoder().encode("SNIXBL1\n"), 0);
    v1a.set(blake3Sync(v1a.subarray(0, v1a.length - 32)), v1a.length - 32);
    await fs.writeFile(svc.blobListPath(da), v1a);
    assert.ok(
      Buffer.from(await readAll((await svc.read(da))!)).equals(Buffer.from(a)),
    );
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
