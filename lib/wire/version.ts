/**
 * Protocol versions: the negotiated minor number (the major is always 1)
 * and, from 1.38 on, the negotiated feature set.
 *
 * @module
 */

/** A negotiated worker-protocol version. */
export interface ProtocolVersion {
  /** Minor version: 1.x. */
  readonly minor: number;
  /** Features both sides agreed on (1.38+). */
  readonly features: ReadonlySet<string>;
}

/** Makes a version (major 1). */
export function protocolVersion(
  minor: number,
  features: Iterable<string> = [],
): ProtocolVersion {
  return { minor, features: new Set(features) };
}

/** The wire form `major << 8 | minor` of a minor version. */
export function versionToWire(minor: number): number {
  return (1 << 8) | minor;
}

/** Splits a wire version into major and minor. */
export function versionFromWire(
  wire: number,
): { major: number; minor: number } {
  return { major: (wire & 0xff00) >> 8, minor: wire & 0xff };
}

/** Whether `v` is at least 1.`minor`. */
export function atLeast(v: ProtocolVersion, minor: number): boolean {
  return v.minor >= minor;
}

/** Feature: realisations and DrvOutputs carry the derivation path (Nix 2.34+). */
export const FEATURE_REALISATION_WITH_PATH = "realisation-with-path-not-hash";
