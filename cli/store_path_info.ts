/**
 * `snix store path-info STORE_PATH... [--json]`: prints store paths that are
 * in the store, or (with `--json`) their metadata in the format of Nix 2.8's
 * `nix path-info --json`: a list of objects with `path`, `narHash` (SRI, as
 * Nix 2.8 prints it), `narSize`, `references`, then `ca`, `deriver` and
 * `signatures` when present.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import process from "node:process";
import type { CliContext } from "./context.ts";
import { printSri } from "../lib/nix/hash.ts";
import { parseStorePathArg, requirePathInfo } from "../lib/store/lookup.ts";
import {
  pathInfoToNarInfoText,
  toNixPathInfo,
} from "../lib/store/path_info.ts";

/** The JSON object for one path, keys in Nix 2.8's order. */
export function pathInfoJson(
  nix: ReturnType<typeof toNixPathInfo>,
): Record<string, unknown> {
  const o: Record<string, unknown> = {
    path: nix.path.toString(),
    narHash: printSri(nix.narHash),
    narSize: nix.narSize,
    references: nix.references.map(String),
  };
  if (nix.ca) o.ca = nix.ca;
  if (nix.deriver) o.deriver = nix.deriver.toString();
  if (nix.registrationTime) o.registrationTime = nix.registrationTime;
  if (nix.ultimate) o.ultimate = true;
  if (nix.sigs.length) o.signatures = nix.sigs;
  return o;
}

/** The `store path-info` command. */
// deno-lint-ignore no-explicit-any
export function storePathInfoCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("path-info")
    .description("show store paths' metadata (like nix path-info)")
    .argument("<store-paths...>", "/nix/store/<hash>-<name>")
    .option("--json", "print JSON in the format of nix path-info --json")
    .option(
      "--narinfo",
      "print each path's narinfo text (as a binary cache serves it)",
    )
    .action(async (args, opts) => {
      const parsed = args.map((a) => {
        const p = parseStorePathArg(a);
        if (p.sub.length) {
          throw new Error(`${JSON.stringify(a)} is not a top-level store path`);
        }
        return p.storePath;
      });
      const { pathInfos } = await ctx.services();
      const infos = [];
      for (const sp of parsed) infos.push(await requirePathInfo(pathInfos, sp));
      if (opts.narinfo) {
        process.stdout.write(
          infos.map((i) => pathInfoToNarInfoText(i)).join("\n"),
        );
        return;
      }
      const out = infos.map((i) => toNixPathInfo(i));
      if (opts.json) {
        process.stdout.write(JSON.stringify(out.map(pathInfoJson)) + "\n");
      } else process.stdout.write(out.map((n) => `${n.path}\n`).join(""));
    });
}
