/**
 * `--help` for the scripts: prints the script's module comment (its first
 * `/** ... *\/` block, which says what it measures and how to call it) and
 * exits, instead of starting a long benchmark.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import process from "node:process";

/**
 * Prints the module comment of the script at `moduleUrl` (pass
 * `import.meta.url`) and exits 0 when the command line asks for help
 * (`--help` or `-h`); returns otherwise.
 */
export function exitWithUsageIfAsked(moduleUrl: string): void {
  const args = process.argv.slice(2);
  if (!args.includes("--help") && !args.includes("-h")) return;
  const text = readFileSync(fileURLToPath(moduleUrl), "utf8");
  const m = /\/\*\*([\s\S]*?)\*\//.exec(text);
  const body = (m?.[1] ?? " (no description)")
    .split("\n")
    .map((l) => l.replace(/^\s*\* ?/, ""))
    .filter((l) => l !== "@module")
    .join("\n")
    .trim();
  console.log(body);
  process.exit(0);
}
