/**
 * Crash-safe file replacement: write a temporary file beside the target,
 * fsync it, rename it over the target, fsync the directory. Readers see the
 * old file or the new one, never a part.
 *
 * @module
 */
import * as fsp from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import process from "node:process";

/** Writes `data` to `path` atomically and durably. Temporary names start with `.tmp-`. */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array,
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(
    dir,
    `.tmp-${basename(path)}-${process.pid}-${randomBytes(6).toString("hex")}`,
  );
  const h = await fsp.open(tmp, "wx", 0o644);
  try {
    await h.writeFile(data);
    await h.sync();
  } catch (e) {
    await h.close().catch(() => {});
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await h.close();
  try {
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  const d = await fsp.open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
