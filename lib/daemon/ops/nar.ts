/**
 * NarFromPath: the NAR of a valid path, rendered from castore as it streams
 * (no `STDERR_*` framing around the bytes: they follow `STDERR_LAST`).
 * ExportPath (removed from Nix) is parsed and refused.
 *
 * @module
 */
import { Op } from "../../wire/mod.ts";
import { type OpHandler, UnsupportedOpError } from "../connection.ts";
import { DaemonError, parsePath } from "../store.ts";
import { last, readPathString } from "./common.ts";

const narFromPath: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const nar = await c.store.nar(parsePath(s));
  if (!nar) throw new DaemonError(`path '${s}' is not valid`);
  last(c);
  let n = 0;
  for await (const chunk of nar) {
    n += chunk.length;
    await c.w.write(chunk);
  }
  c.note("narBytes", n);
};

const exportPath: OpHandler = async (c) => {
  c.note("path", await readPathString(c.r));
  await c.r.readNumber("sign flag");
  throw new UnsupportedOpError(
    "ExportPath",
    "removed from Nix; use NarFromPath",
  );
};

/** NAR-serving handlers by op number. */
export const narOps: [number, OpHandler][] = [
  [Op.NarFromPath, narFromPath],
  [Op.ExportPath, exportPath],
];
