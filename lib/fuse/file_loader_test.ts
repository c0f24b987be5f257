import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { FileLoader } from "./file_loader.ts";

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
      files.map((f) => loader.readZstd(f.path, f.data.length)),
    );
    got.forEach((g, i) => assert.deepEqual(g, files[i].data));
    // A size that does not match, a missing file, a file that is not zstd.
    assert.equal(await loader.readZstd(files[3].path, 5), undefined);
    assert.equal(await loader.readZstd(join(dir, "missing"), 5), undefined);
    writeFileSync(join(dir, "plain"), "not zstd");
    assert.equal(await loader.readZstd(join(dir, "plain"), 8), undefined);
    // Warming resolves for present and missing files alike, once per path.
    const before = loader.reads;
    await Promise.all([
      loader.warm(files[0].path),
      loader.warm(files[0].path),
      loader.warm(join(dir, "missing")),
    ]);
    assert.equal(loader.reads - before, 2);
    await loader.warm(files[0].path); // remembered: no read
    assert.equal(loader.reads - before, 2);
    // Hurrying a queued job keeps its result.
    const late = files.map((f) => loader.readZstd(f.path, f.data.length, 2));
    loader.hurry(files[39].path);
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
  const p = loader.readZstd("/nonexistent/file", 10);
  const w = loader.warm("/nonexistent/other");
  loader.close();
  assert.equal(await p, undefined);
  await w;
  assert.equal(await loader.readZstd("/x", 1), undefined);
});
