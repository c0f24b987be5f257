/**
 * Nix hashes: the algorithms Nix knows, and their textual forms
 * (`sha256:<base16|nix32|base64>`, SRI `sha256-<base64>`). Hashing itself is
 * node:crypto, fed incrementally so streams are never held whole.
 *
 * @module
 */
import { createHash, type Hash as NodeHash } from "node:crypto";
import { Buffer } from "node:buffer";
import {
  decodeNixBase32,
  encodeNixBase32,
  nixBase32EncodedLength,
} from "./nixbase32.ts";

/** Hash algorithms Nix supports. */
export type HashAlgo = "md5" | "sha1" | "sha256" | "sha512";

/** Digest sizes in bytes, per algorithm. */
export const HASH_SIZES: Readonly<Record<HashAlgo, number>> = {
  md5: 16,
  sha1: 20,
  sha256: 32,
  sha512: 64,
};

/** The textual encodings of a digest. */
export type HashEncoding = "base16" | "nix32" | "base64";

/** A digest together with its algorithm. */
export interface Hash {
  /** The algorithm. */
  readonly algo: HashAlgo;
  /** The raw digest, `HASH_SIZES[algo]` bytes. */
  readonly digest: Uint8Array;
}

/** Whether `s` names a hash algorithm Nix knows. */
export function isHashAlgo(s: string): s is HashAlgo {
  return s === "md5" || s === "sha1" || s === "sha256" || s === "sha512";
}

/** Makes a Hash, checking the digest length. */
export function makeHash(algo: HashAlgo, digest: Uint8Array): Hash {
  if (digest.length !== HASH_SIZES[algo]) {
    throw new Error(
      `${algo} digest must be ${HASH_SIZES[algo]} bytes, got ${digest.length}`,
    );
  }
  return { algo, digest };
}

/** Encodes a digest as lowercase hex. */
export function encodeBase16(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** Decodes lowercase or uppercase hex; throws on bad characters or odd length. */
export function decodeBase16(s: string): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw new Error(`invalid base16 string ${JSON.stringify(s)}`);
  }
  return new Uint8Array(Buffer.from(s, "hex"));
}

/** Encodes bytes as standard padded base64. */
export function encodeBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
}

/** Decodes standard padded base64 strictly (re-encoding must give the input back). */
export function decodeBase64(s: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) {
    throw new Error(`invalid base64 string ${JSON.stringify(s)}`);
  }
  const b = new Uint8Array(Buffer.from(s, "base64"));
  if (encodeBase64(b) !== s) {
    throw new Error(`non-canonical base64 string ${JSON.stringify(s)}`);
  }
  return b;
}

/** Prints only the digest in the given encoding (no algorithm prefix). */
export function printDigest(h: Hash, encoding: HashEncoding): string {
  switch (encoding) {
    case "base16":
      return encodeBase16(h.digest);
    case "nix32":
      return encodeNixBase32(h.digest);
    case "base64":
      return encodeBase64(h.digest);
  }
}

/** Prints `algo:<digest>` (Nix's default encoding is nix32). */
export function printHash(h: Hash, encoding: HashEncoding = "nix32"): string {
  return `${h.algo}:${printDigest(h, encoding)}`;
}

/** Prints the SRI form `algo-<base64>`. */
export function printSri(h: Hash): string {
  return `${h.algo}-${encodeBase64(h.digest)}`;
}

/**
 * Parses a bare digest of a known algorithm; the encoding is told apart by
 * length as Nix does (base16, nix32, or base64).
 */
export function parseDigest(algo: HashAlgo, s: string): Hash {
  const size = HASH_SIZES[algo];
  let digest: Uint8Array;
  if (s.length === size * 2) digest = decodeBase16(s);
  else if (s.length === nixBase32EncodedLength(size)) {
    digest = decodeNixBase32(s);
  } else if (s.length === Math.ceil(size / 3) * 4) digest = decodeBase64(s);
  else {
    throw new Error(
      `hash ${JSON.stringify(s)} has the wrong length for ${algo}`,
    );
  }
  return makeHash(algo, digest);
}

/**
 * Parses `algo:<digest>` (base16, nix32 or base64) or SRI `algo-<base64>`.
 * With `defaultAlgo`, a bare digest is accepted too. Throws a clear `Error`.
 */
export function parseHash(s: string, defaultAlgo?: HashAlgo): Hash {
  const colon = s.indexOf(":");
  const dash = s.indexOf("-");
  if (colon > 0) {
    const algo = s.slice(0, colon);
    if (!isHashAlgo(algo)) {
      throw new Error(
        `unknown hash algorithm ${JSON.stringify(algo)} in ${
          JSON.stringify(s)
        }`,
      );
    }
    return parseDigest(algo, s.slice(colon + 1));
  }
  if (dash > 0) {
    const algo = s.slice(0, dash);
    if (!isHashAlgo(algo)) {
      throw new Error(
        `unknown hash algorithm ${JSON.stringify(algo)} in ${
          JSON.stringify(s)
        }`,
      );
    }
    const b64 = s.slice(dash + 1);
    const digest = decodeBase64(b64);
    return makeHash(algo, digest);
  }
  if (defaultAlgo) return parseDigest(defaultAlgo, s);
  throw new Error(`hash ${JSON.stringify(s)} does not name its algorithm`);
}

/** An incremental hasher. */
export interface Hasher {
  /** Feeds bytes; returns this. */
  update(data: Uint8Array | string): Hasher;
  /** Finishes and returns the digest (call once). */
  digest(): Uint8Array;
}

/** Creates an incremental hasher for `algo` (node:crypto). */
export function createHasher(algo: HashAlgo): Hasher {
  const h: NodeHash = createHash(algo);
  const self: Hasher = {
    update(data) {
      h.update(data);
      return self;
    },
    digest() {
      const d = h.digest();
      return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    },
  };
  return self;
}

/** Hashes a whole stream incrementally; resolves to the digest. */
export async function hashStream(
  algo: HashAlgo,
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const h = createHasher(algo);
  for await (const chunk of stream) h.update(chunk);
  return h.digest();
}

/**
 * SHA-256. `sha256()` returns an incremental {@link Hasher};
 * `sha256(bytesOrString)` returns the digest; `sha256(stream)` hashes a
 * ReadableStream chunk by chunk and resolves to the digest.
 */
export function sha256(): Hasher;
export function sha256(data: Uint8Array | string): Uint8Array;
export function sha256(data: ReadableStream<Uint8Array>): Promise<Uint8Array>;
export function sha256(
  data?: Uint8Array | string | ReadableStream<Uint8Array>,
): Hasher | Uint8Array | Promise<Uint8Array> {
  if (data === undefined) return createHasher("sha256");
  if (typeof data === "string" || data instanceof Uint8Array) {
    return createHasher("sha256").update(data).digest();
  }
  return hashStream("sha256", data);
}
