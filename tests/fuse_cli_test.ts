/**
 * `snix store mount` as its own process on a local data directory (as
 * root): serves what was imported, SIGTERM unmounts and exits 0, a kill -9
 * leaves a stale mount that the next mount explains (or clears with
 * --force-unmount-stale), a corrupt stored chunk gives EIO for its file only,
 * and a process without CAP_SYS_ADMIN gets a one-line error.
 */
import assert from "node:assert/strict";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import { LocalPathInfoService } from "../lib/store/local_path_info_service.ts";
import { importPath } from "../lib/store/import_path.ts";
import { entryName } from "../lib/store/path_info.ts";
import { isMounted } from "../lib/fuse/mount.ts";
import { forceUnmount, sh, shOk, skipFuse } from "./fuse_helpers.ts";

const ignore = skipFuse();
const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;

interface Running {
  child: Deno.ChildProcess;
  stderr: () => Promise<string>;
}

function spawnMount(
  dataDir: string,
  mnt: string,
  extra: string[] = [],
  prefix: string[] = [],
  runtime: string[] = [Deno.execPath(), "run", "-A"],
): Running {
  const cmd = [
    ...prefix,
    ...runtime,
    MAIN,
    "--data-dir",
    dataDir,
    "store",
    "mount",
    mnt,
    ...extra,
  ];
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const text = new Response(child.stderr).text();
  return { child, stderr: () => text };
}

/** Waits until `mnt` is mounted and answers, or the process exits. */
async function waitMounted(r: Running, mnt: string): Promise<void> {
  const exited = r.child.status.then((s) => s);
  for (let i = 0; i < 300; i++) {
    const done = await Promise.race([
      exited,
      new Promise((res) => setTimeout(() => res(undefined), 50)),
    ]);
    if (done) {
      throw new Error(
        `mount exited early (${(done as Deno.CommandStatus).code}): ${await r
          .stderr()}`,
      );
    }
    if (
      isMounted(mnt) && (await sh(`stat -f '${mnt}' >/dev/null`)).code === 0
    ) {
      return;
    }
  }
  throw new Error("mount did not come up within 15 s");
}

async function withDataDir(
  fn: (
    dataDir: string,
    mnt: string,
    names: Record<string, string>,
  ) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "snix-fuse-cli-" });
  const dataDir = `${dir}/data`, mnt = `${dir}/mnt`, src = `${dir}/src`;
  await Deno.mkdir(mnt);
  await shOk(
    `mkdir -p '${src}/d' && printf 'hello\\n' > '${src}/d/hello' && head -c 3000000 /dev/urandom > '${src}/big' && ln -s d/hello '${src}/link'`,
  );
  const services = {
    blobs: await LocalBlobService.open(dataDir),
    directories: await LocalDirectoryService.open(dataDir),
    pathInfos: await LocalPathInfoService.open(dataDir),
  };
  const names: Record<string, string> = {};
  try {
    const info = await importPath(src, "cli-test", services);
    names.tree = new TextDecoder().decode(entryName(info.entry!));
    names.src = src;
    await Promise.all([
      services.blobs.close?.(),
      services.directories.close?.(),
    ]);
    await fn(dataDir, mnt, names);
  } finally {
    await forceUnmount(mnt);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "fuse cli: serves the data dir, SIGTERM unmounts and exits 0",
  ignore,
}, async () => {
  await withDataDir(async (dataDir, mnt, n) => {
    const r = spawnMount(dataDir, mnt, ["--threads", "2"]);
    try {
      await waitMounted(r, mnt);
      await shOk(`diff -r --no-dereference '${n.src}' '${mnt}/${n.tree}'`);
      // A second mount on a live one is refused with a clear message.
      const again = spawnMount(dataDir, mnt);
      assert.equal((await again.child.status).code, 1);
      assert.match(await again.stderr(), /is already a live snix mount/);
      r.child.kill("SIGTERM");
      const st = await r.child.status;
      assert.equal(st.code, 0, await r.stderr());
      assert.equal(isMounted(mnt), false);
    } finally {
      try {
        r.child.kill("SIGKILL");
      } catch { /* already gone */ }
      await r.child.status;
    }
  });
});

Deno.test({
  name:
    "fuse cli: after kill -9 the next mount explains the stale mount or clears it",
  ignore,
}, async () => {
  await withDataDir(async (dataDir, mnt, n) => {
    const first = spawnMount(dataDir, mnt);
    await waitMounted(first, mnt);
    first.child.kill("SIGKILL");
    await first.child.status;
    await first.stderr();
    const stat = await sh(`ls '${mnt}'`);
    assert.match(stat.stderr, /Transport endpoint is not connected/);

    const second = spawnMount(dataDir, mnt);
    const st = await second.child.status;
    const msg = await second.stderr();
    assert.equal(st.code, 1);
    assert.match(msg, /stale FUSE mount/);
    assert.ok(msg.includes(`umount -l ${mnt}`), msg);
    assert.equal(msg.trim().split("\n").length, 1, msg);

    const third = spawnMount(dataDir, mnt, ["--force-unmount-stale"]);
    try {
      await waitMounted(third, mnt);
      assert.equal(await shOk(`cat '${mnt}/${n.tree}/d/hello'`), "hello\n");
      third.child.kill("SIGTERM");
      assert.equal((await third.child.status).code, 0);
    } finally {
      try {
        third.child.kill("SIGKILL");
      } catch { /* already gone */ }
      await third.child.status;
      await third.stderr();
    }
  });
});

Deno.test({
  name: "fuse cli: a corrupt chunk (pack record) gives EIO for its file only",
  ignore,
}, async () => {
  await withDataDir(async (dataDir, mnt, n) => {
    // Corrupt one chunk of the 3 MB file on disk.
    const blobs = await LocalBlobService.open(dataDir);
    const dirs = await LocalDirectoryService.open(dataDir);
    const infos = await LocalPathInfoService.open(dataDir);
    const { StorePath } = await import("../lib/nix/store_path.ts");
    const info = await infos.get(StorePath.fromBaseName(n.tree).digest);
    const root = await dirs.get(
      info!.entry!.entry.case === "directory"
        ? info!.entry!.entry.value.digest
        : new Uint8Array(),
    );
    const big = root!.files.find((f) =>
      new TextDecoder().decode(f.name) === "big"
    )!;
    const chunks = await blobs.chunks(big.digest);
    assert.ok(
      chunks && chunks.length > 1,
      "the big file should have several chunks",
    );
    // The chunk's stored bytes: a pack record (an import writes packs)
    // or a loose file.
    const at = blobs.locateChunk(chunks[1].digest)!;
    const bytes = await Deno.readFile(at.path);
    const len = at.length < 0 ? bytes.length : at.length;
    bytes[at.offset + (len >> 1)] ^= 0xff;
    await Deno.writeFile(at.path, bytes);
    const r = spawnMount(dataDir, mnt);
    try {
      await waitMounted(r, mnt);
      const bad = await sh(`cat '${mnt}/${n.tree}/big' > /dev/null`);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /Input\/output error/);
      // The start of the file (inside the intact first chunk) still reads;
      // other files are fine.
      assert.ok(chunks[0].size > 65536);
      const head = (f: string) =>
        `dd if='${f}' bs=64K count=1 status=none | sha256sum`;
      assert.equal(
        await shOk(head(`${mnt}/${n.tree}/big`)),
        await shOk(head(`${n.src}/big`)),
      );
      assert.equal(await shOk(`cat '${mnt}/${n.tree}/d/hello'`), "hello\n");
      r.child.kill("SIGTERM");
      assert.equal((await r.child.status).code, 0);
    } finally {
      try {
        r.child.kill("SIGKILL");
      } catch { /* already gone */ }
      await r.child.status;
      await r.stderr();
    }
  });
});

Deno.test(
  { name: "fuse cli: without CAP_SYS_ADMIN a one-line error", ignore },
  async () => {
    await withDataDir(async (dataDir, mnt) => {
      const r = spawnMount(dataDir, mnt, [], [
        "setpriv",
        "--bounding-set=-sys_admin",
        "--",
      ]);
      const st = await r.child.status;
      const msg = await r.stderr();
      assert.equal(st.code, 1);
      assert.match(
        msg,
        /^snix: mounting .* permission denied; mount\(2\) needs root with CAP_SYS_ADMIN\n$/,
      );
      assert.equal(isMounted(mnt), false);
    });
  },
);

/** The bun binary (found through npx once), or undefined if Bun is not available. */
async function bunPath(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("npx", {
      args: ["-y", "bun@1", "-e", "console.log(process.execPath)"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const p = new TextDecoder().decode(out.stdout).trim();
    return out.code === 0 && p ? p : undefined;
  } catch {
    return undefined;
  }
}

Deno.test({
  name: "fuse cli under Bun: serves the data dir, SIGTERM unmounts",
  ignore,
}, async () => {
  const bun = await bunPath();
  if (!bun) {
    console.warn(
      "Bun is not available (npx -y bun@1); skipping the Bun mount test",
    );
    return;
  }
  await withDataDir(async (dataDir, mnt, n) => {
    const r = spawnMount(dataDir, mnt, ["--threads", "2"], [], [bun]);
    try {
      await waitMounted(r, mnt);
      await shOk(`diff -r --no-dereference '${n.src}' '${mnt}/${n.tree}'`);
      r.child.kill("SIGTERM");
      assert.equal((await r.child.status).code, 0, await r.stderr());
      assert.equal(isMounted(mnt), false);
    } finally {
      try {
        r.child.kill("SIGKILL");
      } catch { /* already gone */ }
      await r.child.status;
    }
  });
});
