/**
 * `snix store daemon`: serve castore and store over gRPC.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import type { CliContext } from "./context.ts";

/** The `store daemon` command. */
export function storeDaemonCommand(_ctx: CliContext): Command {
  return new Command("daemon").description(
    "serve BlobService, DirectoryService and PathInfoService over gRPC",
  ).action(() => {
    throw new Error("store daemon is not implemented yet");
  });
}
