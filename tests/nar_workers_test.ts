/**
 * NARs of the local store written by the NAR workers
 * (lib/castore/nar_to_fd.ts), end to end: `snix store export` (a separate
 * process writing to a pipe) and the nix-daemon's NarFromPath (to the
 * client's socket) give exactly what `nix-store --dump` gives for a tree of
 * big files of several chunks and many small ones; `export | head -c 1000`
 * ends quietly with status 0; a damaged chunk in the middle ends the export
 * with status 1 and one line naming the chunk, and ends only that daemon
 * connection (the daemon goes on serving others, also after a client that
 * vanished mid-NAR). Skipped without the native BLAKE3 addon (no workers).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nativeBlake3 } from "../lib/castore/blake3_native.ts";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import { LocalPathInfoService } from "../lib/store/local_path_info_service.ts";
import {
  flipStoredByte,
  pseudoRandom,
} from "../lib/castore/_test_blob_service.ts";
import { digestToString } from "../lib/castore/digest.ts";
import { closeNarWorkers } from "../lib/castore/nar_to_fd.ts";
import { DaemonClient } from "../lib/daemon/client.ts";
import { listenUnix } from "../lib/daemon/server.ts";
import { StorePath } from "../lib/nix/store_path.ts";
import { concatBytes } from "../lib/nix/bytes.ts";
import { Op } from "../lib/wire/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.execPath();
const SNIX = `'${DENO}' run -A --quiet '${ROOT}cli/main.ts'`;

function sh(script: string): { code: number; out: Uint8Array; err: string } {
  const r = new Deno.Command("bash", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).outputSync();
  return {
    code: r.code,
    out: r.stdout,
    err: new TextDecoder().decode(r.stderr),
  };
}

/** ~9 MB: big files of several chunks, 600 small files, odd entries. */
function makeTree(dir: string): void {
  fs.mkdirSync(join(dir, "d/e"), { recursive: true });
  fs.writeFileSync(join(dir, "big"), pseudoRandom(6_000_000, 3));
  fs.writeFileSync(
    join(dir, "d/text"),
    new TextEncoder().encode("a line of text\n".repeat(150_000)),
  );
  for (let i = 0; i < 600; i++) {
    const sub = ["", "d", "d/e"][i % 3];
    fs.writeFileSync(join(dir, sub, `s${i}`), pseudoRandom(i * 13, i + 1));
  }
  fs.writeFileSync(join(dir, "d/x"), "#!/bin/sh\n");
  fs.chmodSync(join(dir, "d/x"), 0o755);
  fs.symlinkSync("../big", join(dir, "d/link"));
}

async function narFrom(
  sock: string,
  path: string,
  size: number,
  stopAfter = Infinity,
): Promise<Uint8Array> {
  const c = await DaemonClient.connect(sock, 34);
  const parts: Uint8Array[] = [];
  let got = 0;
  try {
    await c.call(Op.NarFromPath, (w) => w.string(path));
    while (got < size && got < stopAfter) {
      const piece = await c.r.readSome(size - got);
      if (!piece) break;
      parts.push(piece.slice());
      got += piece.length;
    }
  } catch {
    // cut short: what came so far
  } finally {
    c.close();
  }
  return concatBytes(parts);
}

Deno.test({
  name:
    "nar workers: store export and NarFromPath equal nix-store --dump; head -c quiet; a damaged chunk ends the export (status 1, digest named) and only its daemon connection",
  ignore: nativeBlake3 === undefined,
  fn: async () => {
    const tmp = fs.mkdtempSync(join(tmpdir(), "snix-nar-workers-"));
    const data = join(tmp, "data");
    const src = join(tmp, "src");
    try {
      makeTree(src);
      const want = new Uint8Array(execFileSync("nix-store", ["--dump", src], {
        maxBuffer: 1 << 30,
      }));
      const imp = sh(`${SNIX} --data-dir '${data}' store import '${src}'`);
      assert.equal(imp.code, 0, imp.err);
      const path = new TextDecoder().decode(imp.out).trim();

      // store export, through a pipe
      const exp = sh(`${SNIX} --data-dir '${data}' store export ${path} | cat`);
      assert.equal(exp.code, 0, exp.err);
      assert.equal(exp.err, "");
      assert.deepEqual(exp.out, want, "export equals nix-store --dump");
      const head = sh(
        `${SNIX} --data-dir '${data}' store export ${path} | head -c 1000 | wc -c; echo "\${PIPESTATUS[0]}"`,
      );
      assert.equal(new TextDecoder().decode(head.out), "1000\n0\n");
      assert.equal(head.err, "");

      // NarFromPath from an in-process daemon over the same data directory
      const services = {
        blobs: await LocalBlobService.open(data),
        directories: await LocalDirectoryService.open(data),
        pathInfos: await LocalPathInfoService.open(data),
      };
      const logs: string[] = [];
      const wire: string[] = [];
      const sock = join(tmp, "sock");
      const daemon = await listenUnix(sock, {
        services,
        daemonVersion: "test",
        log: (l) => void logs.push(l),
        logWire: (l) => void wire.push(l),
      });
      try {
        const two = await Promise.all([
          narFrom(sock, path, want.length),
          narFrom(sock, path, want.length),
        ]);
        assert.deepEqual(two[0], want, "NarFromPath (first client)");
        assert.deepEqual(two[1], want, "NarFromPath (second client)");
        assert.ok(
          wire.some((l) => /NarFromPath .*workers=true/.test(l)),
          "one of them from the NAR workers",
        );
        // A client that goes away mid-NAR ends its connection only.
        await narFrom(sock, path, want.length, 100_000);
        assert.deepEqual(await narFrom(sock, path, want.length), want);

        // Damage a chunk in the middle of the big file.
        const info = await services.pathInfos.get(
          StorePath.parse(path).digest,
        );
        const root = await services.directories.get(
          (info!.entry!.entry.value as { digest: Uint8Array }).digest,
        );
        const big = root!.files.find((f) =>
          new TextDecoder().decode(f.name) === "big"
        )!;
        const chunks = services.blobs.chunkList(big.digest)!.chunks;
        assert.ok(chunks.length >= 3);
        const bad = chunks[chunks.length >> 1].digest;
        flipStoredByte(services.blobs.locateChunk(bad)!);
        const name = digestToString(bad);

        const broken = sh(`${SNIX} --data-dir '${data}' store export ${path}`);
        assert.equal(broken.code, 1);
        assert.match(broken.err, /^snix: [^\n]*\n$/, "one line");
        assert.ok(broken.err.includes(name), broken.err);
        assert.ok(broken.out.length < want.length);
        assert.deepEqual(broken.out, want.subarray(0, broken.out.length));

        logs.length = 0;
        const cut = await narFrom(sock, path, want.length);
        assert.ok(cut.length < want.length, "cut short");
        assert.deepEqual(cut, want.subarray(0, cut.length));
        assert.ok(logs.some((l) => l.includes(name)), logs.join("\n"));
        const c = await DaemonClient.connect(sock, 34);
        assert.equal(await c.isValidPath(path), true, "still serving");
        c.close();
      } finally {
        await daemon.close();
        await closeNarWorkers();
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
});
