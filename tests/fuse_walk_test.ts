/**
 * Tree walks through the FUSE mount of a local data directory (as root):
 * in a walk that reads contents (tar) small files are pushed into the
 * kernel's page cache ahead of the reader (FUSE_NOTIFY_STORE) instead of
 * being READ, with the same bytes as the source; several walkers at once
 * (where a push can meet a READ of the same file) neither hang nor see
 * wrong bytes.
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

/** 30 directories of small files (some identical across directories), a symlink, an empty and an executable file, and one file too big to push. */
async function makeTree(dir: string): Promise<number> {
  await shOk(`
    set -e; cd '${dir}'
    for d in $(seq 1 30); do
      mkdir -p "d$d/sub"
      for f in $(seq 1 6); do head -c $((d * 97 + f * 13)) /dev/urandom > "d$d/f$f"; done
      printf 'same in every directory\\n' > "d$d/same"
      printf 'nested %s\\n' "$d" > "d$d/sub/n"
      ln -s f1 "d$d/link"
    done
    : > empty; printf '#!/bin/sh\\n' > run.sh; chmod +x run.sh
    head -c 300000 /dev/urandom > big
  `);
  return 30 * 8 + 2;
}

async function localServices(dir: string) {
  return {
    blobs: await LocalBlobService.open(dir),
    directories: await LocalDirectoryService.open(dir),
    pathInfos: await LocalPathInfoService.open(dir),
  };
}

const NORM =
  "--sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 --mode=a-w";

Deno.test({
  name:
    "fuse walk: tar of a local data dir gets small files pushed, not READ, with the source's bytes",
  ignore,
}, async () => {
  const tmp = await Deno.makeTempDir({ prefix: "snix-fuse-walk-" });
  try {
    await Deno.mkdir(`${tmp}/src`);
    const smallFiles = await makeTree(`${tmp}/src`);
    const s = await localServices(`${tmp}/data`);
    const info = await importPath(`${tmp}/src`, "walk", s);
    const name = new TextDecoder().decode(entryName(info.entry!));
    const want = await shOk(`tar c ${NORM} -C '${tmp}/src' . | sha256sum`);
    await withMount(s, {}, async (mnt, { fs, session }) => {
      const got = await shOk(`tar c ${NORM} -C '${mnt}/${name}' . | sha256sum`);
      assert.equal(got, want);
      const reads = session.opCounts.get(Op.READ) ?? 0;
      assert.ok(
        fs.pushedFiles > smallFiles / 2,
        `only ${fs.pushedFiles} of ${smallFiles} small files were pushed`,
      );
      assert.ok(reads < smallFiles / 2, `${reads} READs`);
      // The pushed pages are what a second reader gets, too.
      assert.equal(
        await shOk(`cd '${mnt}/${name}' && cat d7/f3 d30/same | sha256sum`),
        await shOk(`cd '${tmp}/src' && cat d7/f3 d30/same | sha256sum`),
      );
    });
    await Promise.all([s.blobs.close?.(), s.directories.close()]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test({
  name:
    "fuse walk: several walkers at once (pushes meeting READs) finish with the right bytes",
  ignore,
}, async () => {
  const tmp = await Deno.makeTempDir({ prefix: "snix-fuse-walk-" });
  try {
    await Deno.mkdir(`${tmp}/src`);
    await makeTree(`${tmp}/src`);
    const s = await localServices(`${tmp}/data`);
    const info = await importPath(`${tmp}/src`, "walk", s);
    const name = new TextDecoder().decode(entryName(info.entry!));
    const sums = (d: string) =>
      `cd '${d}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum`;
    const want = await shOk(sums(`${tmp}/src`));
    const wantTar = await shOk(`tar c ${NORM} -C '${tmp}/src' . | sha256sum`);
    for (let round = 0; round < 2; round++) {
      await withMount(s, {}, async (mnt) => {
        const m = `${mnt}/${name}`;
        // A hang would show as the timeout's exit status 124.
        const out = await Promise.all([
          shOk(`timeout 60 tar c ${NORM} -C '${m}' . | sha256sum`),
          shOk(`timeout 60 bash -c "${sums(m)}"`),
          shOk(`timeout 60 tar c ${NORM} -C '${m}' . | sha256sum`),
          shOk(
            `cd '${m}' && timeout 60 bash -c 'for d in d*; do cat $d/f1 $d/same >/dev/null; done'`,
          ),
        ]);
        assert.equal(out[0], wantTar);
        assert.equal(out[1], want);
        assert.equal(out[2], wantTar);
      });
    }
    await Promise.all([s.blobs.close?.(), s.directories.close()]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
