/**
 * `snix store ...`: the store's subcommands, one file each.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import type { CliContext } from "./context.ts";
import { storeDaemonCommand } from "./store_daemon.ts";
import { storeMountCommand } from "./store_mount.ts";
import { storeImportCommand } from "./store_import.ts";
import { storeExportCommand } from "./store_export.ts";
import { storeLsCommand } from "./store_ls.ts";
import { storeCatCommand } from "./store_cat.ts";
import { storePathInfoCommand } from "./store_path_info.ts";
import { storeVerifyCommand } from "./store_verify.ts";

/** The `store` command group. */
export function storeCommand(ctx: CliContext): Command {
  return new Command("store")
    .description("import, export, inspect, serve and mount the content-addressed store")
    .addCommand(storeDaemonCommand(ctx))
    .addCommand(storeMountCommand(ctx))
    .addCommand(storeImportCommand(ctx))
    .addCommand(storeExportCommand(ctx))
    .addCommand(storeLsCommand(ctx))
    .addCommand(storeCatCommand(ctx))
    .addCommand(storePathInfoCommand(ctx))
    .addCommand(storeVerifyCommand(ctx));
}
