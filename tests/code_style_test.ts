// `deno fmt --check`, `deno lint` and `deno check` are clean on every
// tracked TypeScript file (generated code excepted), and library code outside
// lib/runtime uses no runtime globals.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const files = execFileSync("git", ["ls-files", "*.ts"], { encoding: "utf8" })
  .split("\n")
  .filter((f) => f && !f.startsWith("proto/gen/"));

function deno(...args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "piped",
  })
    .outputSync();
}

for (
  const [name, args] of [
    ["fmt --check", ["fmt", "--check"]],
    ["lint", ["lint"]],
    ["check", ["check", "--quiet"]],
  ] as const
) {
  Deno.test(`code style: deno ${name} is clean`, () => {
    const out = deno(...args, ...files);
    const text = new TextDecoder().decode(out.stderr) +
      new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, text.slice(0, 4000));
  });
}

Deno.test("code style: no Deno/Bun globals in lib/ outside lib/runtime", () => {
  const offenders = files.filter((f) =>
    f.startsWith("lib/") && !f.startsWith("lib/runtime/") &&
    !f.endsWith("_test.ts") &&
    !f.includes("/_test_") &&
    /\b(Deno|Bun)\.[a-zA-Z]/.test(
      readFileSync(f, "utf8").replace(/\/\/.*$|\/\*[\s\S]*?\*\//gm, ""),
    )
  );
  assert.deepEqual(offenders, []);
});
