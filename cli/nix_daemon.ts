/**
 * `snix nix-daemon`: serve the store over the Nix worker protocol.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import type { CliContext } from "./context.ts";

/** The `nix-daemon` command. */
export function nixDaemonCommand(_ctx: CliContext): Command {
  return new Command("nix-daemon").description(
    "serve the store to Nix over the worker protocol (nix --store unix://SOCK, local-overlay lower-store)",
  ).action(() => {
    throw new Error("nix-daemon is not implemented yet");
  });
}
