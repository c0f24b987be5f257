/**
 * Nix's own base-32 encoding ("nix32"), used in store path hash parts and in
 * `sha256:<nix32>` hash strings.
 *
 * The alphabet omits `e`, `o`, `u` and `t`. Unlike RFC 4648, the encoding
 * reads the input as one little-endian number and prints its 5-bit digits
 * most significant first, so the *last* character holds the lowest 5 bits of
 * the first byte.
 *
 * Our own code: no maintained npm package implements this Nix format.
 *
 * @module
 */

/** The 32 characters of nix32, digit value = index. */
export const NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";

const REVERSE = (() => {
  const map = new Int8Array(256).fill(-1);
  for (let i = 0; i < 32; i++) map[NIX32_ALPHABET.charCodeAt(i)] = i;
  return map;
})();

/** Length of the nix32 text for `byteLength` bytes (0 for 0 bytes). */
export function nixBase32EncodedLength(byteLength: number): number {
  return byteLength === 0 ? 0 : Math.floor((byteLength * 8 - 1) / 5) + 1;
}

/** Encodes bytes as nix32 (e.g. 20 bytes -> 32 chars, 32 bytes -> 52 chars). */
export function encodeNixBase32(b: Uint8Array): string {
  const len = nixBase32EncodedLength(b.length);
  let out = "";
  for (let n = len - 1; n >= 0; n--) {
    const bit = n * 5;
    const i = bit >>> 3;
    const j = bit & 7;
    let c = b[i] >>> j;
    if (i + 1 < b.length) c |= b[i + 1] << (8 - j);
    out += NIX32_ALPHABET[c & 0x1f];
  }
  return out;
}

/**
 * Decodes nix32 text. Throws an `Error` naming the offending character on
 * characters outside the alphabet, and on text whose top digit carries bits
 * beyond the decoded byte length (non-canonical input).
 */
export function decodeNixBase32(s: string): Uint8Array {
  const out = new Uint8Array(Math.floor((s.length * 5) / 8));
  for (let n = 0; n < s.length; n++) {
    const ch = s.charCodeAt(s.length - 1 - n);
    const digit = ch < 256 ? REVERSE[ch] : -1;
    if (digit < 0) {
      throw new Error(
        `invalid character ${
          JSON.stringify(s[s.length - 1 - n])
        } in nix32 string ${JSON.stringify(s)}`,
      );
    }
    const bit = n * 5;
    const i = bit >>> 3;
    const j = bit & 7;
    if (i < out.length) out[i] |= (digit << j) & 0xff;
    else if (digit << j) {
      throw new Error(`nix32 string ${JSON.stringify(s)} has excess bits`);
    }
    const carry = digit >>> (8 - j);
    if (carry) {
      if (i + 1 < out.length) out[i + 1] |= carry;
      else throw new Error(`nix32 string ${JSON.stringify(s)} has excess bits`);
    }
  }
  return out;
}
