/**
 * What a fresh `find -ls` costs in kernel requests (as root, real kernel
 * FUSE): every listing comes with attributes (READDIRPLUS, also past the
 * first reply of a big directory), so the walk sends no LOOKUP or GETATTR
 * per entry, and a directory costs its READDIRPLUS replies plus one empty
 * one at its end.
 */
import assert from "node:assert/strict";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import { LocalPathInfoService } from "../lib/store/local_path_info_service.ts";
import { importPath } from "../lib/store/import_path.ts";
import { entryName } from "../lib/store/path_info.ts";
import { Op } from "../lib/fuse/protocol.ts";
import { shOk, skipFuse, withMount } from "./fuse_helpers.ts";

const ignore = skipFuse();

/** Small directories under a top one of 600 entries (~3 getdents buffers with attributes). */
const TREE = `
  set -e
  for d in $(seq 1 20); do
    mkdir "dir$d"
    for f in 1 2 3; do printf '%s\\n' "$d $f" > "dir$d/file$f"; done
    ln -s file1 "dir$d/link"
  done
  for f in $(seq 1 580); do : > "an-entry-with-a-long-name-number-$f"; done
`;

Deno.test({
  name:
    "fuse readdir: a fresh find -ls sends READDIRPLUS only (no plain READDIR, LOOKUP or GETATTR per entry)",
  ignore,
}, async () => {
  const tmp = await Deno.makeTempDir({ prefix: "snix-fuse-readdir-" });
  try {
    await Deno.mkdir(`${tmp}/src`);
    await shOk(`cd '${tmp}/src' && ${TREE}`);
    const s = {
      blobs: await LocalBlobService.open(`${tmp}/data`),
      directories: await LocalDirectoryService.open(`${tmp}/data`),
      pathInfos: await LocalPathInfoService.open(`${tmp}/data`),
    };
    const info = await importPath(`${tmp}/src`, "readdir", s);
    const name = new TextDecoder().decode(entryName(info.entry!));
    const dirs = 21;
    const entries = 20 * 5 + 580 + 1;
    await withMount(s, {}, async (mnt, { session }) => {
      const lines = await shOk(`find '${mnt}/${name}' -ls | wc -l`);
      assert.equal(Number(lines.trim()), entries);
      const n = (op: number) => session.opCounts.get(op) ?? 0;
      const counts = `READDIRPLUS ${n(Op.READDIRPLUS)}, READDIR ${
        n(Op.READDIR)
      }, LOOKUP ${n(Op.LOOKUP)}, GETATTR ${n(Op.GETATTR)}`;
      // Plain READDIR (READDIRPLUS_AUTO) past the first ~200 entries of the
      // top directory made find look up each further one.
      assert.equal(n(Op.READDIR), 0, counts);
      // The store path itself (and the mount root) only.
      assert.ok(n(Op.LOOKUP) <= 2, counts);
      assert.ok(n(Op.GETATTR) <= 2, counts);
      // One reply and the end per small directory; the top one needs ~4.
      assert.ok(n(Op.READDIRPLUS) >= 2 * dirs, counts);
      assert.ok(n(Op.READDIRPLUS) <= 2 * dirs + 4, counts);
    });
    await Promise.all([s.blobs.close?.(), s.directories.close()]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
