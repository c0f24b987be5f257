/**
 * overlayfs with our FUSE mount as `lowerdir` and tmpfs upper/work dirs (as
 * root): reads through the overlay are the original bytes, writes (new
 * files, appends that copy up, deletions) land in the upper dir, and the
 * castore stays unchanged.
 */
import assert from "node:assert/strict";
import { MemoryBlobService } from "../lib/castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../lib/castore/memory_directory_service.ts";
import { MemoryPathInfoService } from "../lib/store/memory_path_info_service.ts";
import { importPath } from "../lib/store/import_path.ts";
import { entryName } from "../lib/store/path_info.ts";
import { forceUnmount, sh, shOk, skipFuse, withMount } from "./fuse_helpers.ts";

const ignore = skipFuse();

async function countBlobs(blobs: MemoryBlobService): Promise<number> {
  let n = 0;
  for await (const _ of blobs.listBlobs()) n++;
  return n;
}

Deno.test({
  name:
    "fuse: overlayfs over the mount: reads correct, writes go to the upper dir",
  ignore,
}, async () => {
  const s = {
    blobs: new MemoryBlobService(),
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  };
  const src = await Deno.makeTempDir({ prefix: "snix-fuse-src-" });
  const scratch = await Deno.makeTempDir({ prefix: "snix-fuse-ovl-" });
  const merged = `${scratch}/merged`;
  const t = `${scratch}/t`;
  try {
    await shOk(`
      set -e; cd '${src}'; mkdir -p sub/deeper
      printf 'original\\n' > f; printf 'keep\\n' > sub/keep; head -c 2000000 /dev/urandom > sub/deeper/bin
      ln -s sub/keep link; printf 'gone\\n' > sub/remove-me
    `);
    const name = new TextDecoder().decode(
      entryName((await importPath(src, "overlay-test", s)).entry!),
    );
    const blobsBefore = await countBlobs(s.blobs);
    await withMount(s, {}, async (mnt) => {
      await shOk(
        `set -e; mkdir -p '${merged}' '${t}'; mount -t tmpfs tmpfs '${t}'; mkdir '${t}/upper' '${t}/work'
         mount -t overlay overlay -o 'lowerdir=${mnt},upperdir=${t}/upper,workdir=${t}/work' '${merged}'`,
      );
      try {
        const p = `${merged}/${name}`;
        await shOk(`diff -r --no-dereference '${src}' '${p}'`);
        await shOk(`
          set -e
          echo new > '${p}/new-file'
          echo appended >> '${p}/f'
          rm '${p}/sub/remove-me'
          mkdir '${p}/sub/newdir'
          chmod 644 '${p}/sub/keep'
        `);
        assert.equal(await shOk(`cat '${p}/f'`), "original\nappended\n");
        assert.equal(await shOk(`cat '${t}/upper/${name}/new-file'`), "new\n");
        assert.equal(
          await shOk(`cat '${t}/upper/${name}/f'`),
          "original\nappended\n",
        );
        // The deletion is a whiteout (a 0:0 character device) in the upper dir.
        assert.equal(
          await shOk(`stat -c %F '${t}/upper/${name}/sub/remove-me'`),
          "character special file\n",
        );
        assert.notEqual((await sh(`test -e '${p}/sub/remove-me'`)).code, 0);
        // The lower (our mount) is unchanged.
        assert.equal(await shOk(`cat '${mnt}/${name}/f'`), "original\n");
        assert.equal(
          await shOk(`cat '${mnt}/${name}/sub/remove-me'`),
          "gone\n",
        );
        assert.equal(
          await shOk(`stat -c %a '${mnt}/${name}/sub/keep'`),
          "444\n",
        );
        await shOk(`cmp '${src}/sub/deeper/bin' '${p}/sub/deeper/bin'`);
      } finally {
        await sh(
          `umount '${merged}' || umount -l '${merged}'; umount '${t}' || umount -l '${t}'`,
        );
        await forceUnmount(merged);
      }
    });
    assert.equal(await countBlobs(s.blobs), blobsBefore);
  } finally {
    await Deno.remove(src, { recursive: true });
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
});
