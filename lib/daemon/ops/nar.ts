/**
 * NarFromPath: the NAR of a valid path, rendered from castore as it streams
 * (no `STDERR_*` framing around the bytes: they follow `STDERR_LAST`).
 * From the local store, once `STDERR_LAST` is out, a NAR of some size is
 * written to the client's socket by the NAR workers
 * (lib/castore/nar_to_fd.ts), one NAR at a time; otherwise (and while they
 * are busy with another client's) it is streamed through the connection's
 * writer. An error after the first byte (a damaged chunk, a client gone)
 * ends this connection only. ExportPath (removed from Nix) is parsed and
 * refused.
 *
 * @module
 */
import { Op } from "../../wire/mod.ts";
import { type OpHandler, UnsupportedOpError } from "../connection.ts";
import { DaemonError, parsePath } from "../store.ts";
import { last, readPathString } from "./common.ts";
import { writeNarToFd } from "../../castore/nar_to_fd.ts";

const narFromPath: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const sp = parsePath(s);
  const info = await c.store.pathInfo(sp);
  if (!info?.entry) throw new DaemonError(`path '${s}' is not valid`);
  last(c);
  const out = await c.w.directFd();
  if (out !== undefined) {
    const { blobs, directories } = c.store.services;
    let n: number | undefined;
    try {
      n = await writeNarToFd(
        info.entry,
        blobs,
        directories,
        out.fd,
        Number(info.narinfo?.narSize ?? 0n),
      );
    } finally {
      out.close();
    }
    if (n !== undefined) {
      c.note("narBytes", n);
      c.note("workers", true);
      return;
    }
  }
  const nar = await c.store.nar(sp);
  if (!nar) throw new DaemonError(`path '${s}' is not valid`);
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
