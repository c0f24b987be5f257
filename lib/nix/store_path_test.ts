import assert from "node:assert/strict";
import fc from "fast-check";
import {
  makeFixedOutputPath,
  makeSourcePath,
  makeTextPath,
  STORE_DIR,
  StorePath,
  validateStorePathName,
} from "./store_path.ts";
import { decodeBase16, makeHash, sha256 } from "./hash.ts";
import { createHash } from "node:crypto";
import { concatBytes } from "./bytes.ts";

const HASH = "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q";

Deno.test("StorePath: parse and print", () => {
  const p = StorePath.parse(`/nix/store/${HASH}-foo-1.0`);
  assert.equal(p.name, "foo-1.0");
  assert.equal(p.hashPart, HASH);
  assert.equal(p.baseName, `${HASH}-foo-1.0`);
  assert.equal(p.toString(), `${STORE_DIR}/${HASH}-foo-1.0`);
  assert.equal(p.digest.length, 20);
  assert.ok(StorePath.fromBaseName(p.baseName).equals(p));
  assert.equal(new StorePath(p.digest, p.name).toString(), p.toString());
});

Deno.test("StorePath: rejects invalid paths with clear messages", () => {
  const bad: [string, RegExp][] = [
    [`/nix/store/${HASH}`, /too short/],
    [`/nix/store/${HASH}-`, /too short/],
    [`/nix/store/${HASH}_foo`, /not followed by '-'/],
    [`/nix/store/${HASH.slice(0, 31)}e-foo`, /invalid nix32/],
    [`/nix/store/${HASH.toUpperCase()}-foo`, /invalid nix32/],
    [`/nix/store/${HASH}-foo bar`, /illegal character " "/],
    [`/nix/store/${HASH}-foo/bin`, /not a top-level/],
    [`/tmp/${HASH}-foo`, /not in the Nix store/],
    [`/nix/store/${HASH}-.`, /not valid/],
    [`/nix/store/${HASH}-..`, /not valid/],
    [`/nix/store/${HASH}-.-x`, /not valid/],
    [`/nix/store/${HASH}-${"a".repeat(212)}`, /longer than 211/],
  ];
  for (const [s, re] of bad) assert.throws(() => StorePath.parse(s), re, s);
  StorePath.parse(`/nix/store/${HASH}-${"a".repeat(211)}`);
  StorePath.parse(`/nix/store/${HASH}-.foo`);
  StorePath.parse(`/nix/store/${HASH}-+-._?=AZaz09`);
});

Deno.test("validateStorePathName", () => {
  validateStorePathName("hello-2.12");
  assert.throws(() => validateStorePathName(""), /empty/);
  assert.throws(() => validateStorePathName("a/b"), /illegal/);
  assert.throws(() => validateStorePathName("caf\u00e9"), /illegal/);
});

// Text paths: `builtins.toFile "foo" "bar"` and
// `builtins.toFile "baz" "${builtins.toFile "foo" "bar"}"`, values printed by
// Nix 2.8 (`nix eval --raw`), also used in snix's store_path/utils.rs tests.
Deno.test("makeTextPath: matches builtins.toFile", () => {
  const foo = makeTextPath(sha256("bar"), "foo");
  assert.equal(
    foo.toString(),
    "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo",
  );
  const baz = makeTextPath(sha256(foo.toString()), "baz", [foo]);
  assert.equal(
    baz.toString(),
    "/nix/store/5xd714cbfnkz02h2vbsj4fm03x3f15nf-baz",
  );
});

// A file `foo` containing "bar": results printed by Nix 2.8 for
// `nix-store --add`, `--add-fixed sha256`, `--add-fixed sha1`,
// `--add-fixed --recursive sha1`; NAR sha256 from `nix-store --dump | sha256sum`.
Deno.test("makeSourcePath / makeFixedOutputPath: match nix-store --add(-fixed)", () => {
  const nar = decodeBase16(
    "bfdf43b4bef0636de9a334222aae292bbe911fc1fb3b8915f36ab7d97465cff6",
  );
  assert.equal(
    makeSourcePath(nar, "foo").toString(),
    "/nix/store/dxwkwjzdaq7ka55pkk252gh32bgpmql4-foo",
  );
  assert.equal(
    makeFixedOutputPath("foo", makeHash("sha256", nar), true).toString(),
    "/nix/store/dxwkwjzdaq7ka55pkk252gh32bgpmql4-foo",
  );
  assert.equal(
    makeFixedOutputPath("foo", makeHash("sha256", sha256("bar")), false)
      .toString(),
    "/nix/store/mk161j17xxwjx6dxs4ckib4lrfdxi4d8-foo",
  );
  const sha1 = (b: string | Uint8Array) =>
    new Uint8Array(createHash("sha1").update(b).digest());
  assert.equal(
    makeFixedOutputPath("foo", makeHash("sha1", sha1("bar")), false).toString(),
    "/nix/store/xw97k337gykargrvkpr1pxbrlb62byp8-foo",
  );
  // The NAR of the file, rebuilt by hand: 13 + ... tokens, to get its sha1.
  const narBytes = narOfFlatFile(new TextEncoder().encode("bar"));
  assert.deepEqual(sha256(narBytes), nar);
  assert.equal(
    makeFixedOutputPath("foo", makeHash("sha1", sha1(narBytes)), true)
      .toString(),
    "/nix/store/izpzz37zg5i1rdf6n55wj0mh4pyh8pcf-foo",
  );
  assert.throws(
    () =>
      makeFixedOutputPath("foo", makeHash("sha1", sha1("x")), false, [
        StorePath.parse(`/nix/store/${HASH}-x`),
      ]),
    /references/,
  );
});

Deno.test("makeSourcePath: references are sorted and deduplicated, self appended", () => {
  const a = StorePath.parse(`/nix/store/${"0".repeat(32)}-a`);
  const b = StorePath.parse(`/nix/store/${"1".repeat(32)}-b`);
  const d = sha256("x");
  assert.ok(
    makeSourcePath(d, "n", [b, a]).equals(makeSourcePath(d, "n", [a, b, a])),
  );
  assert.ok(
    !makeSourcePath(d, "n", [a]).equals(makeSourcePath(d, "n", [a], true)),
  );
  assert.ok(!makeSourcePath(d, "n").equals(makeSourcePath(d, "n", [a])));
});

Deno.test("StorePath: property round trip of digest + name", () => {
  const nameChar = fc.constantFrom(..."abcXYZ019+-._?=".split(""));
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 20, maxLength: 20 }),
      fc.string({ unit: nameChar, minLength: 1, maxLength: 40 }).filter((n) =>
        n !== "." && n !== ".." && !n.startsWith(".-") && !n.startsWith("..-")
      ),
      (digest, name) => {
        const p = new StorePath(digest, name);
        const q = StorePath.parse(p.toString());
        assert.deepEqual(q.digest, digest);
        assert.equal(q.name, name);
      },
    ),
  );
});

function narOfFlatFile(contents: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  const str = (s: string | Uint8Array) => {
    const b = typeof s === "string" ? new TextEncoder().encode(s) : s;
    const len = new Uint8Array(8);
    new DataView(len.buffer).setUint32(0, b.length, true);
    parts.push(len, b, new Uint8Array((8 - (b.length % 8)) % 8));
  };
  for (const t of ["nix-archive-1", "(", "type", "regular", "contents"]) str(t);
  str(contents);
  str(")");
  return concatBytes(parts);
}
