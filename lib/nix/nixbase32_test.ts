import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeNixBase32,
  encodeNixBase32,
  nixBase32EncodedLength,
} from "./nixbase32.ts";
import { decodeBase16 } from "./hash.ts";

// Vectors: digests of "abc" (RFC 4634), nix32 forms printed by Nix 2.8's
// `nix hash to-base32`.
const VECTORS: [string, string][] = [
  ["", ""],
  [
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
  ],
  [
    "a9993e364706816aba3e25717850c26c9cd0d89d",
    "kpcd173cq987hw957sx6m0868wv3x6d9",
  ],
  ["900150983cd24fb0d6963f7d28e17f72", "3jgzhjhz9zjvbb0kyj7jc500ch"],
  ["1f", "0z"],
];

Deno.test("nixbase32: known vectors encode and decode", () => {
  for (const [hex, nix32] of VECTORS) {
    assert.equal(encodeNixBase32(decodeBase16(hex)), nix32);
    assert.deepEqual(decodeNixBase32(nix32), decodeBase16(hex));
  }
});

Deno.test("nixbase32: encoded lengths", () => {
  assert.equal(nixBase32EncodedLength(20), 32);
  assert.equal(nixBase32EncodedLength(32), 52);
  assert.equal(nixBase32EncodedLength(64), 103);
});

Deno.test("nixbase32: rejects characters outside the alphabet", () => {
  for (const bad of ["e", "0o", "u0", "t000", "A0", "0-", "0\u00e9"]) {
    assert.throws(() => decodeNixBase32(bad), /invalid character/);
  }
});

Deno.test("nixbase32: rejects excess high bits", () => {
  // 52 chars encode 260 bits for 256: the top digit may only be 0 or 1.
  const ok = "1" + "0".repeat(51);
  assert.equal(decodeNixBase32(ok).length, 32);
  assert.throws(() => decodeNixBase32("2" + "0".repeat(51)), /excess bits/);
  // 32 chars encode 160 bits for 20 bytes exactly: any top digit is fine.
  assert.equal(decodeNixBase32("z" + "0".repeat(31)).length, 20);
});

Deno.test("nixbase32: property round trip", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 80 }), (b) => {
      const s = encodeNixBase32(b);
      assert.equal(s.length, nixBase32EncodedLength(b.length));
      assert.match(s, /^[0-9a-df-np-sv-z]*$/);
      assert.deepEqual(decodeNixBase32(s), b);
    }),
  );
});
