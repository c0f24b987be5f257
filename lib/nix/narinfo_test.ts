import assert from "node:assert/strict";
import {
  NarInfoError,
  narInfoFingerprint,
  parseNarInfo,
  printNarInfo,
} from "./narinfo.ts";
import { PublicKey, SecretKey, verifyAny } from "./signature.ts";

// Written by Nix 2.8: `nix store sign --key-file sk` then
// `nix copy --to file:///tmp/cache` of `builtins.toFile "baz" "${builtins.toFile "foo" "bar"}"`.
// The key pair came from `nix-store --generate-binary-cache-key test-key-1 sk pk` (a throwaway test key).
const BAZ = `StorePath: /nix/store/5xd714cbfnkz02h2vbsj4fm03x3f15nf-baz
URL: nar/0zgj2sjpv96pb06i48m1mq7srg0syn605wlapckvlf618j29y2rr.nar.xz
Compression: xz
FileHash: sha256:0zgj2sjpv96pb06i48m1mq7srg0syn605wlapckvlf618j29y2rr
FileSize: 172
NarHash: sha256:0m29vxh7maf5ml5dyq7vy0ah53zah45pvy8yk5y8la4nnla95gfi
NarSize: 160
References: vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo
Sig: test-key-1:R2bG1Rkx899SJC4unAZ9OAXzZOBI2gieh1ZusXlOmyyr0CAJo3z+T3v5n9/dsFvkajFuvoNR+mbaIWSx3fagCQ==
CA: text:sha256:190k5ph58syggimih0bad4nbgklmzwbha6n5d9x66yprq3c9immw
`;
const FILE = `StorePath: /nix/store/j0dx1a1i4sfqybw328cd04r27x2nxxpy-f
URL: nar/16vjvz80i72f0s14hg38b89crfrrh6wq4ac1j1p76sy0drv9cfcx.nar.xz
Compression: xz
FileHash: sha256:16vjvz80i72f0s14hg38b89crfrrh6wq4ac1j1p76sy0drv9cfcx
FileSize: 136
NarHash: sha256:0b040g5b6h5n6sgv1sj7mg2r0y7qmsks4cxk1v6qln61yl2aabma
NarSize: 128
References: 
Sig: test-key-1:ebOOFiPa7wri3gm9IDn6DLQ0gM+845Gs7oi8M/tXid3whi7Rwjz/H/Kq6Na/Vvep5FU+l4A9jbh1ooVfS60CCw==
CA: fixed:r:sha256:0b040g5b6h5n6sgv1sj7mg2r0y7qmsks4cxk1v6qln61yl2aabma
`;
const SK =
  "test-key-1:e9gTiAKbJuUgo4amD+jXLLp1dqrTI3votOIxy2dD3qkq6t1b2Jo/9W0vsBRzkCu2zcCIIyVPfwKNMhT+b9qmSA==";
const PK = "test-key-1:KurdW9iaP/VtL7AUc5Arts3AiCMlT38CjTIU/m/apkg=";

Deno.test("narinfo: Nix's files parse and print back byte for byte", () => {
  for (const text of [BAZ, FILE]) {
    const info = parseNarInfo(text);
    assert.equal(printNarInfo(info), text);
  }
  const baz = parseNarInfo(BAZ);
  assert.equal(baz.storePath.name, "baz");
  assert.equal(baz.narSize, 160);
  assert.equal(
    baz.references[0].toString(),
    "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo",
  );
  assert.equal(baz.compression, "xz");
  assert.equal(baz.fileSize, 172);
  assert.equal(
    baz.ca,
    "text:sha256:190k5ph58syggimih0bad4nbgklmzwbha6n5d9x66yprq3c9immw",
  );
});

Deno.test("narinfo: fingerprint and Nix's signatures verify; ours are identical (ed25519 is deterministic)", () => {
  const sk = SecretKey.parse(SK);
  const pk = PublicKey.parse(PK);
  assert.equal(sk.publicKey().toString(), PK);
  for (const text of [BAZ, FILE]) {
    const info = parseNarInfo(text);
    const fp = narInfoFingerprint(info);
    assert.ok(verifyAny(fp, info.sigs, [pk]));
    assert.deepEqual([sk.sign(fp)], info.sigs);
  }
  assert.equal(
    narInfoFingerprint(parseNarInfo(BAZ)),
    "1;/nix/store/5xd714cbfnkz02h2vbsj4fm03x3f15nf-baz;sha256:0m29vxh7maf5ml5dyq7vy0ah53zah45pvy8yk5y8la4nnla95gfi;160;/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo",
  );
});

Deno.test("signature: wrong key, name, data or garbage do not verify", () => {
  const pk = PublicKey.parse(PK);
  const info = parseNarInfo(BAZ);
  const fp = narInfoFingerprint(info);
  const other = SecretKey.generate("test-key-1");
  assert.ok(!verifyAny(fp, info.sigs, [other.publicKey()]));
  assert.ok(!verifyAny(fp + "x", info.sigs, [pk]));
  assert.ok(
    !verifyAny(fp, [info.sigs[0].replace("test-key-1", "test-key-2")], [pk]),
  );
  assert.ok(!verifyAny(fp, ["test-key-1:AAAA", "junk", ""], [pk]));
  const mine = other.sign(fp);
  assert.ok(verifyAny(fp, [mine], [other.publicKey()]));
  assert.ok(PublicKey.parse(other.publicKey().toString()).verify(fp, mine));
  assert.equal(SecretKey.parse(other.toString()).sign(fp), mine);
});

Deno.test("signature: malformed keys are rejected clearly", () => {
  assert.throws(() => SecretKey.parse("nokey"), /name:base64/);
  assert.throws(() => SecretKey.parse(PK), /64/);
  assert.throws(() => PublicKey.parse(SK), /32/);
  assert.throws(() => PublicKey.parse("k:!!!!"), /base64/);
});

Deno.test("narinfo: rejects malformed files with the line", () => {
  const cases: [string, RegExp][] = [
    ["", /StorePath missing/],
    [BAZ.replace(/NarHash: .*\n/, ""), /NarHash missing/],
    [BAZ.replace(/URL: .*\n/, ""), /URL missing/],
    [BAZ.replace(/NarSize: .*\n/, ""), /NarSize missing/],
    [BAZ.replace("NarSize: 160", "NarSize: 1x"), /invalid NarSize.*line 7/],
    [BAZ.replace("NarSize: 160", "NarSize: 99999999999999999999"), /too large/],
    [
      BAZ.replace("StorePath: /nix/store/5xd", "StorePath: /nix/store/5xe"),
      /bad StorePath.*line 1/,
    ],
    [BAZ.replace("References: vxj", "References: vxe"), /bad References/],
    [BAZ.replace("NarHash: sha256:0m2", "NarHash: sha256:xm2"), /bad NarHash/],
    [BAZ.replace("Sig: test-key-1:", "Sig: "), /bad Sig/],
    [BAZ + "garbage\n", /expected "Key: value".*line 11/],
    [BAZ + "NarSize: 5\n", /duplicate NarSize/],
    [BAZ.slice(0, -1), /newline/],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => parseNarInfo(text),
      (e: Error) => e instanceof NarInfoError && re.test(e.message),
      re.source,
    );
  }
});

Deno.test("narinfo: defaults and unknown keys", () => {
  const text =
    BAZ.replace("Compression: xz\n", "").replace(/FileHash: .*\n/, "").replace(
      /FileSize: .*\n/,
      "",
    ) +
    "Extra: kept\n";
  const info = parseNarInfo(text);
  assert.equal(info.compression, "bzip2");
  assert.deepEqual(info.unknown, [["Extra", "kept"]]);
  assert.match(printNarInfo(info), /Compression: bzip2\n[^]*Extra: kept\n$/);
  const withDeriver = parseNarInfo(
    BAZ.replace("Sig:", "Deriver: unknown-deriver\nSig:"),
  );
  assert.equal(withDeriver.deriver, undefined);
  const d = parseNarInfo(
    BAZ.replace(
      "Sig:",
      "Deriver: 5xd714cbfnkz02h2vbsj4fm03x3f15nf-baz.drv\nSig:",
    ),
  );
  assert.equal(d.deriver?.name, "baz.drv");
  assert.match(
    printNarInfo(d),
    /References: .*\nDeriver: 5xd714cbfnkz02h2vbsj4fm03x3f15nf-baz.drv\nSig:/,
  );
});
