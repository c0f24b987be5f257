import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import { Code } from "@connectrpc/connect";
import { LocalDirectoryService } from "./local_directory_service.ts";
import { tempDir } from "./_test_blob_service.ts";
import {
  directoryServiceCases,
  fixtures,
  rejectsWith,
} from "./_test_directory_service.ts";
import { directoryDigestSync, encodeDirectory } from "./directory.ts";
import { digestToString } from "./digest.ts";

directoryServiceCases("LocalDirectoryService", async () => {
  const dir = await tempDir("castore-dir-");
  return {
    svc: await LocalDirectoryService.open(dir),
    cleanup: () => fs.rm(dir, { recursive: true, force: true }),
  };
});

Deno.test("LocalDirectoryService: persists, lists, and detects corruption as DataLoss", async () => {
  const dir = await tempDir("castore-dir-");
  try {
    const { A, B, KEEP, COMPLICATED } = fixtures();
    const svc = await LocalDirectoryService.open(dir);
    const p = svc.put();
    for (const d of [A, B, KEEP, COMPLICATED]) await p.put(d);
    await rejectsWith(p.close(), Code.InvalidArgument, /not reachable/);
    const p2 = svc.put();
    for (const d of [KEEP, COMPLICATED]) await p2.put(d);
    const root = await p2.close();
    // canonical bytes on disk
    assert.deepEqual(
      new Uint8Array(await fs.readFile(svc.directoryPath(root))),
      encodeDirectory(COMPLICATED),
    );
    const svc2 = await LocalDirectoryService.open(dir);
    const listed: string[] = [];
    for await (const d of svc2.listDirectories()) {
      listed.push(digestToString(d));
    }
    assert.deepEqual(
      listed.sort(),
      [KEEP, COMPLICATED].map((d) => digestToString(directoryDigestSync(d)))
        .sort(),
    );
    let n = 0;
    for await (const _ of svc2.getRecursive(root)) n++;
    assert.equal(n, 2);
    // flip a byte of the child: get and getRecursive report DataLoss naming it
    const kd = directoryDigestSync(KEEP);
    const path = svc2.directoryPath(kd);
    const bytes = await fs.readFile(path);
    bytes[3] ^= 1;
    await fs.writeFile(path, bytes);
    const svc3 = await LocalDirectoryService.open(dir);
    const name = digestToString(kd).replace(/[+/=]/g, "\\$&");
    await rejectsWith(
      svc3.get(kd),
      Code.DataLoss,
      new RegExp(`directory ${name} is corrupt`),
    );
    await rejectsWith(
      (async () => {
        for await (const _ of svc3.getRecursive(root)) { /* drain */ }
      })(),
      Code.DataLoss,
      new RegExp(name),
    );
    // a missing child is DataLoss too
    await fs.rm(path);
    const svc4 = await LocalDirectoryService.open(dir);
    await rejectsWith(
      (async () => {
        for await (const _ of svc4.getRecursive(root)) { /* drain */ }
      })(),
      Code.DataLoss,
      /referenced but missing/,
    );
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("LocalDirectoryService: open error names the path", async () => {
  await assert.rejects(
    LocalDirectoryService.open("/proc/self/nope"),
    /^Error: cannot write to \/proc\/self\/nope: .* \(use --data-dir DIR or run as root\)$/,
  );
});
