/**
 * `snix store ...`: the store's subcommands, one file each.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import type { CliContext } from "./context.ts";
import { addCommands } from "./lazy_commands.ts";

/**
 * The `store` command group. With `argv` (the arguments after `store`), only
 * the selected subcommand is loaded; without, all of them.
 */
export async function storeCommand(
  ctx: CliContext,
  argv?: string[],
): Promise<Command> {
  const group = new Command("store")
    .description(
      "import, export, inspect, serve and mount the content-addressed store",
    );
  await addCommands(group, [
    {
      name: "daemon",
      summary:
        "serve BlobService, DirectoryService and PathInfoService over gRPC",
      load: async () =>
        (await import("./store_daemon.ts")).storeDaemonCommand(ctx),
    },
    {
      name: "mount",
      summary: "mount the store read-only with FUSE",
      load: async () =>
        (await import("./store_mount.ts")).storeMountCommand(ctx),
    },
    {
      name: "import",
      summary:
        "add file trees to the store as nix-store --add does, print their store paths",
      load: async () =>
        (await import("./store_import.ts")).storeImportCommand(ctx),
    },
    {
      name: "export",
      summary: "write a store path as a NAR to stdout",
      load: async () =>
        (await import("./store_export.ts")).storeExportCommand(ctx),
    },
    {
      name: "ls",
      summary: "list a store path or a directory in it",
      load: async () => (await import("./store_ls.ts")).storeLsCommand(ctx),
    },
    {
      name: "cat",
      summary: "print a file in a store path",
      load: async () => (await import("./store_cat.ts")).storeCatCommand(ctx),
    },
    {
      name: "path-info",
      summary: "show a store path's metadata (like nix path-info)",
      load: async () =>
        (await import("./store_path_info.ts")).storePathInfoCommand(ctx),
    },
    {
      name: "compact",
      summary: "merge the local store's small pack files into bigger ones",
      load: async () =>
        (await import("./store_compact.ts")).storeCompactCommand(ctx),
    },
    {
      name: "verify",
      summary:
        "re-read every blob, directory and path info; report what is corrupt or missing",
      load: async () =>
        (await import("./store_verify.ts")).storeVerifyCommand(ctx),
    },
  ], argv);
  return group;
}
