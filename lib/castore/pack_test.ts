import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DigestSet, ENTRY_SIZE, PackFile, PackKind, PackSet } from "./pack.ts";
import { CATALOG_FILE } from "./pack_catalog.ts";
import { blake3Sync } from "./digest.ts";
import { LocalBlobService } from "./local_blob_service.ts";
import { LocalDirectoryService } from "./local_directory_service.ts";
import { ingestTree } from "./ingest_tree.ts";
import { renderNar } from "./render_nar.ts";
import { execFileSync } from "node:child_process";
import process from "node:process";
import { removeStaleTemps } from "./atomic_file.ts";

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-pack-"));
  try {
    await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function setIn(dir: string): PackSet {
  fs.mkdirSync(join(dir, "tmp"), { recursive: true });
  return new PackSet(join(dir, "packs"), join(dir, "tmp"));
}

const rec = (n: number) => {
  const bytes = new TextEncoder().encode(`record ${n} `.repeat(n + 1));
  return { bytes, digest: blake3Sync(bytes) };
};

async function bytesOf(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

Deno.test("pack: records are invisible until finish, then found by this and other readers", async () => {
  await withTmp(async (dir) => {
    const a = setIn(dir);
    const b = setIn(dir); // another process's view
    const w = a.writer();
    const recs = Array.from({ length: 50 }, (_, i) => rec(i));
    for (const r of recs) w.add(PackKind.directory, r.digest, r.bytes);
    w.add(PackKind.directory, recs[0].digest, recs[0].bytes); // once only
    assert.equal(w.count, 50);
    assert.equal(a.lookup(recs[3].digest), undefined);
    assert.equal(b.lookup(recs[3].digest), undefined);
    assert.ok(!fs.existsSync(join(dir, "packs")));
    await w.finish();
    for (const set of [a, b]) {
      for (const r of recs) {
        const loc = set.lookup(r.digest)!;
        assert.ok(loc, "found after publication");
        assert.equal(loc.kind, PackKind.directory);
        assert.deepEqual(loc.pack.readSync(loc), r.bytes);
        assert.deepEqual(await loc.pack.read(loc), r.bytes);
      }
    }
    assert.equal(fs.readdirSync(join(dir, "tmp")).length, 0);
  });
});

Deno.test("pack: abort leaves nothing; an empty writer publishes nothing", async () => {
  await withTmp(async (dir) => {
    const s = setIn(dir);
    const w = s.writer();
    w.add(PackKind.chunk, rec(1).digest, rec(1).bytes, 5);
    assert.equal(fs.readdirSync(join(dir, "tmp")).length, 1);
    await w.abort();
    assert.equal(fs.readdirSync(join(dir, "tmp")).length, 0);
    await s.writer().finish();
    assert.ok(!fs.existsSync(join(dir, "packs")));
    assert.equal(s.lookup(rec(1).digest), undefined);
  });
});

Deno.test("pack: a damaged index or trailer is refused with a clear error and reported", async () => {
  await withTmp(async (dir) => {
    const s = setIn(dir);
    const w = s.writer();
    for (let i = 0; i < 5; i++) {
      w.add(PackKind.directory, rec(i).digest, rec(i).bytes);
    }
    await w.finish();
    const [name] = fs.readdirSync(join(dir, "packs"));
    const path = join(dir, "packs", name);
    const good = fs.readFileSync(path);
    const indexAt = good.length - 56 - 5 * ENTRY_SIZE;
    const cases: [string, (b: Uint8Array) => Uint8Array, RegExp][] = [
      ["flipped index byte", (b) => {
        b[indexAt + 40] ^= 1;
        return b;
      }, /index checksum mismatch/],
      ["truncated", (b) => b.subarray(0, b.length - 10), /no trailer/],
      ["too short", (b) => b.subarray(0, 20), /too short/],
    ];
    for (const [what, cut, re] of cases) {
      fs.writeFileSync(path, cut(new Uint8Array(good)));
      assert.throws(
        () => PackFile.load(path),
        (e: Error) => re.test(e.message) && e.message.includes(path),
        what,
      );
      const fresh = setIn(dir);
      assert.equal(fresh.lookup(rec(1).digest), undefined, what);
      assert.equal(fresh.problems.length, 1, what);
      assert.match(fresh.problems[0], re);
    }
  });
});

Deno.test("pack: an imported tree lands in two packs, renders byte-identical to the original NAR, and a flipped record byte is DataLoss naming the digest", async () => {
  await withTmp(async (dir) => {
    const src = join(dir, "src");
    fs.mkdirSync(join(src, "a/b"), { recursive: true });
    const big = new Uint8Array(300_000).map((_, i) => (i * 7 + (i >> 9)) & 255);
    fs.writeFileSync(join(src, "a/big"), big);
    fs.writeFileSync(join(src, "a/b/small"), "small file\n");
    fs.symlinkSync("../big", join(src, "a/b/link"));
    const data = join(dir, "data");
    const blobs = await LocalBlobService.open(data, { avgChunkSize: 16 << 10 });
    const dirs = await LocalDirectoryService.open(data);
    const entry = await ingestTree(src, blobs, dirs);
    const packDir = join(data, "castore", "packs");
    assert.equal(fs.readdirSync(join(packDir, "blobs")).length, 1);
    assert.equal(fs.readdirSync(join(packDir, "directories")).length, 1);
    // no loose objects were written
    for (const sub of ["chunks", "blobs", "directories"]) {
      for (const shard of fs.readdirSync(join(data, "castore", sub))) {
        assert.deepEqual(
          fs.readdirSync(join(data, "castore", sub, shard)),
          [],
        );
      }
    }
    const want = new Uint8Array(
      execFileSync("nix-store", ["--dump", src], { maxBuffer: 1 << 24 }),
    );
    assert.deepEqual(await bytesOf(renderNar(entry, blobs, dirs)), want);
    // a fresh process sees the same
    const blobs2 = await LocalBlobService.open(data);
    const dirs2 = await LocalDirectoryService.open(data);
    assert.deepEqual(await bytesOf(renderNar(entry, blobs2, dirs2)), want);
    // flip a byte in the middle of a chunk record
    const [packName] = fs.readdirSync(join(packDir, "blobs"));
    const path = join(packDir, "blobs", packName);
    const pack = PackFile.load(path);
    let victim = -1;
    for (let i = 0; i < pack.count; i++) {
      if (
        pack.record(i).kind === PackKind.chunk && pack.record(i).length > 100
      ) {
        victim = i;
      }
    }
    const r = pack.record(victim);
    const b = fs.readFileSync(path);
    b[r.offset + (r.length >> 1)] ^= 0x10;
    fs.writeFileSync(path, b);
    const blobs3 = await LocalBlobService.open(data);
    await assert.rejects(
      bytesOf(renderNar(entry, blobs3, dirs2)),
      (e: Error) => /corrupt/.test(e.message) && /b3:|blake3-/.test(e.message),
    );
  });
});

Deno.test("pack: more packs than open descriptors, read at once asynchronously and synchronously, give the right bytes", async () => {
  await withTmp(async (dir) => {
    const s = setIn(dir);
    const recs = Array.from({ length: 150 }, (_, i) => rec(i));
    for (const r of recs) {
      const w = s.writer();
      w.add(PackKind.directory, r.digest, r.bytes);
      await w.finish();
    }
    const fresh = setIn(dir);
    for (let round = 0; round < 2; round++) {
      const order = recs.map((_, i) => (i * 37 + round * 11) % recs.length);
      const got = await Promise.all(order.map((i) => {
        const loc = fresh.lookup(recs[i].digest)!;
        // every third read synchronous, in between the asynchronous ones
        return i % 3 === 0
          ? Promise.resolve(loc.pack.readSync(loc))
          : loc.pack.read(loc);
      }));
      got.forEach((b, j) => assert.deepEqual(b, recs[order[j]].bytes));
    }
  });
});

Deno.test("pack: a pack published right after a listing, under the same directory mtime, is still found later", async () => {
  await withTmp(async (dir) => {
    const packs = join(dir, "packs");
    const writer = setIn(dir);
    const reader = setIn(dir);
    const a = rec(1), b = rec(2);
    const w1 = writer.writer();
    w1.add(PackKind.directory, a.digest, a.bytes);
    await w1.finish();
    // A coarse file-system clock: both renames carry the same mtime.
    const stamp = new Date(Math.floor(Date.now()));
    fs.utimesSync(packs, stamp, stamp);
    assert.ok(reader.lookup(a.digest)); // listed now, just after `stamp`
    const w2 = writer.writer();
    w2.add(PackKind.directory, b.digest, b.bytes);
    await w2.finish();
    fs.utimesSync(packs, stamp, stamp);
    await new Promise((r) => setTimeout(r, 2100)); // past the trust window
    assert.ok(reader.lookup(b.digest), "the second pack is found");
  });
});

Deno.test("pack: stale temporary files are removed, but not a pack a live process is writing", async () => {
  await withTmp(async (dir) => {
    const tmp = join(dir, "tmp");
    fs.mkdirSync(tmp);
    const old = new Date(Date.now() - 3600_000);
    const live = join(tmp, `pack-${process.pid}-0123456789abcdef.tmp`);
    const dead = join(tmp, `pack-999999999-0123456789abcdef.tmp`);
    const other = join(tmp, "x-0123.tmp");
    for (const p of [live, dead, other]) {
      fs.writeFileSync(p, "x");
      fs.utimesSync(p, old, old);
    }
    assert.equal(await removeStaleTemps(tmp), 2);
    assert.deepEqual(fs.readdirSync(tmp), [live.slice(tmp.length + 1)]);
  });
});

/** A set whose records are checked as directory-kind test records. */
function checkedSetIn(dir: string, minPacks = 4): PackSet {
  fs.mkdirSync(join(dir, "tmp"), { recursive: true });
  return new PackSet(join(dir, "packs"), join(dir, "tmp"), {
    check: (_kind, digest, bytes) =>
      blake3Sync(bytes).every((x, i) => x === digest[i])
        ? undefined
        : "digest mismatch",
    compaction: { minPacks },
  });
}

/** Publishes one pack per group of records. */
async function publishGroups(set: PackSet, groups: number[][]): Promise<void> {
  for (const g of groups) {
    const w = set.writer();
    for (const n of g) w.add(PackKind.directory, rec(n).digest, rec(n).bytes);
    await w.finish();
  }
}

const packFiles = (dir: string) =>
  fs.readdirSync(join(dir, "packs")).filter((n) => n.endsWith(".pack"));

Deno.test("pack compaction: small packs are merged once enough exist; every record stays readable, here and in another reader", async () => {
  await withTmp(async (dir) => {
    const a = checkedSetIn(dir, 4);
    const b = checkedSetIn(dir, 4); // another process, loaded before the merge
    await publishGroups(a, [[0, 1], [2, 3], [4, 1]]);
    assert.equal(packFiles(dir).length, 3, "not due yet");
    const before = b.lookup(rec(2).digest)!;
    assert.ok(before);
    await publishGroups(a, [[5, 6]]); // the fourth small pack: merged
    assert.equal(packFiles(dir).length, 1);
    for (const set of [a, b]) {
      for (const n of [0, 1, 2, 3, 4, 5, 6]) {
        const r = set.lookup(rec(n).digest)!;
        assert.ok(r, `record ${n} found`);
        assert.deepEqual(r.pack.readSync(r), rec(n).bytes);
        assert.deepEqual(await r.pack.read(r), rec(n).bytes);
      }
    }
    // A location looked up before the merge still reads (found again).
    assert.deepEqual(before.pack.readSync(before), rec(2).bytes);
    assert.equal(a.packs.length, 1);
    assert.equal(a.packs[0].count, 7, "duplicates merged away");
    assert.ok(!fs.existsSync(join(dir, "packs", "compact.lock")));
    assert.equal(fs.readdirSync(join(dir, "tmp")).length, 0);
  });
});

Deno.test("pack compaction: a pack with a damaged record is kept as it is; a live lock holder blocks, a dead one does not", async () => {
  await withTmp(async (dir) => {
    const s = checkedSetIn(dir, 100);
    await publishGroups(s, [[0], [1], [2], [3]]);
    // Damage record 2's bytes in place (the index stays valid).
    const r2 = s.lookup(rec(2).digest)!;
    const fd = fs.openSync(r2.pack.path, "r+");
    fs.writeSync(fd, new Uint8Array([0x58]), 0, 1, r2.offset);
    fs.closeSync(fd);
    const damaged = r2.pack.path;
    // Another live process (our parent) holds the lock: no merge.
    const lock = join(dir, "packs", "compact.lock");
    fs.writeFileSync(lock, `${process.ppid}\n`);
    assert.equal(s.compact(true), undefined);
    assert.equal(packFiles(dir).length, 4);
    // A dead holder's lock is taken over.
    const dead = execFileSync("sh", ["-c", "sh -c 'echo $$' "]).toString();
    fs.writeFileSync(lock, dead);
    const r = s.compactAll();
    assert.equal(r.merged, 3);
    assert.equal(r.kept.length, 1);
    assert.match(r.kept[0], /digest mismatch/);
    assert.ok(r.kept[0].startsWith(damaged));
    assert.deepEqual(
      packFiles(dir).sort(),
      [
        damaged.slice(damaged.lastIndexOf("/") + 1),
        packFiles(dir).find((n) => !damaged.endsWith(n))!,
      ].sort(),
    );
    for (const n of [0, 1, 3]) {
      const r = s.lookup(rec(n).digest)!;
      assert.deepEqual(r.pack.readSync(r), rec(n).bytes);
    }
    assert.ok(!fs.existsSync(lock));
  });
});

Deno.test("pack compaction: a merge cut short before the old packs are deleted leaves duplicates that the next merge removes", async () => {
  await withTmp(async (dir) => {
    const s = checkedSetIn(dir, 100);
    await publishGroups(s, [[0, 1], [2]]);
    // What a crash right after publishing the merged pack leaves behind:
    // the merged pack and the old ones.
    await publishGroups(s, [[0, 1, 2]]);
    const fresh = checkedSetIn(dir, 100);
    for (const n of [0, 1, 2]) assert.ok(fresh.lookup(rec(n).digest));
    const r = fresh.compactAll();
    assert.equal(r.merged, 3);
    assert.equal(packFiles(dir).length, 1);
    assert.equal(fresh.packs[0].count, 3);
  });
});

Deno.test("pack: transient reads through read windows give the right bytes in order, interleaved over many packs, and for big records", async () => {
  await withTmp(async (dir) => {
    const s = setIn(dir);
    const sizes = [10, 5000, 700_000, 3, 90_000, 1];
    const packs: { digest: Uint8Array; bytes: Uint8Array }[][] = [];
    for (let p = 0; p < 7; p++) {
      const w = s.writer();
      const recs = Array.from({ length: 300 }, (_, i) => {
        const bytes = new Uint8Array(sizes[i % sizes.length]);
        for (let j = 0; j < bytes.length; j += 997) {
          bytes[j] = (p * 31 + i) & 255;
        }
        bytes[0] = p;
        bytes[bytes.length - 1] = i & 255;
        return { bytes, digest: blake3Sync(bytes) };
      });
      for (const r of recs) w.add(PackKind.chunk, r.digest, r.bytes);
      await w.finish();
      packs.push(recs);
    }
    const check = (p: number, i: number) => {
      const want = packs[p][i];
      const r = s.lookup(want.digest)!;
      const got = r.pack.readTransient(r);
      assert.equal(got.length, want.bytes.length);
      assert.deepEqual(blake3Sync(got), want.digest, `pack ${p} record ${i}`);
    };
    // In file order, one pack after the other.
    for (let p = 0; p < 7; p++) for (let i = 0; i < 300; i++) check(p, i);
    // Interleaved over more packs than there are windows, in order within each.
    for (let i = 0; i < 300; i++) for (let p = 0; p < 7; p++) check(p, i);
    // Backwards (no window helps) and random.
    for (let i = 299; i >= 0; i -= 7) check(i % 7, i);
    for (let k = 0; k < 500; k++) {
      check(Math.floor(Math.random() * 7), Math.floor(Math.random() * 300));
    }
  });
});

Deno.test("pack: DigestSet keeps digests that share their first 48 bits apart", () => {
  const d = (last: number, lead = 7) => {
    const b = new Uint8Array(32).fill(lead);
    b[31] = last;
    return b;
  };
  const s = new DigestSet();
  assert.ok(s.add(d(1)));
  assert.ok(s.add(d(2)), "same prefix, other digest");
  assert.ok(s.add(d(3)));
  assert.ok(!s.add(d(2)), "already there");
  assert.ok(s.has(d(1)) && s.has(d(2)) && s.has(d(3)));
  assert.ok(!s.has(d(4)) && !s.has(d(1, 8)));
  s.delete(d(1)); // the first of its prefix: the others stay
  assert.ok(!s.has(d(1)) && s.has(d(2)) && s.has(d(3)));
  assert.ok(s.add(d(1)));
  s.delete(d(3));
  assert.ok(s.has(d(1)) && s.has(d(2)) && !s.has(d(3)));
  s.clear();
  assert.ok(!s.has(d(1)) && !s.has(d(2)));
});

Deno.test("pack compaction: a pack merged away by another process right after it is published still counts as published for its writer", async () => {
  await withTmp(async (dir) => {
    const a = checkedSetIn(dir, 100);
    const b = checkedSetIn(dir, 100); // the other process
    await publishGroups(a, [[0, 1]]);
    const before = new Set(packFiles(dir));
    const w = a.writer();
    for (const n of [2, 3]) {
      w.add(PackKind.directory, rec(n).digest, rec(n).bytes);
    }
    const finishing = w.finish();
    let merged = false;
    // As soon as the new pack is in the directory (its directory fsync may
    // still be under way), the other process merges it away.
    for (let i = 0; i < 1000 && !merged; i++) {
      if (packFiles(dir).some((n) => !before.has(n))) {
        merged = (b.compactAll().merged ?? 0) >= 2;
      } else await new Promise((r) => setTimeout(r, 0));
    }
    assert.ok(merged, "the other process merged the new pack");
    await finishing; // must not fail: the pack was published
    assert.equal(packFiles(dir).length, 1);
    for (const n of [0, 1, 2, 3]) {
      const r = a.lookup(rec(n).digest)!;
      assert.ok(r, `record ${n}`);
      assert.deepEqual(r.pack.readSync(r), rec(n).bytes);
    }
  });
});

Deno.test("pack compaction in the blob service: a pack with a damaged chunk is kept (and named), the sound ones are merged", async () => {
  await withTmp(async (dir) => {
    const data = join(dir, "data");
    const blobs = await LocalBlobService.open(data);
    const dirs = await LocalDirectoryService.open(data);
    for (let i = 0; i < 3; i++) {
      const src = join(dir, `src${i}`);
      fs.mkdirSync(src);
      fs.writeFileSync(join(src, "f"), `tree ${i} `.repeat(1000));
      await ingestTree(src, blobs, dirs);
    }
    const packDir = join(data, "castore", "packs", "blobs");
    const names = fs.readdirSync(packDir).filter((n) => n.endsWith(".pack"));
    assert.equal(names.length, 3);
    const victim = PackFile.load(join(packDir, names[0]));
    const r = victim.record(0);
    assert.equal(r.kind, PackKind.chunk);
    const b = fs.readFileSync(victim.path);
    b[r.offset + (r.length >> 1)] ^= 0x10;
    fs.writeFileSync(victim.path, b);
    const fresh = await LocalBlobService.open(data);
    const result = fresh.packs.compactAll();
    assert.equal(result.merged, 2);
    assert.equal(result.kept.length, 1);
    assert.ok(result.kept[0].startsWith(victim.path), result.kept[0]);
    assert.match(result.kept[0], /corrupt/);
    assert.ok(fs.existsSync(victim.path), "the damaged pack stays");
    assert.equal(fresh.packs.packs.length, 2);
  });
});

Deno.test("pack catalog in a set: records are found through it without reading the packs' indexes, next to packs published after it; other readers switch to it; merging cataloged packs and a damaged catalog lose nothing", async () => {
  await withTmp(async (dir) => {
    const a = checkedSetIn(dir, 100);
    await publishGroups(a, [[0, 1, 2], [3, 4], [5, 6, 7, 8]]);
    const b = checkedSetIn(dir, 100); // another process, loaded before the catalog
    assert.ok(b.lookup(rec(0).digest));
    assert.equal(a.cataloged, 0);
    assert.ok(a.writeCatalog());
    assert.ok(fs.existsSync(join(dir, "packs", CATALOG_FILE)));
    assert.ok(!fs.existsSync(join(dir, "packs", "compact.lock")));
    assert.deepEqual(fs.readdirSync(join(dir, "tmp")), []);
    await publishGroups(a, [[9, 10]]); // after the catalog: in the table
    const fresh = checkedSetIn(dir, 100);
    const all = [...Array(11).keys()];
    const readAll = async (set: PackSet, which: number[]) => {
      for (const n of which) {
        const r = set.lookup(rec(n).digest)!;
        assert.ok(r, `record ${n} found`);
        assert.deepEqual(r.pack.readSync(r), rec(n).bytes);
        assert.deepEqual(await r.pack.read(r), rec(n).bytes);
        // (a record found through the catalog carries its digest: its pack
        // may be gone, merged away, and the index with it)
        const d = r.digest ?? r.pack.digest(r.index);
        assert.equal(d.join(), rec(n).digest.join());
      }
    };
    for (const set of [a, b, fresh]) await readAll(set, all);
    assert.equal(fresh.cataloged, 9, "the first three packs come from it");
    assert.equal(fresh.lookup(rec(99).digest), undefined);
    // b learned the catalog on its next listing.
    assert.equal(b.cataloged, 9);
    // Merging (cataloged small packs among them) keeps every record.
    const merged = fresh.compactAll();
    assert.equal(merged.merged, 4);
    assert.equal(packFiles(dir).length, 1);
    for (const set of [a, b, fresh, checkedSetIn(dir, 100)]) {
      await readAll(set, all);
    }
    assert.deepEqual(
      [...fresh.entries()].map((e) => e.digest.join()).sort(),
      all.map((n) => rec(n).digest.join()).sort(),
    );
    // An entry damaged where no checksum covers it: verify's listing says so.
    assert.ok(fresh.writeCatalog());
    const path = join(dir, "packs", CATALOG_FILE);
    const good = fs.readFileSync(path);
    const entry = good.length - 8 - 64 * 3; // the third entry from the end
    const flipped = new Uint8Array(good);
    flipped[entry + 33] ^= 0x40; // its offset
    fs.writeFileSync(path + ".new", flipped);
    fs.renameSync(path + ".new", path);
    const listing = checkedSetIn(dir, 100);
    assert.equal([...listing.entries()].length, 11);
    assert.match(
      listing.problems.join("\n"),
      /disagrees with the packs in 1 records: run snix store compact/,
    );
    assert.ok(listing.writeCatalog());
    const mended = checkedSetIn(dir, 100);
    assert.equal([...mended.entries()].length, 11);
    assert.deepEqual(mended.problems, []);
    // A damaged catalog is reported and ignored: everything is still found.
    const bytes = fs.readFileSync(path);
    bytes[40] ^= 0xff;
    fs.writeFileSync(path + ".new", bytes);
    fs.renameSync(path + ".new", path);
    const damaged = checkedSetIn(dir, 100);
    await readAll(damaged, all);
    assert.match(damaged.problems.join("\n"), /pack catalog .* is damaged/);
  });
});

Deno.test("pack catalog in a set: written by an ingestion once enough records are outside it, not again for a few more", async () => {
  await withTmp(async (dir) => {
    fs.mkdirSync(join(dir, "tmp"), { recursive: true });
    const set = new PackSet(join(dir, "packs"), join(dir, "tmp"), {
      check: () => undefined,
      compaction: { minPacks: 100, catalogRecords: 6 },
    });
    const catalog = join(dir, "packs", CATALOG_FILE);
    await publishGroups(set, [[0, 1, 2], [3, 4]]);
    assert.ok(!fs.existsSync(catalog), "5 records: not yet");
    await publishGroups(set, [[5, 6]]);
    assert.ok(fs.existsSync(catalog), "7 records: written");
    assert.equal(set.cataloged, 7);
    const ino = fs.statSync(catalog).ino;
    await publishGroups(set, [[7], [8, 9]]);
    assert.equal(fs.statSync(catalog).ino, ino, "3 more: not rewritten");
    const other = new PackSet(join(dir, "packs"), join(dir, "tmp"));
    for (let n = 0; n < 10; n++) {
      const r = other.lookup(rec(n).digest)!;
      assert.deepEqual(r.pack.readSync(r), rec(n).bytes);
    }
    assert.equal(other.cataloged, 7);
  });
});
