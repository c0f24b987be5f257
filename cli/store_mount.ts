/**
 * `snix store mount MNT`: the store as a read-only FUSE file system.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import type { CliContext } from "./context.ts";

/** The `store mount` command. */
export function storeMountCommand(_ctx: CliContext): Command {
  return new Command("mount").description("mount the store read-only with FUSE")
    .argument("<mountpoint>", "where to mount").action(() => {
      throw new Error("store mount is not implemented yet");
    });
}
