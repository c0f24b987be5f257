import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EntrySchema } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import { MemoryBlobService } from "../castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../castore/memory_directory_service.ts";
import { makeSourcePath } from "../nix/store_path.ts";
import { MemoryPathInfoService } from "./memory_path_info_service.ts";
import { importPath } from "./import_path.ts";
import { makePathInfo } from "./path_info.ts";
import { verifyStore } from "./verify.ts";

Deno.test("verify: clean store, then a wrong NAR hash, a missing directory and a missing blob", async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-verify-"));
  try {
    await fsp.mkdir(join(dir, "src/sub"), { recursive: true });
    await fsp.writeFile(join(dir, "src/sub/f"), "contents\n");
    const s = {
      blobs: new MemoryBlobService(),
      directories: new MemoryDirectoryService(),
      pathInfos: new MemoryPathInfoService(),
    };
    const good = await importPath(join(dir, "src"), "src", s);
    let r = await verifyStore(s);
    assert.deepEqual(r.problems, []);
    assert.equal(r.paths, 1);

    const wrongHash = makePathInfo({
      entry: good.entry!,
      storePath: makeSourcePath(new Uint8Array(32).fill(9), "wrong-hash"),
      narSize: good.narinfo!.narSize,
      narSha256: new Uint8Array(32).fill(9),
    });
    const missingDir = makePathInfo({
      entry: create(EntrySchema, {
        entry: {
          case: "directory",
          value: {
            name: new Uint8Array(),
            digest: new Uint8Array(32).fill(1),
            size: 2n,
          },
        },
      }),
      storePath: makeSourcePath(new Uint8Array(32).fill(1), "missing-dir"),
      narSize: 1,
      narSha256: new Uint8Array(32),
    });
    const missingBlob = makePathInfo({
      entry: create(EntrySchema, {
        entry: {
          case: "file",
          value: {
            name: new Uint8Array(),
            digest: new Uint8Array(32).fill(2),
            size: 5n,
          },
        },
      }),
      storePath: makeSourcePath(new Uint8Array(32).fill(2), "missing-blob"),
      narSize: 1,
      narSha256: new Uint8Array(32),
    });
    for (const i of [wrongHash, missingDir, missingBlob]) {
      await s.pathInfos.put(i);
    }
    r = await verifyStore(s);
    const lines = r.problems.map((p) => `${p.id}: ${p.message}`).sort();
    assert.equal(lines.length, 3, lines.join("\n"));
    assert.match(
      lines.find((l) => l.includes("wrong-hash"))!,
      /NAR hash is sha256:\S+, recorded sha256:\S+/,
    );
    assert.match(
      lines.find((l) => l.includes("missing-dir"))!,
      /directory blake3-\S+ is missing/,
    );
    assert.match(
      lines.find((l) => l.includes("missing-blob"))!,
      /blob blake3-\S+ is missing/,
    );
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
