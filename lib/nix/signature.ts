/**
 * Nix's ed25519 signatures over store path fingerprints, with keys in Nix's
 * `name:base64` text form (secret keys are libsodium's 64 bytes: seed then
 * public key; public keys 32 bytes; signatures 64 bytes). Crypto is
 * node:crypto's Ed25519, the raw keys wrapped in the fixed DER prefixes of
 * PKCS#8 / SPKI.
 *
 * @module
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign as edSign,
  verify as edVerify,
} from "node:crypto";
import { Buffer } from "node:buffer";
import { decodeBase64, encodeBase64, type Hash, printHash } from "./hash.ts";
import type { StorePath } from "./store_path.ts";

const PKCS8_ED25519_PREFIX = Buffer.from(
  "302e020100300506032b657004220420",
  "hex",
);
const SPKI_ED25519_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/**
 * The text Nix signs for a store path:
 * `1;<store path>;sha256:<nix32 nar hash>;<nar size>;<refs, comma separated, sorted>`.
 */
export function fingerprint(
  storePath: StorePath,
  narHash: Hash,
  narSize: number,
  references: readonly StorePath[],
): string {
  if (narHash.algo !== "sha256") {
    throw new Error("fingerprint needs a sha256 NAR hash");
  }
  if (!(narSize > 0)) {
    throw new Error(
      `cannot fingerprint ${storePath}: its NAR size is not known`,
    );
  }
  const refs = [...new Set(references.map((r) => r.toString()))].sort();
  return `1;${storePath};${printHash(narHash, "nix32")};${narSize};${
    refs.join(",")
  }`;
}

/** Splits `name:base64` and decodes; throws a clear `Error` naming `what`. */
function parseNamed(
  s: string,
  what: string,
  size: number,
): { name: string; bytes: Uint8Array } {
  const colon = s.indexOf(":");
  if (colon <= 0) throw new Error(`${what} is not of the form name:base64`);
  const name = s.slice(0, colon);
  let bytes: Uint8Array;
  try {
    bytes = decodeBase64(s.slice(colon + 1).trim());
  } catch {
    throw new Error(`${what} ${JSON.stringify(name)} has invalid base64`);
  }
  if (bytes.length !== size) {
    throw new Error(
      `${what} ${
        JSON.stringify(name)
      } has ${bytes.length} bytes, expected ${size}`,
    );
  }
  return { name, bytes };
}

/** A secret key: name plus 64 bytes (seed + public key). */
export class SecretKey {
  /** Key name (e.g. `cache.example.org-1`). */
  readonly name: string;
  /** The 64 raw bytes. */
  readonly bytes: Uint8Array;
  readonly #key: KeyObject;

  private constructor(name: string, bytes: Uint8Array) {
    this.name = name;
    this.bytes = bytes;
    this.#key = createPrivateKey({
      key: Buffer.concat([PKCS8_ED25519_PREFIX, bytes.subarray(0, 32)]),
      format: "der",
      type: "pkcs8",
    });
  }

  /** Parses `name:base64(64 bytes)` (the file `nix-store --generate-binary-cache-key` writes). */
  static parse(s: string): SecretKey {
    const { name, bytes } = parseNamed(s.trim(), "secret key", 64);
    return new SecretKey(name, bytes);
  }

  /** Generates a fresh key pair under `name`. */
  static generate(name: string): SecretKey {
    if (!name || name.includes(":")) {
      throw new Error(`invalid key name ${JSON.stringify(name)}`);
    }
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const seed = privateKey.export({ format: "der", type: "pkcs8" }).subarray(
      16,
    );
    const pub = publicKey.export({ format: "der", type: "spki" }).subarray(12);
    return new SecretKey(name, new Uint8Array(Buffer.concat([seed, pub])));
  }

  /** `name:base64(64 bytes)`. */
  toString(): string {
    return `${this.name}:${encodeBase64(this.bytes)}`;
  }

  /** The matching public key. */
  publicKey(): PublicKey {
    return PublicKey.fromRaw(this.name, this.bytes.subarray(32));
  }

  /** Signs `data`; returns Nix's `name:base64(signature)`. */
  sign(data: string | Uint8Array): string {
    const sig = edSign(
      null,
      typeof data === "string" ? Buffer.from(data) : data,
      this.#key,
    );
    return `${this.name}:${encodeBase64(new Uint8Array(sig))}`;
  }
}

/** A public key: name plus 32 bytes. */
export class PublicKey {
  /** Key name. */
  readonly name: string;
  /** The 32 raw bytes. */
  readonly bytes: Uint8Array;
  readonly #key: KeyObject;

  private constructor(name: string, bytes: Uint8Array) {
    this.name = name;
    this.bytes = bytes;
    this.#key = createPublicKey({
      key: Buffer.concat([SPKI_ED25519_PREFIX, bytes]),
      format: "der",
      type: "spki",
    });
  }

  /** Parses `name:base64(32 bytes)` (as in `trusted-public-keys`). */
  static parse(s: string): PublicKey {
    const { name, bytes } = parseNamed(s.trim(), "public key", 32);
    return new PublicKey(name, bytes);
  }

  /** From a name and 32 raw bytes. */
  static fromRaw(name: string, bytes: Uint8Array): PublicKey {
    if (bytes.length !== 32) {
      throw new Error(`public key must be 32 bytes, got ${bytes.length}`);
    }
    return new PublicKey(name, bytes.slice());
  }

  /** `name:base64(32 bytes)`. */
  toString(): string {
    return `${this.name}:${encodeBase64(this.bytes)}`;
  }

  /** Whether `signature` (`name:base64`) is this key's valid signature of `data`. */
  verify(data: string | Uint8Array, signature: string): boolean {
    const parsed = parseSignature(signature);
    if (parsed.name !== this.name) return false;
    return edVerify(
      null,
      typeof data === "string" ? Buffer.from(data) : data,
      this.#key,
      parsed.bytes,
    );
  }
}

/** Parses a signature `name:base64(64 bytes)`; throws a clear `Error`. */
export function parseSignature(s: string): { name: string; bytes: Uint8Array } {
  return parseNamed(s, "signature", 64);
}

/**
 * Whether any of `signatures` is valid for `data` under one of `keys`
 * (matched by name, as Nix does). Malformed signatures count as invalid.
 */
export function verifyAny(
  data: string | Uint8Array,
  signatures: readonly string[],
  keys: readonly PublicKey[],
): boolean {
  for (const s of signatures) {
    for (const k of keys) {
      try {
        if (k.verify(data, s)) return true;
      } catch {
        // malformed signature: not valid
      }
    }
  }
  return false;
}
