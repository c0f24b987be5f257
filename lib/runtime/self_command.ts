/**
 * How to start this program again (e.g. more processes of a server), the
 * same under `deno run`, `bun run` and a binary made by `bun build
 * --compile` or `deno compile`.
 *
 * @module
 */
import process from "node:process";

/**
 * The command (program, then its first arguments) that runs this program
 * again; append the program's own arguments (`process.argv.slice(2)`).
 * `deno run` gets `-A`: a child needs no permission its parent lacks for
 * starting it (it had to be allowed to run programs).
 */
export function selfCommand(): string[] {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  const exe = process.execPath;
  const script = process.argv[1];
  if (g.Bun !== undefined) {
    // A compiled binary runs its embedded script from Bun's virtual file system.
    return script === undefined || script.startsWith("/$bunfs/")
      ? [exe]
      : [exe, script];
  }
  if (g.Deno !== undefined) {
    const main = String(g.Deno.mainModule ?? "");
    if (main.includes("/deno-compile-")) return [exe];
    return [exe, "run", "-A", script];
  }
  return [exe, script];
}
