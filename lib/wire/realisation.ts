/**
 * Realisations (outputs of content-addressed derivations) and their keys, in
 * the `realisation-with-path-not-hash` form (1.38 feature) and the older
 * string forms.
 *
 * @module
 */
import { Limits, WireError } from "./errors.ts";
import type { WireReader } from "./reader.ts";
import type { WireWriter } from "./writer.ts";

/** A derivation output: the derivation's path and the output's name. */
export interface DrvOutput {
  drvPath: string;
  outputName: string;
}

/** Where an output went, with signatures. */
export interface UnkeyedRealisation {
  outPath: string;
  signatures: string[];
}

/** Reads a `DrvOutput` (feature form). */
export async function readDrvOutput(r: WireReader): Promise<DrvOutput> {
  const drvPath = await r.readString(Limits.path, "derivation path");
  const outputName = await r.readString(Limits.string, "output name");
  return { drvPath, outputName };
}

/** Writes a `DrvOutput` (feature form). */
export function writeDrvOutput(w: WireWriter, o: DrvOutput): void {
  w.string(o.drvPath).string(o.outputName);
}

/** Reads an `UnkeyedRealisation` (feature form). */
export async function readUnkeyedRealisation(
  r: WireReader,
): Promise<UnkeyedRealisation> {
  const outPath = await r.readString(Limits.path, "output path");
  const signatures = await r.readStrings(
    Limits.count,
    Limits.string,
    "signatures",
  );
  return { outPath, signatures };
}

/** Writes an `UnkeyedRealisation` (feature form). */
export function writeUnkeyedRealisation(
  w: WireWriter,
  x: UnkeyedRealisation,
): void {
  w.string(x.outPath).stringSet(x.signatures);
}

/** Reads a `Realisation`: key then value (feature form). */
export async function readRealisation(
  r: WireReader,
): Promise<DrvOutput & UnkeyedRealisation> {
  const id = await readDrvOutput(r);
  return { ...id, ...(await readUnkeyedRealisation(r)) };
}

/** Writes a `Realisation` (feature form). */
export function writeRealisation(
  w: WireWriter,
  x: DrvOutput & UnkeyedRealisation,
): void {
  writeDrvOutput(w, x);
  writeUnkeyedRealisation(w, x);
}

/** Reads an optional `UnkeyedRealisation` (tag 0 or 1, feature form). */
export async function readOptionalUnkeyedRealisation(
  r: WireReader,
): Promise<UnkeyedRealisation | undefined> {
  const at = r.offset;
  const tag = await r.readNumber("optional tag");
  if (tag === 0) return undefined;
  if (tag === 1) return await readUnkeyedRealisation(r);
  throw new WireError(`invalid optional tag ${tag}`, at);
}

/** Writes an optional `UnkeyedRealisation` (feature form). */
export function writeOptionalUnkeyedRealisation(
  w: WireWriter,
  x: UnkeyedRealisation | undefined,
): void {
  if (!x) w.u64(0);
  else {
    w.u64(1);
    writeUnkeyedRealisation(w, x);
  }
}
