/**
 * Commit-based durability of the local castore (./data_dir_sync.ts): the
 * marker's life cycle, and recovery from what a power loss leaves behind
 * (a marker of a dead process plus objects cut under their final names).
 * Node APIs only, so the file also runs under Bun (scripts/bun_runner.ts).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { LocalBlobService } from "./local_blob_service.ts";
import { LocalDirectoryService } from "./local_directory_service.ts";
import { bootId, DataDirSync, setSyncfsForTests } from "./data_dir_sync.ts";
import { ingestTree } from "./ingest_tree.ts";
import { ingestNar } from "./ingest_nar.ts";
import { renderNar } from "./render_nar.ts";
import { LocalPathInfoService } from "../store/local_path_info_service.ts";
import { importPath } from "../store/import_path.ts";
import { verifyStore } from "../store/verify.ts";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";

const OTHER_BOOT = "0".repeat(32);

/** Deterministic pseudo-random bytes (xorshift), so chunks differ. */
function noise(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = (seed * 2 + 1) | 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function makeTree(root: string): Promise<void> {
  await fsp.mkdir(join(root, "sub/deeper"), { recursive: true });
  await fsp.writeFile(join(root, "a.txt"), "hello\n");
  await fsp.writeFile(join(root, "sub/big"), noise(300_000, 7));
  await fsp.writeFile(join(root, "sub/deeper/small"), noise(5000, 8));
  await fsp.writeFile(join(root, "sub/deeper/other"), "other\n");
  await fsp.symlink("../a.txt", join(root, "sub/link"));
}

async function open(data: string) {
  return {
    // Loose objects: packs (./pack.ts) are fsynced before they appear, the
    // unsynced-object recovery tested here is for loose files.
    blobs: await LocalBlobService.open(data, {
      avgChunkSize: 16 << 10,
      packs: false,
    }),
    directories: await LocalDirectoryService.open(data, { packs: false }),
    pathInfos: await LocalPathInfoService.open(data),
  };
}

type Services = Awaited<ReturnType<typeof open>>;

function markers(data: string): string[] {
  try {
    return fs.readdirSync(join(data, "castore", "unsynced"));
  } catch {
    return [];
  }
}

/** A marker file with an mtime `ageMs` in the past. */
function writeMarker(data: string, name: string, ageMs = 5000): string {
  const p = join(data, "castore", "unsynced", name);
  fs.writeFileSync(p, "");
  const t = (Date.now() - ageMs) / 1000;
  fs.utimesSync(p, t, t);
  return p;
}

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

/** Digests of the tree made by makeTree, as ingested. */
async function layout(s: Services, root: Entry) {
  assert.equal(root.entry.case, "directory");
  const rootDir = (await s.directories.get(root.entry.value.digest))!;
  const sub = rootDir.directories.find((d) =>
    new TextDecoder().decode(d.name) === "sub"
  )!;
  const subDir = (await s.directories.get(sub.digest))!;
  const deeper = subDir.directories[0];
  const deeperDir = (await s.directories.get(deeper.digest))!;
  const big = subDir.files.find((f) =>
    new TextDecoder().decode(f.name) === "big"
  )!;
  const bigChunks = (await s.blobs.chunks(big.digest))!;
  assert.ok(bigChunks.length >= 3, "the big file has several chunks");
  const small = deeperDir.files.find((f) =>
    new TextDecoder().decode(f.name) === "small"
  )!;
  return {
    root: root.entry.value.digest,
    sub: sub.digest,
    deeper: deeper.digest,
    big: big.digest,
    bigChunk: bigChunks[1].digest,
    small: small.digest,
  };
}

/**
 * Ingests the tree (no PathInfo: the process "died" before its commit),
 * then cuts objects as a power loss could: a chunk of the big blob
 * truncated, the small blob's only chunk emptied, the `deeper` directory
 * truncated. Returns the paths and digests involved.
 */
async function ingestAndCut(data: string, src: string) {
  const s = await open(data);
  const entry = await ingestTree(src, s.blobs, s.directories);
  const l = await layout(s, entry);
  fs.truncateSync(s.blobs.chunkPath(l.bigChunk), 10);
  fs.truncateSync(s.blobs.chunkPath(l.small), 0);
  fs.truncateSync(s.directories.directoryPath(l.deeper), 3);
  return { s, l };
}

async function withDirs(
  fn: (data: string, src: string) => Promise<void>,
): Promise<void> {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-dds-"));
  try {
    const src = join(dir, "src");
    await fsp.mkdir(src);
    await makeTree(src);
    await fn(join(dir, "data"), src);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

async function sha256Hex(s: ReadableStream<Uint8Array>): Promise<string> {
  const { createHash } = await import("node:crypto");
  const h = createHash("sha256");
  for await (const c of s) h.update(c);
  return h.digest("hex");
}

Deno.test("data dir sync: ingestion leaves no marker; a deferred writer keeps one until the commit", async () => {
  await withDirs(async (data, src) => {
    const s = await open(data);
    assert.ok(s.blobs.syncPoint.deferred, "syncfs is available here");
    const entry = await ingestTree(src, s.blobs, s.directories);
    assert.deepEqual(markers(data), [], "ingestTree committed");

    const w = s.blobs.putDeferred();
    await w.write(noise(1000, 99));
    const digest = await w.close();
    assert.equal(markers(data).length, 1, "an unsynced write has a marker");
    const m = join(data, "castore", "unsynced", markers(data)[0]);
    assert.match(markers(data)[0], new RegExp(`^m-${process.pid}-`));
    assert.ok(fs.statSync(m).mtimeMs <= Date.now());
    assert.ok(await s.blobs.has(digest));
    await s.blobs.syncPoint.commit();
    assert.deepEqual(markers(data), [], "the commit removed it");

    // A plain put() is durable when close() resolves: no marker left.
    const w2 = s.blobs.put();
    await w2.write(noise(70_000, 5));
    await w2.close();
    assert.deepEqual(markers(data), []);

    // ingestNar commits too.
    const nar = renderNar(entry, s.blobs, s.directories);
    const r = await ingestNar(nar, s.blobs, s.directories);
    assert.deepEqual(markers(data), []);
    assert.equal(
      await sha256Hex(renderNar(r.entry, s.blobs, s.directories)),
      Buffer.from(r.narSha256).toString("hex"),
    );
  });
});

Deno.test("data dir sync: concurrent commits share syncs and the last one removes the marker", async () => {
  await withDirs(async (data) => {
    const s = await open(data);
    const writers = Array.from({ length: 8 }, (_, i) => {
      const w = s.blobs.put();
      return (async () => {
        await w.write(noise(40_000, 100 + i));
        return await w.close();
      })();
    });
    const digests = await Promise.all(writers);
    assert.equal(new Set(digests.map(String)).size, 8);
    assert.deepEqual(markers(data), []);
  });
});

Deno.test("data dir sync: after a power loss (dead marker of an earlier boot, cut objects), opening repairs; verify is clean and re-import works", async () => {
  await withDirs(async (data, src) => {
    const { s, l } = await ingestAndCut(data, src);
    const marker = writeMarker(data, `m-${deadPid()}-${OTHER_BOOT}-t-0`);
    const cut = [
      s.blobs.chunkPath(l.bigChunk),
      s.blobs.chunkPath(l.small),
      s.directories.directoryPath(l.deeper),
    ];
    for (const p of cut) assert.ok(fs.existsSync(p));

    const s2 = await open(data); // recovers
    assert.ok(!fs.existsSync(marker), "marker recovered and removed");
    assert.deepEqual(markers(data), []);
    for (const p of cut) assert.ok(!fs.existsSync(p), `${p} deleted`);
    // Objects naming deleted ones go too: the big blob's list, `sub`
    // (names `deeper`) and the root (names `sub`).
    assert.ok(!fs.existsSync(s2.blobs.blobListPath(l.big)));
    assert.equal(await s2.directories.get(l.sub), undefined);
    assert.equal(await s2.directories.get(l.root), undefined);
    assert.equal(await s2.blobs.has(l.big), false);

    const clean = await verifyStore(s2);
    assert.deepEqual(clean.problems, []);
    assert.ok(clean.blobs > 0 && clean.listed);

    const info = await importPath(src, "src", s2);
    const after = await verifyStore(s2);
    assert.deepEqual(after.problems, []);
    assert.equal(after.paths, 1);
    assert.ok(await s2.blobs.has(l.big));
    assert.ok(fs.statSync(s2.blobs.chunkPath(l.bigChunk)).size > 10);
    assert.equal(
      await sha256Hex(renderNar(info.entry!, s2.blobs, s2.directories)),
      Buffer.from(info.narinfo!.narSha256).toString("hex"),
    );
  });
});

Deno.test("data dir sync: without recovery (the marker's owner is alive) the cut objects stay and poison a re-import", async () => {
  // The control for the test above: the same damage under a live marker
  // is left alone, so dedup keeps the broken objects.
  await withDirs(async (data, src) => {
    await ingestAndCut(data, src);
    const marker = writeMarker(
      data,
      `m-${process.pid}-${bootId()}-control-0`,
    );
    const s2 = await open(data);
    assert.ok(fs.existsSync(marker));
    await importPath(src, "src", s2);
    const report = await verifyStore(s2);
    assert.ok(report.problems.length > 0, "verify finds the cut objects");
    fs.rmSync(marker);
  });
});

Deno.test("data dir sync: a dead process's marker from this boot is left by opening and recovered by the next commit: synced and removed, its temporary files deleted, objects not read", async () => {
  await withDirs(async (data, src) => {
    const { s, l } = await ingestAndCut(data, src);
    const dead = deadPid();
    writeMarker(data, `m-${dead}-${bootId()}-abcd1234-0`);
    // What kill -9 in the middle of a write leaves: a temporary file beside
    // the objects (named after the marker's pid and tag), and one of a live
    // process that must stay.
    const shard = join(s.blobs.chunkPath(l.big), "..");
    const leftover = join(shard, `.tmp-${dead}-abcd1234-7`);
    const live = join(shard, `.tmp-${process.pid}-ffff0000-3`);
    fs.writeFileSync(leftover, "half");
    fs.writeFileSync(live, "busy");
    const s2 = await open(data);
    // Opening does not wait for a syncfs on another process's behalf.
    assert.deepEqual(markers(data), [`m-${dead}-${bootId()}-abcd1234-0`]);
    assert.ok(fs.existsSync(leftover));
    await s2.blobs.syncPoint.commit();
    assert.deepEqual(markers(data), []);
    assert.ok(!fs.existsSync(leftover), "dead writer's temporary file deleted");
    assert.ok(fs.existsSync(live), "another writer's temporary file kept");
    fs.rmSync(live);
    // The kernel kept whole objects in this case, so none is read: the
    // (artificially) cut chunk is still there.
    assert.ok(fs.existsSync(s.blobs.chunkPath(l.bigChunk)));
  });
});

Deno.test("data dir sync: unsynced objects are written through temporary files beside them; none is left after an import", async () => {
  await withDirs(async (data, src) => {
    const s = await open(data);
    await importPath(src, "src", s);
    const castore = join(data, "castore");
    const stray: string[] = [];
    for (const kind of ["chunks", "blobs", "directories"]) {
      for (const shard of fs.readdirSync(join(castore, kind))) {
        for (const n of fs.readdirSync(join(castore, kind, shard))) {
          if (!/^[0-9a-f]{64}$/.test(n)) stray.push(n);
        }
      }
    }
    assert.deepEqual(stray, []);
    assert.deepEqual(fs.readdirSync(join(data, "tmp")), []);
  });
});

Deno.test("data dir sync: a claim of a recoverer that died is taken over", async () => {
  await withDirs(async (data, src) => {
    const { s, l } = await ingestAndCut(data, src);
    const claim = writeMarker(
      data,
      `r-${deadPid()}-${bootId()}--m-${deadPid()}-${OTHER_BOOT}-t-0`,
    );
    await open(data);
    assert.ok(!fs.existsSync(claim));
    assert.deepEqual(markers(data), []);
    assert.ok(!fs.existsSync(s.blobs.chunkPath(l.bigChunk)));
  });
});

Deno.test("data dir sync: concurrent opens in one process recover once", async () => {
  await withDirs(async (data, src) => {
    const { s, l } = await ingestAndCut(data, src);
    writeMarker(data, `m-${deadPid()}-${OTHER_BOOT}-t-0`);
    const sync = await Promise.all([
      DataDirSync.open(data),
      DataDirSync.open(data),
      LocalDirectoryService.open(data, { packs: false }),
    ]);
    assert.equal(sync[0], sync[1]);
    assert.deepEqual(markers(data), []);
    assert.ok(!fs.existsSync(s.directories.directoryPath(l.deeper)));
  });
});

Deno.test("data dir sync: without syncfs every object is fsynced, no marker, and recovery still repairs", async () => {
  setSyncfsForTests(false);
  try {
    await withDirs(async (data, src) => {
      const { s, l } = await ingestAndCut(data, src);
      assert.equal(s.blobs.syncPoint.deferred, false);
      assert.deepEqual(markers(data), []);
      writeMarker(data, `m-${deadPid()}-${OTHER_BOOT}-t-0`);
      const s2 = await open(data);
      assert.deepEqual(markers(data), []);
      assert.ok(!fs.existsSync(s2.blobs.chunkPath(l.bigChunk)));
      await importPath(src, "src", s2);
      assert.deepEqual((await verifyStore(s2)).problems, []);
    });
  } finally {
    setSyncfsForTests(true);
  }
});
