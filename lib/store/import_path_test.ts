import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBlobService } from "../castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../castore/memory_directory_service.ts";
import { renderNar } from "../castore/render_nar.ts";
import { ingestTree } from "../castore/ingest_tree.ts";
import { encodeNixBase32 } from "../nix/nixbase32.ts";
import { MemoryPathInfoService } from "./memory_path_info_service.ts";
import { importPath } from "./import_path.ts";
import { calculateNar, hashNar } from "./nar_calculation.ts";
import { caToString, pathInfoStorePath } from "./path_info.ts";

async function makeTree(root: string): Promise<void> {
  await fsp.mkdir(join(root, "sub/empty"), { recursive: true });
  await fsp.writeFile(join(root, "a.txt"), "hello\n");
  await fsp.writeFile(join(root, "empty"), "");
  await fsp.writeFile(join(root, "sub/run.sh"), "#!/bin/sh\necho hi\n", {
    mode: 0o755,
  });
  await fsp.writeFile(
    join(root, "sub/big"),
    new Uint8Array(3 << 20).map((_, i) => (i * 7) & 0xff),
  );
  await fsp.symlink("../a.txt", join(root, "sub/link"));
  await fsp.writeFile(join(root, "B"), "upper sorts first");
}

Deno.test("import: same store path, NAR and CA as nix-store --add; render equals nix-store --dump", async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-imp-"));
  try {
    const src = join(dir, "src");
    await fsp.mkdir(src);
    await makeTree(src);
    const services = {
      blobs: new MemoryBlobService(),
      directories: new MemoryDirectoryService(),
      pathInfos: new MemoryPathInfoService(),
    };
    const info = await importPath(src, "src", services);
    const nixPath = execFileSync("nix-store", [
      "--store",
      join(dir, "nix"),
      "--add",
      src,
    ], { encoding: "utf8" }).trim();
    assert.equal(pathInfoStorePath(info).toString(), nixPath);
    const dump = execFileSync("nix-store", ["--dump", src], {
      maxBuffer: 64 << 20,
    });
    const want = await hashNar(new Blob([dump]).stream());
    assert.equal(Number(info.narinfo!.narSize), dump.length);
    assert.deepEqual(info.narinfo!.narSha256, want.narSha256);
    assert.equal(
      caToString(info.narinfo!.ca!),
      `fixed:r:sha256:${encodeNixBase32(want.narSha256)}`,
    );
    const rendered = new Uint8Array(
      await new Response(
        renderNar(info.entry!, services.blobs, services.directories),
      ).arrayBuffer(),
    );
    assert.ok(
      Buffer.from(rendered).equals(dump),
      "rendered NAR differs from nix-store --dump",
    );
    // calculateNar without the cache
    const e2 = await ingestTree(src, services.blobs, services.directories);
    const calc = await calculateNar(e2, services.blobs, services.directories);
    assert.deepEqual(calc.narSha256, want.narSha256);
    // single file and symlink roots
    for (const p of ["a.txt", "sub/run.sh", "sub/link"]) {
      const i = await importPath(join(src, p), "x", services);
      const d = execFileSync("nix-store", ["--dump", join(src, p)]);
      const r = new Uint8Array(
        await new Response(
          renderNar(i.entry!, services.blobs, services.directories),
        ).arrayBuffer(),
      );
      assert.ok(Buffer.from(r).equals(d), p);
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
