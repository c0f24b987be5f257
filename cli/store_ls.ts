/**
 * `snix store ls STORE_PATH[/SUB] [-R] [-l]`: lists a store path's contents
 * in the format of `nix store ls` (`./name` below a directory; with `-l` the
 * mode, a 20-column size and `-> target` for symlinks).
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import process from "node:process";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Entry } from "../proto/gen/snix/castore/protos/castore_pb.ts";
import type { DirectoryService } from "../lib/castore/directory_service.ts";
import { compareBytes } from "../lib/castore/directory.ts";
import { digestToString } from "../lib/castore/digest.ts";
import type { CliContext } from "./context.ts";
import {
  entryAt,
  parseStorePathArg,
  requirePathInfo,
} from "../lib/store/lookup.ts";

const dec = new TextDecoder();

function line(entry: Entry, display: string, long: boolean): string {
  const e = entry.entry;
  if (!long) return display;
  switch (e.case) {
    case "file":
      return `${e.value.executable ? "-r-xr-xr-x" : "-r--r--r--"} ${
        String(e.value.size).padStart(20)
      } ${display}`;
    case "symlink":
      return `lrwxrwxrwx ${"0".padStart(20)} ${display} -> ${
        dec.decode(e.value.target)
      }`;
    default:
      return `dr-xr-xr-x ${"0".padStart(20)} ${display}`;
  }
}

async function children(
  entry: Entry,
  directories: DirectoryService,
): Promise<[string, Entry][]> {
  if (entry.entry.case !== "directory") return [];
  const digest = entry.entry.value.digest;
  const d = await directories.get(digest);
  if (!d) {
    throw new ConnectError(
      `directory ${digestToString(digest)} is missing from the store`,
      Code.DataLoss,
    );
  }
  const all: [Uint8Array, Entry][] = [
    ...d.directories.map((v) =>
      [v.name, { entry: { case: "directory", value: v } } as Entry] as [
        Uint8Array,
        Entry,
      ]
    ),
    ...d.files.map((v) =>
      [v.name, { entry: { case: "file", value: v } } as Entry] as [
        Uint8Array,
        Entry,
      ]
    ),
    ...d.symlinks.map((v) =>
      [v.name, { entry: { case: "symlink", value: v } } as Entry] as [
        Uint8Array,
        Entry,
      ]
    ),
  ];
  all.sort((a, b) => compareBytes(a[0], b[0]));
  return all.map(([n, e]) => [dec.decode(n), e]);
}

/** The `store ls` command. */
// deno-lint-ignore no-explicit-any
export function storeLsCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("ls")
    .description("list the contents of a store path (like nix store ls)")
    .argument("<path>", "/nix/store/<hash>-<name>[/sub/path]")
    .option("-R, --recursive", "list subdirectories recursively")
    .option("-l, --long", "show type, permissions and size")
    .action(async (arg, opts) => {
      const parsed = parseStorePathArg(arg);
      const { directories, pathInfos } = await ctx.services();
      const info = await requirePathInfo(pathInfos, parsed.storePath);
      const entry = await entryAt(info.entry!, parsed, directories);
      const long = !!opts.long;
      const out: string[] = [];
      const flush = () => {
        if (out.length) process.stdout.write(out.join("\n") + "\n");
        out.length = 0;
      };
      if (entry.entry.case !== "directory") {
        const base = parsed.sub.length
          ? parsed.sub[parsed.sub.length - 1]
          : parsed.storePath.baseName;
        out.push(line(entry, base, long));
        flush();
        return;
      }
      const walk = async (e: Entry, prefix: string) => {
        for (const [name, child] of await children(e, directories)) {
          out.push(line(child, `${prefix}/${name}`, long));
          if (out.length >= 1000) flush();
          if (opts.recursive && child.entry.case === "directory") {
            await walk(child, `${prefix}/${name}`);
          }
        }
      };
      await walk(entry, ".");
      flush();
    });
}
