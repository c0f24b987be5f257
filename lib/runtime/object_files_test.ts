import assert from "node:assert/strict";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nodeObjectFiles, objectFiles } from "./object_files.ts";

for (
  const [name, files] of [["runtime", objectFiles], [
    "node:fs",
    nodeObjectFiles,
  ]] as const
) {
  Deno.test(`object files (${name}): whole files, undefined when missing, errors otherwise`, async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), "snix-objfiles-"));
    try {
      const path = join(dir, "obj");
      const bytes = new Uint8Array(300_000).map((_, i) => (i * 7) & 255);
      fs.writeFileSync(path, bytes);
      assert.deepEqual(files.readSync(path), bytes);
      assert.deepEqual(await files.read(path), bytes);
      fs.writeFileSync(join(dir, "empty"), new Uint8Array(0));
      assert.equal((await files.read(join(dir, "empty")))?.length, 0);
      assert.equal(files.readSync(join(dir, "missing")), undefined);
      assert.equal(await files.read(join(dir, "missing")), undefined);
      assert.throws(() => files.readSync(dir));
      await assert.rejects(files.read(dir));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
