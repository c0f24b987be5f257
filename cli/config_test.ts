import assert from "node:assert/strict";
import { parseServiceAddr, resolveConfig } from "./config.ts";

Deno.test("config: flags beat environment beat defaults", () => {
  const env = { SNIX_DATA_DIR: "/env/dir", BLOB_SERVICE_ADDR: "memory://" };
  const c = resolveConfig({ dataDir: "/flag/dir" }, env);
  assert.equal(c.dataDir, "/flag/dir");
  assert.deepEqual(c.blobService, { kind: "memory" });
  assert.deepEqual(c.directoryService, { kind: "local", dir: "/flag/dir" });
  assert.equal(resolveConfig({}, env).dataDir, "/env/dir");
});

Deno.test("config: --remote sets all three services", () => {
  const c = resolveConfig({ remote: "grpc+unix:///run/s.sock" }, {});
  for (const a of [c.blobService, c.directoryService, c.pathInfoService]) {
    assert.deepEqual(a, {
      kind: "grpc",
      url: "grpc+unix:///run/s.sock",
      baseUrl: "http://localhost",
      socketPath: "/run/s.sock",
    });
  }
});

Deno.test("config: config file (TOML and JSON) is below env", () => {
  const dir = Deno.makeTempDirSync();
  Deno.writeTextFileSync(
    `${dir}/c.toml`,
    'data-dir = "/toml/dir"\nlog-level = "debug"\n',
  );
  Deno.writeTextFileSync(`${dir}/c.json`, '{"dataDir": "/json/dir"}');
  assert.equal(
    resolveConfig({ config: `${dir}/c.toml` }, {}).dataDir,
    "/toml/dir",
  );
  assert.equal(
    resolveConfig({ config: `${dir}/c.toml` }, {}).logLevel,
    "debug",
  );
  assert.equal(
    resolveConfig({ config: `${dir}/c.json` }, {}).dataDir,
    "/json/dir",
  );
  assert.equal(
    resolveConfig({ config: `${dir}/c.toml` }, { SNIX_DATA_DIR: "/env" })
      .dataDir,
    "/env",
  );
  Deno.writeTextFileSync(`${dir}/bad.toml`, 'nonsense = "x"\n');
  assert.throws(
    () => resolveConfig({ config: `${dir}/bad.toml` }, {}),
    /unknown setting "nonsense"/,
  );
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("config: bad values name the option", () => {
  assert.throws(() => resolveConfig({ logLevel: "loud" }, {}), /--log-level/);
  assert.throws(
    () => parseServiceAddr("--remote", "grpc+http://host"),
    /needs a port/,
  );
  assert.throws(
    () => resolveConfig({ remote: "ftp://x" }, {}),
    /--remote: unsupported/,
  );
});

Deno.test("config: a relative data directory is taken from the working directory, or from the config file's directory", () => {
  const cwd = Deno.cwd();
  assert.equal(resolveConfig({ dataDir: "rel/x" }, {}).dataDir, `${cwd}/rel/x`);
  assert.equal(
    resolveConfig({}, { SNIX_DATA_DIR: "./d" }).dataDir,
    `${cwd}/d`,
  );
  const dir = Deno.makeTempDirSync();
  Deno.writeTextFileSync(`${dir}/c.toml`, 'data-dir = "store"\n');
  assert.equal(
    resolveConfig({ config: `${dir}/c.toml` }, {}).dataDir,
    `${dir}/store`,
  );
  Deno.removeSync(dir, { recursive: true });
});
