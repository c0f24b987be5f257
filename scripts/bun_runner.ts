/**
 * Runs our `Deno.test` files under Bun, to prove the runtime-agnostic library
 * modules work there too. Bun's own runner has a different API, so this is a
 * minimal stand-in for the part of `Deno.test` our library tests use
 * (name + fn, options object with `ignore`, `t.step`). Usage:
 *   bun scripts/bun_runner.ts DIR...
 * Prints `bun: N passed, M failed` and exits 1 on any failure.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import process from "node:process";

type Fn = (t: TestContext) => unknown | Promise<unknown>;
interface TestDef {
  name: string;
  fn: Fn;
  ignore?: boolean;
}
interface TestContext {
  name: string;
  step(nameOrDef: string | TestDef, fn?: Fn): Promise<boolean>;
}

const tests: TestDef[] = [];
function register(a: string | TestDef | Fn, b?: Fn | Partial<TestDef>, c?: Fn) {
  if (typeof a === "string") {
    if (typeof b === "function") tests.push({ name: a, fn: b });
    else tests.push({ name: a, ...(b ?? {}), fn: c! } as TestDef);
  } else if (typeof a === "function") tests.push({ name: a.name, fn: a });
  else tests.push(a);
}

function context(name: string): TestContext {
  return {
    name,
    async step(nameOrDef, fn) {
      const def = typeof nameOrDef === "string"
        ? { name: nameOrDef, fn: fn! }
        : nameOrDef;
      if (def.ignore) return true;
      await def.fn(context(def.name));
      return true;
    },
  };
}

// deno-lint-ignore no-explicit-any
(globalThis as any).Deno ??= {
  test: register,
  env: { get: (k: string) => process.env[k] },
};

function collect(path: string, out: string[]) {
  if (statSync(path).isDirectory()) {
    for (const e of readdirSync(path).sort()) collect(join(path, e), out);
  } else if (path.endsWith("_test.ts")) out.push(resolve(path));
}

const files: string[] = [];
for (const dir of process.argv.slice(2)) {
  if (existsSync(dir)) collect(dir, files);
}
let passed = 0, failed = 0;
for (const file of files) {
  const start = tests.length;
  await import(file);
  for (const t of tests.slice(start)) {
    if (t.ignore) continue;
    const t0 = performance.now();
    try {
      await t.fn(context(t.name));
      passed++;
      console.log(`ok   ${t.name} (${Math.round(performance.now() - t0)}ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${t.name}: ${e instanceof Error ? e.stack : e}`);
    }
  }
}
console.log(`bun: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
