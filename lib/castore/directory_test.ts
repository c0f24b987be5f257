import assert from "node:assert/strict";
import { create, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Directory,
  DirectorySchema,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { blake3, digestToHex } from "./digest.ts";
import {
  directoryDigest,
  directorySize,
  encodeDirectory,
  validateChildSize,
  validateDirectory,
} from "./directory.ts";
import { b3sum } from "./_test_blob_service.ts";

const te = new TextEncoder();
const b = (s: string) => te.encode(s);
const D0 = new Uint8Array(32);
// BLAKE3 of "" (snix/castore/src/fixtures.rs EMPTY_BLOB_DIGEST; value from
// snix/castore/src/proto/tests/directory.rs, the digest of an empty Directory).
const EMPTY_HEX =
  "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
const EMPTY = Uint8Array.from(
  EMPTY_HEX.match(/../g)!.map((h) => parseInt(h, 16)),
);

function dir(init: MessageInitShape<typeof DirectorySchema>): Directory {
  return create(DirectorySchema, init);
}

// snix/castore/src/fixtures.rs: DIRECTORY_WITH_KEEP (one empty file ".keep").
const WITH_KEEP = () =>
  dir({
    files: [{ name: b(".keep"), digest: EMPTY, size: 0n, executable: false }],
  });

function expectInvalid(d: Directory, re: RegExp) {
  assert.throws(() => validateDirectory(d), (e) => {
    assert.ok(e instanceof ConnectError, String(e));
    assert.equal(e.code, Code.InvalidArgument);
    assert.match(e.rawMessage, re);
    return true;
  });
}

Deno.test("empty directory digest equals snix's value", async () => {
  assert.equal(digestToHex(await directoryDigest(dir({}))), EMPTY_HEX);
  assert.equal(encodeDirectory(dir({})).length, 0);
});

Deno.test("canonical encoding of DIRECTORY_WITH_KEEP, cross-checked with b3sum", async () => {
  // Hand-written protobuf: field 2 (files), len 41: name(1)=".keep", digest(2)=32 bytes;
  // size 0 and executable false are defaults and omitted.
  const expected = new Uint8Array([
    0x12,
    41,
    0x0a,
    5,
    ...b(".keep"),
    0x12,
    32,
    ...EMPTY,
  ]);
  assert.deepEqual(encodeDirectory(WITH_KEEP()), expected);
  assert.equal(
    digestToHex(await directoryDigest(WITH_KEEP())),
    b3sum(expected),
  );
});

Deno.test("field order: directories, files, symlinks; executable and size encoded", async () => {
  const d = dir({
    directories: [{ name: b("d"), digest: D0, size: 2n }],
    files: [{ name: b("f"), digest: D0, size: 300n, executable: true }],
    symlinks: [{ name: b("s"), target: b("t") }],
  });
  const dirEntry = [0x0a, 1, ...b("d"), 0x12, 32, ...D0, 0x18, 2];
  const fileEntry = [
    0x0a,
    1,
    ...b("f"),
    0x12,
    32,
    ...D0,
    0x18,
    0xac,
    0x02,
    0x20,
    1,
  ];
  const symEntry = [0x0a, 1, ...b("s"), 0x12, 1, ...b("t")];
  const expected = new Uint8Array([
    0x0a,
    dirEntry.length,
    ...dirEntry,
    0x12,
    fileEntry.length,
    ...fileEntry,
    0x1a,
    symEntry.length,
    ...symEntry,
  ]);
  assert.deepEqual(encodeDirectory(d), expected);
  assert.equal(digestToHex(await directoryDigest(d)), b3sum(expected));
});

Deno.test("unknown fields are not part of the digest", async () => {
  const canonical = encodeDirectory(WITH_KEEP());
  // append field 15 (varint 7), and an unknown field inside the FileEntry
  const withUnknown = new Uint8Array([...canonical, 0x78, 7]);
  const parsed = fromBinary(DirectorySchema, withUnknown); // keeps $unknown by default
  assert.deepEqual(encodeDirectory(parsed), canonical);
  assert.deepEqual(
    await directoryDigest(parsed),
    await directoryDigest(WITH_KEEP()),
  );
  const inner = new Uint8Array([
    0x12,
    43,
    0x0a,
    5,
    ...b(".keep"),
    0x12,
    32,
    ...EMPTY,
    0x50,
    1,
  ]);
  assert.deepEqual(
    encodeDirectory(fromBinary(DirectorySchema, inner)),
    canonical,
  );
});

Deno.test("directorySize follows snix's node model (2n + sum of child sizes)", () => {
  assert.equal(directorySize(dir({})), 0n);
  assert.equal(directorySize(WITH_KEEP()), 2n);
  assert.equal(
    directorySize(
      dir({ directories: [{ name: b("a"), digest: EMPTY, size: 0n }] }),
    ),
    2n,
  );
  // snix/castore/src/fixtures.rs DIRECTORY_COMPLICATED: keep/ (WITH_KEEP), .keep, aa -> symlink
  const complicated = dir({
    directories: [{ name: b("keep"), digest: D0, size: 2n }],
    files: [{ name: b(".keep"), digest: EMPTY, size: 0n }],
    symlinks: [{ name: b("aa"), target: b("/nix/store/somewhereelse") }],
  });
  assert.equal(directorySize(complicated), 8n);
  validateChildSize(complicated.directories[0], WITH_KEEP());
  assert.throws(
    () => {
      const e = complicated.directories[0];
      e.size = 1n;
      validateChildSize(e, WITH_KEEP());
    },
    /has wrong size 1, expected 2/,
  );
  expectInvalid(
    dir({
      directories: [{ name: b("a"), digest: D0, size: (1n << 64n) - 1n }],
    }),
    /overflows/,
  );
});

Deno.test("valid directories pass", () => {
  validateDirectory(dir({}));
  validateDirectory(dir({
    directories: [{ name: b("A"), digest: D0, size: 0n }, {
      name: b("a"),
      digest: D0,
      size: 0n,
    }],
    files: [{ name: b("a'"), digest: D0, size: 1n }, {
      name: b("b"),
      digest: D0,
    }],
    symlinks: [{ name: b("x".repeat(255)), target: b("y".repeat(4095)) }],
  }));
  // names are bytes: non-UTF-8 is fine
  validateDirectory(
    dir({ files: [{ name: new Uint8Array([0xff, 0xfe]), digest: D0 }] }),
  );
});

Deno.test("invalid names are InvalidArgument", () => {
  const bad: [Uint8Array, RegExp][] = [
    [b(""), /empty name/],
    [b("."), /name is '\.'/],
    [b(".."), /name is '\.\.'/],
    [b("a/b"), /contains '\/'/],
    [new Uint8Array([0x61, 0]), /NUL/],
    [b("x".repeat(256)), /too long \(256 bytes/],
  ];
  for (const [name, re] of bad) {
    expectInvalid(dir({ directories: [{ name, digest: D0 }] }), re);
    expectInvalid(dir({ files: [{ name, digest: D0 }] }), re);
    expectInvalid(dir({ symlinks: [{ name, target: b("t") }] }), re);
  }
});

Deno.test("unsorted and duplicate entries are InvalidArgument", () => {
  expectInvalid(
    dir({
      files: [{ name: b("b"), digest: D0 }, { name: b("a"), digest: D0 }],
    }),
    /file entries not sorted: "a" comes after "b"/,
  );
  expectInvalid(
    dir({
      directories: [{ name: b("b"), digest: D0 }, { name: b("B"), digest: D0 }],
    }),
    /not sorted/,
  );
  expectInvalid(
    dir({
      symlinks: [{ name: b("a"), target: b("t") }, {
        name: b("a"),
        target: b("u"),
      }],
    }),
    /duplicate name "a" in symlink entries/,
  );
  expectInvalid(
    dir({
      directories: [{ name: b("a"), digest: D0 }],
      files: [{ name: b("a"), digest: D0 }],
    }),
    /duplicate name "a" across entry lists/,
  );
  expectInvalid(
    dir({
      files: [{ name: b("x"), digest: D0 }],
      symlinks: [{ name: b("b"), target: b("t") }, {
        name: b("x"),
        target: b("t"),
      }],
    }),
    /duplicate name "x" across/,
  );
});

Deno.test("bad digests and symlink targets are InvalidArgument", () => {
  for (const n of [0, 31, 33]) {
    expectInvalid(
      dir({ directories: [{ name: b("a"), digest: new Uint8Array(n) }] }),
      new RegExp(`directory "a": invalid digest length ${n}, expected 32`),
    );
    expectInvalid(
      dir({ files: [{ name: b("a"), digest: new Uint8Array(n) }] }),
      new RegExp(`file "a": invalid digest length ${n}`),
    );
  }
  expectInvalid(
    dir({ symlinks: [{ name: b("a"), target: b("") }] }),
    /empty symlink target/,
  );
  expectInvalid(
    dir({
      symlinks: [{ name: b("a"), target: new Uint8Array([0x61, 0, 0x62]) }],
    }),
    /symlink target contains a NUL/,
  );
  expectInvalid(
    dir({ symlinks: [{ name: b("a"), target: b("y".repeat(4096)) }] }),
    /symlink target too long \(4096 bytes/,
  );
});

Deno.test("the empty directory digest equals BLAKE3 of nothing", async () => {
  assert.deepEqual(
    await directoryDigest(dir({})),
    await blake3(new Uint8Array()),
  );
});
