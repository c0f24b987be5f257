/**
 * READs of big files answered on the reply workers (lib/fuse/direct_reads.ts)
 * through the real kernel (as root), over a local data directory: the bytes
 * equal the source's (whole files, and ranges at odd offsets), several
 * processes read the same and different files at once, and a damaged chunk
 * gives EIO for its file only while another file still reads.
 */
import assert from "node:assert/strict";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import { LocalPathInfoService } from "../lib/store/local_path_info_service.ts";
import { importPath } from "../lib/store/import_path.ts";
import { entryName } from "../lib/store/path_info.ts";
import { sh, shOk, skipFuse, withMount } from "./fuse_helpers.ts";
import { flipStoredByte } from "../lib/castore/_test_blob_service.ts";

const ignore = skipFuse();

async function setup(tmp: string) {
  await shOk(`
    set -e; mkdir -p '${tmp}/src'; cd '${tmp}/src'
    head -c 20000000 /dev/urandom > big1
    head -c 9437291 /dev/urandom > big2
    head -c 7340033 /dev/urandom > big3
  `);
  const s = {
    blobs: await LocalBlobService.open(`${tmp}/data`),
    directories: await LocalDirectoryService.open(`${tmp}/data`),
    pathInfos: await LocalPathInfoService.open(`${tmp}/data`),
  };
  const info = await importPath(`${tmp}/src`, "direct", s);
  const root = await s.directories.get(
    info.entry!.entry.case === "directory"
      ? info.entry!.entry.value.digest
      : new Uint8Array(),
  );
  const digestOf = (n: string) =>
    root!.files.find((f) => new TextDecoder().decode(f.name) === n)!.digest;
  return {
    s,
    name: new TextDecoder().decode(entryName(info.entry!)),
    digestOf,
  };
}

/** A range of `file` read with dd at byte offsets, as its sha256. */
function ddRange(file: string, skip: number, count: number): string {
  return `dd if='${file}' iflag=skip_bytes,count_bytes skip=${skip} count=${count} bs=65536 status=none | sha256sum`;
}

Deno.test({
  name:
    "fuse direct reads: big files read on the reply workers equal the source (whole, odd ranges, several readers at once); a damaged chunk gives EIO for its file only",
  ignore,
}, async () => {
  const tmp = await Deno.makeTempDir({ prefix: "snix-fuse-direct-" });
  try {
    const { s, name, digestOf } = await setup(tmp);
    const src = `${tmp}/src`;
    const want = await shOk(`cd '${src}' && sha256sum big1 big2 big3`);
    await withMount(s, {}, async (mnt, { fs: cfs }) => {
      const d = `${mnt}/${name}`;
      // Two processes on the same file and one on another, all at once,
      // on a cold page cache of the mount.
      const runs = await Promise.all([
        shOk(`cd '${d}' && sha256sum big1 big2 big3`),
        shOk(`cd '${d}' && sha256sum big1 big2 big3`),
        shOk(`cd '${d}' && sha256sum big3 big2 big1 | sort -k2`),
      ]);
      for (const r of runs) assert.equal(r, want);
      const { dispatched, failed } = cfs.directReads;
      assert.ok(dispatched > 20, `${dispatched} READs on the workers`);
      assert.equal(failed, 0);
      assert.ok(await cfs.directReplies() >= dispatched);
    });
    // A fresh mount (a cold page cache): ranges at odd offsets, straddling
    // chunk boundaries, and the end of a file.
    await withMount(s, {}, async (mnt, { fs: cfs }) => {
      const d = `${mnt}/${name}`;
      for (
        const [skip, count] of [
          [12345, 777777],
          [262143, 3],
          [5000001, 2100000],
          [9437291 - 4097, 9000],
        ]
      ) {
        assert.equal(
          await shOk(ddRange(`${d}/big2`, skip, count)),
          await shOk(ddRange(`${src}/big2`, skip, count)),
          `big2 at ${skip}`,
        );
      }
      assert.ok(cfs.directReads.dispatched > 0);
    });

    // Damage a chunk in the middle of big2 in its pack.
    const chunks = await s.blobs.chunks(digestOf("big2"));
    assert.ok(chunks && chunks.length > 4);
    const at = s.blobs.locateChunk(
      chunks[Math.floor(chunks.length / 2)].digest,
    )!;
    assert.ok(at.length > 0 && at.path.endsWith(".pack"));
    flipStoredByte(at);
    await withMount(s, {}, async (mnt, { fs: cfs }) => {
      const d = `${mnt}/${name}`;
      const bad = await sh(`cat '${d}/big2' > /dev/null`);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /Input\/output error/);
      assert.ok(cfs.directReads.failed > 0, "the workers gave READs back");
      // The start of the damaged file and the other files still read.
      assert.equal(
        await shOk(ddRange(`${d}/big2`, 0, 65536)),
        await shOk(ddRange(`${src}/big2`, 0, 65536)),
      );
      assert.equal(
        await shOk(`cd '${d}' && sha256sum big1 big3`),
        await shOk(`cd '${src}' && sha256sum big1 big3`),
      );
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
