// proto/gen/ must be what `deno task gen` makes from proto/*.proto today.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

function files(dir: string, root = dir, out = new Map<string, string>()) {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) files(p, root, out);
    else out.set(relative(root, p), readFileSync(p, "utf8"));
  }
  return out;
}

Deno.test("proto: generated code is fresh (run `deno task gen` if this fails)", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const out = await new Deno.Command("bash", {
      args: ["scripts/gen.sh", join(tmp, "gen")],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const fresh = files(join(tmp, "gen"));
    const committed = files("proto/gen");
    assert.deepEqual([...committed.keys()].sort(), [...fresh.keys()].sort());
    for (const [name, text] of fresh) {
      assert.equal(committed.get(name), text, `proto/gen/${name} is stale`);
    }
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
