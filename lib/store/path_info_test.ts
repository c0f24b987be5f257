import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EntrySchema } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import { StorePath } from "../nix/store_path.ts";
import {
  caToString,
  fromNixPathInfo,
  makePathInfo,
  parseCa,
  pathInfoFromNarInfoText,
  pathInfoToNarInfoText,
  toNixPathInfo,
  validatePathInfo,
} from "./path_info.ts";
import { MemoryPathInfoService } from "./memory_path_info_service.ts";
import { LocalPathInfoService } from "./local_path_info_service.ts";
import type { PathInfoService } from "./path_info_service.ts";

const A = StorePath.parse("/nix/store/0mzfq2hgbcn68yjy6sj42ra4pfwcdj0p-a");
const B = StorePath.parse("/nix/store/00000000000000000000000000000000-b");
const C = StorePath.parse("/nix/store/11111111111111111111111111111111-c");
const fileEntry = create(EntrySchema, {
  entry: {
    case: "file",
    value: {
      name: new TextEncoder().encode("x"),
      digest: new Uint8Array(32).fill(7),
      size: 3n,
    },
  },
});

function info(sp: StorePath, refs: StorePath[] = []): PathInfo {
  return makePathInfo({
    entry: fileEntry,
    storePath: sp,
    narSize: 512,
    narSha256: new Uint8Array(32).fill(1),
    references: refs,
    ca: "fixed:r:sha256:07ikzqm5lc9wd9lr5qrdmapjcs1sbj57cn3wpm8v2x7a0k8a4z6g",
    signatures: ["test1:" + btoa("x".repeat(64))],
  });
}

Deno.test("path info: validation rejects each bad field", () => {
  assert.equal(validatePathInfo(info(A, [B])).toString(), A.toString());
  const bad: [string, (i: PathInfo) => void][] = [
    ["no entry", (i) => (i.entry = undefined)],
    [
      "entry name",
      (i) => (i.entry!.entry.value!.name = new TextEncoder().encode("nope")),
    ],
    ["reference 0", (i) => (i.references[0] = new Uint8Array(19))],
    ["reference names", (i) => (i.narinfo!.referenceNames = [])],
    [
      "does not match reference",
      (i) => (i.narinfo!.referenceNames = [C.baseName]),
    ],
    ["nar_sha256", (i) => (i.narinfo!.narSha256 = new Uint8Array(20))],
    ["no narinfo", (i) => (i.narinfo = undefined)],
  ];
  for (const [msg, mutate] of bad) {
    const i = info(A, [B]);
    mutate(i);
    assert.throws(
      () => validatePathInfo(i),
      (e) => e instanceof ConnectError && e.message.includes(msg),
      msg,
    );
  }
  assert.throws(
    () => validatePathInfo(info(A), B.digest),
    /does not match the key/,
  );
});

Deno.test("path info: CA strings and ValidPathInfo round trip", () => {
  for (
    const s of [
      "fixed:r:sha256:07ikzqm5lc9wd9lr5qrdmapjcs1sbj57cn3wpm8v2x7a0k8a4z6g",
      "fixed:sha1:0000000000000000000000000000000p",
      "text:sha256:07ikzqm5lc9wd9lr5qrdmapjcs1sbj57cn3wpm8v2x7a0k8a4z6g",
    ]
  ) assert.equal(caToString(parseCa(s)), s);
  assert.throws(() => parseCa("foo:sha256:abc"), /must start with/);
  const nix = toNixPathInfo(info(A, [C, B]));
  assert.deepEqual(nix.references.map(String), [B.toString(), C.toString()]);
  assert.equal(nix.narSize, 512);
  assert.equal(nix.sigs.length, 1);
  const back = fromNixPathInfo(nix, fileEntry);
  assert.deepEqual(toNixPathInfo(back), nix);
});

async function exercise(svc: PathInfoService) {
  assert.equal(await svc.get(A.digest), undefined);
  await svc.put(info(A, [B]));
  await svc.put(info(C, [B, A]));
  await svc.put(info(B));
  const got = await svc.get(A.digest);
  assert.equal(validatePathInfo(got!).toString(), A.toString());
  const all = [];
  for await (const i of svc.list()) all.push(validatePathInfo(i).baseName);
  assert.deepEqual(all.sort(), [A.baseName, B.baseName, C.baseName].sort());
  const refs = [];
  for await (const i of svc.referrers!(B.digest)) {
    refs.push(validatePathInfo(i).baseName);
  }
  assert.deepEqual(refs.sort(), [A.baseName, C.baseName].sort());
  // replace C without references: it no longer refers to B
  await svc.put(info(C));
  const refs2 = [];
  for await (const i of svc.referrers!(B.digest)) {
    refs2.push(validatePathInfo(i).baseName);
  }
  assert.deepEqual(refs2, [A.baseName]);
  await assert.rejects(svc.get(new Uint8Array(3)), /20 bytes/);
  const i = info(A);
  i.narinfo!.narSha256 = new Uint8Array(1);
  await assert.rejects(svc.put(i), /nar_sha256/);
}

Deno.test("path info: memory service", async () => {
  await exercise(new MemoryPathInfoService());
});

Deno.test("path info: local service, corrupt record, unwritable dir", async () => {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-pi-"));
  try {
    const svc = await LocalPathInfoService.open(dir);
    await exercise(svc);
    // reopen sees the same data
    const again = await LocalPathInfoService.open(dir);
    assert.ok(await again.get(C.digest));
    await fsp.writeFile(
      svc.pathOf(A.hashPart),
      new Uint8Array([0xff, 0xff, 0xff]),
    );
    await assert.rejects(svc.get(A.digest), /corrupt/);
    // a record stored under the wrong key
    await fsp.copyFile(svc.pathOf(B.hashPart), svc.pathOf(A.hashPart));
    await assert.rejects(svc.get(A.digest), /corrupt.*describes/);
    await fsp.writeFile(join(dir, "file"), "x");
    await assert.rejects(
      LocalPathInfoService.open(join(dir, "file")),
      /data directory .*\/file is not a directory/,
    );
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("path info: narinfo text round trip", () => {
  const i = info(A, [C, B]);
  const text = pathInfoToNarInfoText(i);
  assert.match(
    text,
    /^StorePath: \/nix\/store\/0mzfq2hgbcn68yjy6sj42ra4pfwcdj0p-a\nURL: nar\/.*\.nar\nCompression: none\n/,
  );
  assert.match(text, new RegExp(`References: ${B.baseName} ${C.baseName}\n`));
  assert.match(
    text,
    /\nCA: fixed:r:sha256:07ikzqm5lc9wd9lr5qrdmapjcs1sbj57cn3wpm8v2x7a0k8a4z6g\n/,
  );
  const back = pathInfoFromNarInfoText(text, fileEntry);
  assert.deepEqual(toNixPathInfo(back), toNixPathInfo(i));
  assert.throws(
    () => pathInfoFromNarInfoText("garbage\n", fileEntry),
    /narinfo/,
  );
});
