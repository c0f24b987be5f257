import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { Buffer } from "node:buffer";
import { FileLoader, PACK_BLOCK, type StoredRange } from "./file_loader.ts";

const whole = (path: string): StoredRange => ({ path, offset: 0, length: -1 });

const enc = new TextEncoder();

Deno.test("FileLoader: decompresses zstd files on its workers, refuses wrong sizes and missing files", async () => {
  const dir = mkdtempSync(join(tmpdir(), "snix-loader-"));
  const loader = new FileLoader(2);
  try {
    const files: { path: string; data: Uint8Array }[] = [];
    for (let i = 0; i < 40; i++) {
      const data = enc.encode(`file ${i} `.repeat(i * 37 + 1));
      const path = join(dir, `f${i}`);
      writeFileSync(path, zlib.zstdCompressSync(data));
      files.push({ path, data });
    }
    assert.ok(loader.canDecompress);
    const got = await Promise.all(
      files.map((f) => loader.readZstd(whole(f.path), f.data.length)),
    );
    got.forEach((g, i) => assert.deepEqual(g, files[i].data));
    // A size that does not match, a missing file, a file that is not zstd.
    assert.equal(await loader.readZstd(whole(files[3].path), 5), undefined);
    assert.equal(
      await loader.readZstd(whole(join(dir, "missing")), 5),
      undefined,
    );
    writeFileSync(join(dir, "plain"), "not zstd");
    assert.equal(
      await loader.readZstd(whole(join(dir, "plain")), 8),
      undefined,
    );
    // Warming resolves for present and missing files alike, once per path.
    const before = loader.reads;
    await Promise.all([
      loader.warm(whole(files[0].path)),
      loader.warm(whole(files[0].path)),
      loader.warm(whole(join(dir, "missing"))),
    ]);
    assert.equal(loader.reads - before, 2);
    await loader.warm(whole(files[0].path)); // remembered: no read
    assert.equal(loader.reads - before, 2);
    // Hurrying a queued job keeps its result.
    const late = files.map((f) =>
      loader.readZstd(whole(f.path), f.data.length, 2)
    );
    loader.hurry(whole(files[39].path));
    assert.deepEqual(await late[39], files[39].data);
    await Promise.all(late);
    assert.equal(loader.pending, 0);
  } finally {
    loader.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("FileLoader: close resolves what waits", async () => {
  const loader = new FileLoader(1);
  const p = loader.readZstd(whole("/nonexistent/file"), 10);
  const w = loader.warm(whole("/nonexistent/other"));
  const b = loader.warm({ path: "/nonexistent/pack", offset: 5, length: 9 });
  loader.close();
  assert.equal(await p, undefined);
  await w;
  await b;
  assert.equal(await loader.readZstd(whole("/x"), 1), undefined);
});

Deno.test("FileLoader: reads ranges of one file (a pack): records decompressed, warming by whole blocks", async () => {
  const dir = mkdtempSync(join(tmpdir(), "snix-loader-"));
  const loader = new FileLoader(2);
  try {
    // Records back to back after a 3-byte header, spanning several blocks.
    const records: { range: StoredRange; data: Uint8Array }[] = [];
    const parts: Uint8Array[] = [enc.encode("hdr")];
    let at = 3;
    const path = join(dir, "x.pack");
    for (let i = 0; i < 60; i++) {
      // Incompressible, so the file spans more than 2 blocks.
      const data = crypto.getRandomValues(new Uint8Array(20000 + i * 700));
      const z = zlib.zstdCompressSync(data);
      records.push({ range: { path, offset: at, length: z.length }, data });
      parts.push(z);
      at += z.length;
    }
    writeFileSync(path, Buffer.concat(parts));
    assert.ok(at > 2 * PACK_BLOCK, `pack of ${at} bytes`);
    const got = await Promise.all(
      records.map((r) => loader.readZstd(r.range, r.data.length)),
    );
    got.forEach((g, i) => assert.deepEqual(g, records[i].data, `record ${i}`));
    // A range cut short, one past the end of the file, a wrong size.
    const r5 = records[5].range;
    assert.equal(
      await loader.readZstd(
        { ...r5, length: r5.length - 100 },
        20000 + 5 * 700,
      ),
      undefined,
    );
    assert.equal(
      await loader.readZstd({ path, offset: at - 10, length: 100 }, 100),
      undefined,
    );
    assert.equal(await loader.readZstd(r5, 7), undefined);
    // Warming: the ranges of one block share one read; a span reads its blocks once.
    const before = loader.reads;
    await Promise.all(records.slice(0, 10).map((r) => loader.warm(r.range)));
    const blocks = Math.floor(
      (records[9].range.offset + records[9].range.length - 1) / PACK_BLOCK,
    ) + 1;
    assert.equal(loader.reads - before, blocks);
    assert.ok(loader.isWarm(records[3].range));
    assert.ok(!loader.isWarm(records[59].range));
    await loader.warmSpan(path, 0, at);
    const all = Math.floor((at - 1) / PACK_BLOCK) + 1;
    assert.equal(loader.reads - before, all);
    assert.ok(loader.isWarm(records[59].range));
    await loader.warmSpan(path, 0, at);
    assert.equal(loader.reads - before, all);
  } finally {
    loader.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
