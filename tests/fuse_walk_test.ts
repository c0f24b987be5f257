/**
 * Tree walks through the FUSE mount of a local data directory (as root):
 * in a walk that reads contents (tar) small files are pushed into the
 * kernel's page cache ahead of the reader (FUSE_NOTIFY_STORE) instead of
 * being READ, with the same bytes as the source; several walkers at once
 * (where a push can meet a READ of the same file) neither hang nor see
 * wrong bytes; from an import written as packs the pushed contents come
 * from the loader threads (pack ranges), and a damaged pack record fails
 * only its own file or directory.
 */
import assert from "node:assert/strict";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import { LocalPathInfoService } from "../lib/store/local_path_info_service.ts";
import { importPath } from "../lib/store/import_path.ts";
import { entryName } from "../lib/store/path_info.ts";
import { Op } from "../lib/fuse/protocol.ts";
import { sh, shOk, skipFuse, withMount } from "./fuse_helpers.ts";
import { flipStoredByte } from "../lib/castore/_test_blob_service.ts";

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
    await withMount(
      s,
      { pushSmallFiles: true },
      async (mnt, { fs, session }) => {
        const got = await shOk(
          `tar c ${NORM} -C '${mnt}/${name}' . | sha256sum`,
        );
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
      },
    );
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
    // Round 1 reads requests on reader threads instead of the main thread.
    for (let round = 0; round < 2; round++) {
      await withMount(s, {
        direct: round === 0,
        pushSmallFiles: true,
      }, async (mnt) => {
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

Deno.test({
  name:
    "fuse walk: a pack-imported tree is loaded by the loader threads from pack ranges; a corrupt pack record gives EIO for its file or directory only",
  ignore,
}, async () => {
  const tmp = await Deno.makeTempDir({ prefix: "snix-fuse-walk-" });
  try {
    await Deno.mkdir(`${tmp}/src`);
    await makeTree(`${tmp}/src`);
    const s = await localServices(`${tmp}/data`);
    const info = await importPath(`${tmp}/src`, "walk", s);
    const name = new TextDecoder().decode(entryName(info.entry!));
    // The import wrote packs: small files and directories are pack records.
    const root = await s.directories.get(
      info.entry!.entry.case === "directory"
        ? info.entry!.entry.value.digest
        : new Uint8Array(),
    );
    const dirOf = (n: string) =>
      root!.directories.find((d) => new TextDecoder().decode(d.name) === n)!;
    const d7 = await s.directories.get(dirOf("d7").digest);
    const f3 = d7!.files.find((f) =>
      new TextDecoder().decode(f.name) === "f3"
    )!;
    const fileAt = s.blobs.locateChunk(f3.digest)!;
    const dirAt = s.directories.locate(dirOf("d12").digest)!;
    assert.ok(fileAt.length > 0 && fileAt.path.endsWith(".pack"));
    assert.ok(dirAt.length > 0 && dirAt.path.endsWith(".pack"));

    const want = await shOk(`tar c ${NORM} -C '${tmp}/src' . | sha256sum`);
    // By default the local store's small files are READ (their pack blocks
    // warmed ahead), not pushed.
    await withMount(s, {}, async (mnt, { fs, session }) => {
      assert.equal(
        await shOk(`tar c ${NORM} -C '${mnt}/${name}' . | sha256sum`),
        want,
      );
      assert.equal(fs.pushedFiles, 0);
      assert.ok((session.opCounts.get(Op.READ) ?? 0) > 100);
      assert.ok(fs.warmedFiles > 0);
    });
    await withMount(s, { pushSmallFiles: true }, async (mnt, { fs }) => {
      assert.equal(
        await shOk(`tar c ${NORM} -C '${mnt}/${name}' . | sha256sum`),
        want,
      );
      // Pushed contents came from the loader (decompressed on its
      // threads), none through the main-thread fallback.
      assert.ok(fs.pushedFiles > 100, `${fs.pushedFiles} pushed`);
      assert.ok(
        fs.loadedFiles >= fs.pushedFiles,
        `${fs.loadedFiles} loaded for ${fs.pushedFiles} pushed`,
      );
      assert.equal(fs.pushStats.fallback, 0);
    });

    // Corrupt one file's record and one directory's record in their packs.
    flipStoredByte(fileAt);
    flipStoredByte(dirAt);
    // Fresh services (no cached verified objects).
    const s2 = await localServices(`${tmp}/data`);
    const sums = (d: string) =>
      `cd '${d}' && find . -path ./d12 -prune -o -type f ! -path ./d7/f3 -print0 | LC_ALL=C sort -z | xargs -0 sha256sum`;
    for (const pushSmallFiles of [true, false]) {
      await withMount(s2, { pushSmallFiles }, async (mnt, { fs }) => {
        const m = `${mnt}/${name}`;
        // (Piped: GNU tar does not read files when it writes to /dev/null.)
        const t = await sh(`set -o pipefail; tar c -C '${m}' . | wc -c`);
        assert.notEqual(t.code, 0);
        // tar names exactly the two damaged objects.
        const errs = t.stderr.split("\n").filter((l) =>
          l.includes("Input/output error")
        );
        assert.ok(errs.some((l) => l.includes("d7/f3")), t.stderr);
        assert.ok(errs.some((l) => l.includes("d12")), t.stderr);
        assert.equal(errs.length, 2, t.stderr);
        assert.match(
          (await sh(`cat '${m}/d7/f3'`)).stderr,
          /Input\/output error/,
        );
        assert.match((await sh(`ls '${m}/d12'`)).stderr, /Input\/output error/);
        // Everything else reads with the right bytes.
        assert.equal(await shOk(sums(m)), await shOk(sums(`${tmp}/src`)));
        if (pushSmallFiles) assert.ok(fs.pushStats.fallback >= 1);
      });
    }
    await Promise.all([s.blobs.close?.(), s.directories.close()]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
