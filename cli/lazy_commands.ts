/**
 * Subcommands loaded on demand: a group lists its subcommands with a one-line
 * summary and a loader; only the subcommand the arguments select is loaded
 * (with the library modules it imports), the others stay stubs that carry
 * their summary for `--help`. This keeps start-up of e.g. `snix nar dump`
 * free of the gRPC, FUSE and daemon stacks.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";

/** One subcommand of a group. */
export interface CommandEntry {
  name: string;
  /** Shown in the group's help; the loaded command keeps its own description. */
  summary: string;
  /** Builds the full command; `rest` are the arguments after its name (if selected). */
  load(rest: string[] | undefined): Promise<Command> | Command;
}

/**
 * The subcommand name `argv` selects under `parent`, and the arguments after
 * it; skips `parent`'s own options (and their values). `help NAME` selects NAME.
 */
export function selectSubcommand(
  parent: Command,
  argv: string[],
): { name: string; rest: string[] } | undefined {
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i];
    if (token === "--") return undefined;
    if (token.startsWith("-")) {
      if (token.includes("=")) continue;
      const option = parent.options.find((o) =>
        o.long === token || o.short === token
      );
      if (option && (option.required || option.optional)) i++;
      continue;
    }
    if (token === "help") {
      const next = argv.slice(i + 1).find((t) => !t.startsWith("-"));
      return next === undefined ? undefined : { name: next, rest: [] };
    }
    return { name: token, rest: argv.slice(i + 1) };
  }
  return undefined;
}

/**
 * Adds `entries` to `parent`. With `argv`, only the selected entry is loaded
 * in full; without it (`undefined`), every entry is (e.g. to list the whole
 * command tree). The group's help lists every entry by its summary.
 */
export async function addCommands(
  parent: Command,
  entries: CommandEntry[],
  argv: string[] | undefined,
): Promise<void> {
  const selected = argv === undefined
    ? undefined
    : selectSubcommand(parent, argv);
  for (const entry of entries) {
    const full = argv === undefined || selected?.name === entry.name;
    const command = full
      ? await entry.load(
        selected?.name === entry.name ? selected.rest : undefined,
      )
      : new Command(entry.name).description(entry.summary);
    parent.addCommand(command.summary(entry.summary));
  }
}
