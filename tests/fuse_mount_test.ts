/**
 * The castore FUSE file system against the real kernel (as root): imported
 * trees read back identically (diff -r, sha256sum, stat, readlink), xattrs,
 * the root's lookup and listing rules, parallel readers of large files, and a
 * corrupt blob failing only its own file with EIO.
 */
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { MemoryBlobService } from "../lib/castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../lib/castore/memory_directory_service.ts";
import type { BlobService, ByteRange } from "../lib/castore/blob_service.ts";
import { digestToHex, digestToString } from "../lib/castore/digest.ts";
import { MemoryPathInfoService } from "../lib/store/memory_path_info_service.ts";
import { importPath } from "../lib/store/import_path.ts";
import { entryName } from "../lib/store/path_info.ts";
import type { PathInfo } from "../proto/gen/snix/store/protos/pathinfo_pb.ts";
import { sh, shOk, skipFuse, withMount } from "./fuse_helpers.ts";
import { makeCorpus } from "./corpus.ts";

const ignore = skipFuse();

function memoryServices() {
  return {
    blobs: new MemoryBlobService(),
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  };
}

function baseName(info: PathInfo): string {
  return new TextDecoder().decode(entryName(info.entry!));
}

/** A small tree with every kind of node: nested dirs, empty dir/file, executable, symlinks. */
async function makeTree(dir: string): Promise<void> {
  await shOk(`
    set -e; cd '${dir}'
    mkdir -p a/b/c empty
    printf 'hello\\n' > a/hello.txt
    : > a/empty-file
    printf '#!/bin/sh\\necho hi\\n' > a/b/run.sh; chmod +x a/b/run.sh
    head -c 3000000 /dev/urandom > a/b/c/random.bin
    ln -s hello.txt a/link-to-hello
    ln -s ../../a a/b/up
    ln -s /nonexistent/target dangling
    printf 'same\\n' > dup1; printf 'same\\n' > dup2
    printf 'x' > "name with spaces"
  `);
}

Deno.test({
  name:
    "fuse: mounted tree equals the original (diff -r, stat, readlink, sha256)",
  ignore,
}, async () => {
  const s = memoryServices();
  const src = await Deno.makeTempDir({ prefix: "snix-fuse-src-" });
  try {
    await makeTree(src);
    const tree = baseName(await importPath(src, "tree", s));
    const doc = baseName(
      await importPath("/usr/share/doc/bash", "bash-doc", s),
    );
    const corpusDir = `${src}-corpus`;
    makeCorpus(corpusDir);
    const corpus = baseName(await importPath(corpusDir, "corpus", s));
    await withMount(s, {}, async (mnt) => {
      await shOk(`diff -r --no-dereference '${src}' '${mnt}/${tree}'`);
      await shOk(`diff -r '/usr/share/doc/bash' '${mnt}/${doc}'`);
      // The shared test corpus (odd names, deep chains, all symlink kinds, a 5 MiB file).
      await shOk(`diff -r --no-dereference '${corpusDir}' '${mnt}/${corpus}'`);
      const sums = (d: string) =>
        `cd '${d}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum`;
      assert.equal(
        await shOk(sums(`${mnt}/${corpus}`)),
        await shOk(sums(corpusDir)),
      );
      const modes = await shOk(
        `cd '${mnt}/${tree}' && stat -c '%n %A %s %Y %U' a a/hello.txt a/empty-file a/b/run.sh a/link-to-hello empty`,
      );
      assert.equal(
        modes.trim(),
        [
          "a dr-xr-xr-x 0 1 root",
          "a/hello.txt -r--r--r-- 6 1 root",
          "a/empty-file -r--r--r-- 0 1 root",
          "a/b/run.sh -r-xr-xr-x 18 1 root",
          "a/link-to-hello lrwxrwxrwx 9 1 root",
          "empty dr-xr-xr-x 0 1 root",
        ].join("\n"),
      );
      assert.equal(
        (await shOk(
          `cd '${mnt}/${tree}' && readlink a/link-to-hello a/b/up dangling`,
        )).trim(),
        "hello.txt\n../../a\n/nonexistent/target",
      );
      const want = await shOk(
        `cd '${src}' && find . -type f -print0 | sort -z | xargs -0 sha256sum`,
      );
      const got = await shOk(
        `cd '${mnt}/${tree}' && find . -type f -print0 | sort -z | xargs -0 sha256sum`,
      );
      assert.equal(got, want);
      // Identical files share an inode (and page cache); nlink stays 1.
      const ino = await shOk(
        `cd '${mnt}/${tree}' && stat -c '%i %h' dup1 dup2`,
      );
      const [l1, l2] = ino.trim().split("\n");
      assert.equal(l1, l2);
      assert.match(l1, / 1$/);
      // Inode numbers are stable across lookups.
      assert.equal(
        await shOk(`stat -c %i '${mnt}/${tree}/a'`),
        await shOk(`stat -c %i '${mnt}/${tree}/a/.'`),
      );
      // The mount is read-only.
      const w = await sh(
        `echo x > '${mnt}/${tree}/new' 2>&1; touch '${mnt}/${tree}/a/hello.txt' 2>&1`,
      );
      assert.match(w.stdout, /Read-only file system/);
      assert.match(await shOk(`stat -f -c %T '${mnt}'`), /fuse/);
    });
  } finally {
    await Deno.remove(`${src}-corpus`, { recursive: true }).catch(() => {});
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test({
  name:
    "fuse: root lookups, --list-root, name mismatch, paths added after mounting",
  ignore,
}, async () => {
  const s = memoryServices();
  const src = await Deno.makeTempDir({ prefix: "snix-fuse-src-" });
  try {
    await Deno.writeTextFile(`${src}/f`, "one\n");
    const first = baseName(await importPath(src, "first", s));
    for (const listRoot of [false, true]) {
      await withMount(s, { listRoot }, async (mnt) => {
        assert.equal(await shOk(`cat '${mnt}/${first}/f'`), "one\n");
        const ls = await sh(`ls '${mnt}'`);
        if (listRoot) {
          assert.equal(ls.code, 0);
          assert.ok(ls.stdout.includes(first));
        } else {
          assert.notEqual(ls.code, 0);
          assert.match(ls.stderr, /Operation not permitted/);
        }
        // Same hash, other name: not there. Garbage names: not there.
        const other = first.slice(0, 33) + "other";
        assert.notEqual((await sh(`stat '${mnt}/${other}'`)).code, 0);
        assert.notEqual((await sh(`stat '${mnt}/not-a-store-path'`)).code, 0);
        // A path added while mounted appears (negative lookups are not cached).
        await Deno.writeTextFile(`${src}/f`, `two ${listRoot}\n`);
        const missing = `${mnt}/${
          baseName(
            await importPath(src, `second-${listRoot}`, memoryServices()),
          )
        }`;
        assert.notEqual((await sh(`stat '${missing}'`)).code, 0);
        const second = baseName(await importPath(src, `second-${listRoot}`, s));
        assert.equal(`${mnt}/${second}`, missing);
        assert.equal(
          await shOk(`cat '${mnt}/${second}/f'`),
          `two ${listRoot}\n`,
        );
      });
    }
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test({
  name: "fuse: --explicit-open answers OPEN/OPENDIR/RELEASE itself",
  ignore,
}, async () => {
  const s = memoryServices();
  const src = await Deno.makeTempDir({ prefix: "snix-fuse-src-" });
  try {
    await makeTree(src);
    const tree = baseName(await importPath(src, "tree", s));
    await withMount(s, { zeroMessageOpen: false }, async (mnt) => {
      await shOk(`diff -r --no-dereference '${src}' '${mnt}/${tree}'`);
      await shOk(
        `cmp '${src}/a/b/c/random.bin' '${mnt}/${tree}/a/b/c/random.bin'`,
      );
    });
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test({
  name: "fuse: --show-xattr exposes castore digests, otherwise no xattrs",
  ignore,
}, async () => {
  const s = memoryServices();
  const src = await Deno.makeTempDir({ prefix: "snix-fuse-src-" });
  try {
    await Deno.mkdir(`${src}/d`);
    await Deno.writeTextFile(`${src}/d/file`, "content\n");
    const info = await importPath(src, "xattrs", s);
    const name = baseName(info);
    const rootDigest = info.entry!.entry.case === "directory"
      ? info.entry!.entry.value.digest
      : undefined;
    assert.ok(rootDigest);
    const dir = await s.directories.get(rootDigest);
    const sub = await s.directories.get(dir!.directories[0].digest);
    const fileDigest = sub!.files[0].digest;
    await withMount(s, { showXattr: true }, async (mnt) => {
      const out = await shOk(
        `getfattr -d -m - '${mnt}/${name}' '${mnt}/${name}/d/file'`,
      );
      assert.ok(
        out.includes(
          `user.snix.castore.directory.digest="${digestToString(rootDigest)}"`,
        ),
        out,
      );
      assert.ok(
        out.includes(
          `user.snix.castore.blob.digest="${digestToString(fileDigest)}"`,
        ),
        out,
      );
      const none = await sh(`getfattr -n user.other '${mnt}/${name}/d/file'`);
      assert.match(none.stderr, /No such attribute/);
    });
    await withMount(s, {}, async (mnt) => {
      const r = await sh(
        `getfattr -d -m - '${mnt}/${name}/d/file'; getfattr -n user.snix.castore.blob.digest '${mnt}/${name}/d/file'`,
      );
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /Operation not supported/);
    });
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test({
  name: "fuse: parallel readers of the same and of different large files",
  ignore,
}, async () => {
  const s = memoryServices();
  const src = await Deno.makeTempDir({ prefix: "snix-fuse-src-" });
  try {
    await shOk(
      `cd '${src}' && head -c 48000000 /dev/urandom > big1 && head -c 40000123 /dev/urandom > big2`,
    );
    const want = await shOk(`cd '${src}' && sha256sum big1 big2`);
    const name = baseName(await importPath(src, "big", s));
    await withMount(s, { cacheBytes: 32 << 20 }, async (mnt) => {
      const d = `${mnt}/${name}`;
      const runs = await Promise.all([
        shOk(`cd '${d}' && sha256sum big1 big2`),
        shOk(`cd '${d}' && sha256sum big1 big2`),
        shOk(`cd '${d}' && sha256sum big2 big1 | sort -k2`),
        shOk(
          `cd '${d}' && dd if=big2 bs=1M skip=7 count=5 status=none | sha256sum`,
        ),
      ]);
      assert.equal(runs[0], want);
      assert.equal(runs[1], want);
      assert.equal(runs[2], want);
      assert.equal(
        runs[3],
        await shOk(
          `cd '${src}' && dd if=big2 bs=1M skip=7 count=5 status=none | sha256sum`,
        ),
      );
    });
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

/** Wraps a blob service so that reading one blob fails verification, as a corrupt chunk does. */
function corrupting(inner: BlobService, bad: Set<string>): BlobService {
  return {
    has: (d) => inner.has(d),
    chunks: (d) => inner.chunks(d),
    put: () => inner.put(),
    async read(d: Uint8Array, range?: ByteRange) {
      const stream = await inner.read(d, range);
      if (!stream || !bad.has(digestToHex(d))) return stream;
      await stream.cancel();
      return new ReadableStream({
        pull(c) {
          c.error(
            new ConnectError(
              `blob ${digestToString(d)}: chunk does not match its digest`,
              Code.DataLoss,
            ),
          );
        },
      });
    },
  };
}

Deno.test({
  name: "fuse: an unreadable blob gives EIO for that file only",
  ignore,
}, async () => {
  const s = memoryServices();
  const src = await Deno.makeTempDir({ prefix: "snix-fuse-src-" });
  try {
    await Deno.writeTextFile(`${src}/good`, "good\n");
    await Deno.writeTextFile(`${src}/bad`, "bad bad\n");
    const info = await importPath(src, "corrupt", s);
    const root = await s.directories.get(
      info.entry!.entry.case === "directory"
        ? info.entry!.entry.value.digest
        : new Uint8Array(),
    );
    const badDigest = root!.files.find((f) =>
      new TextDecoder().decode(f.name) === "bad"
    )!.digest;
    const services = {
      ...s,
      blobs: corrupting(s.blobs, new Set([digestToHex(badDigest)])),
    };
    await withMount(services, {}, async (mnt) => {
      const d = `${mnt}/${baseName(info)}`;
      const bad = await sh(`cat '${d}/bad'`);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /Input\/output error/);
      assert.equal(await shOk(`cat '${d}/good'`), "good\n");
      assert.equal(await shOk(`stat -c %s '${d}/bad'`), "8\n");
    });
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test({
  name:
    "fuse: directories fetched ahead from a slow (remote-like) service stay bounded in number at once, and the walk sees every entry",
  ignore,
}, async () => {
  // 200 directories, 3 levels deep, so the walk queues many ahead.
  const script = `for a in $(seq 1 8); do for b in $(seq 1 24); do
      mkdir -p "d$a/e$b"; printf '%s\\n' "$a $b" > "d$a/e$b/f"
    done; done`;
  await withImportedTree(script, async (s, src, info) => {
    let running = 0;
    let most = 0;
    const slow = {
      ...s.directories,
      get: async (digest: Uint8Array) => {
        running++;
        most = Math.max(most, running);
        await new Promise((r) => setTimeout(r, 2));
        try {
          return await s.directories.get(digest);
        } finally {
          running--;
        }
      },
    } as typeof s.directories;
    await withMount({ ...s, directories: slow }, {}, async (mnt) => {
      await assertSameWalk(`${mnt}/${baseName(info)}`, src);
    });
    // 16 fetched ahead at once, plus the one the walker waits for.
    assert.ok(most <= 17, `${most} directory fetches at once`);
    assert.ok(most > 1, "no directory was fetched ahead");
  });
});

Deno.test({
  name:
    "fuse: over a remote-like service a looked-up store path's tree is asked for once, in one recursive get, and the walk sees every entry",
  ignore,
}, async () => {
  const script =
    `for a in $(seq 1 5); do mkdir -p "d$a/e"; echo "$a" > "d$a/e/f"; done`;
  await withImportedTree(script, async (s, src, info) => {
    const inner = s.directories;
    const recursive: string[] = [];
    // No `locate`: the mount treats it as remote (nothing local to warm).
    const remoteLike = {
      get: (d: Uint8Array) => inner.get(d),
      getRecursive(root: Uint8Array) {
        recursive.push(digestToString(root));
        return inner.getRecursive(root);
      },
      put: () => inner.put(),
    } as typeof s.directories;
    await withMount({ ...s, directories: remoteLike }, {}, async (mnt) => {
      await assertSameWalk(`${mnt}/${baseName(info)}`, src);
      await shOk(`ls '${mnt}/${baseName(info)}/d1'`);
    });
    const root = info.entry!.entry.value as { digest: Uint8Array };
    assert.deepEqual(recursive, [digestToString(root.digest)]);
  });
});

/**
 * Runs `fn` with memory services holding the tree that `script` (shell,
 * run in a fresh directory) made, imported as a store path.
 */
async function withImportedTree(
  script: string,
  fn: (
    s: ReturnType<typeof memoryServices>,
    src: string,
    info: PathInfo,
  ) => Promise<void>,
): Promise<void> {
  const s = memoryServices();
  const src = await Deno.makeTempDir({ prefix: "snix-fuse-src-" });
  try {
    await shOk(`set -e; cd '${src}'; ${script}`);
    await fn(s, src, await importPath(src, "tree", s));
  } finally {
    await Deno.remove(src, { recursive: true });
  }
}

/** `find` lists the same entries (type, size) below both directories. */
async function assertSameWalk(mounted: string, original: string) {
  const list = (d: string) =>
    `cd '${d}' && find . \\( -type d -printf '%P d\\n' \\) -o -printf '%P %y %s\\n' | LC_ALL=C sort`;
  assert.equal(await shOk(list(mounted)), await shOk(list(original)));
}
