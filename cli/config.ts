/**
 * The typed configuration every subcommand receives, built from (highest
 * first) command-line flags, environment variables, a config file
 * (`--config FILE`, JSON or TOML) and defaults.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { parse as parseToml } from "smol-toml";

/** Log levels, least to most verbose. */
export const LOG_LEVELS = [
  "error",
  "warning",
  "info",
  "debug",
  "trace",
] as const;
/** A log level. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Where a service lives, parsed from its address. */
export type ServiceAddr =
  | { kind: "memory" }
  | { kind: "local"; dir: string }
  | { kind: "grpc"; url: string; baseUrl: string; socketPath?: string };

/** The configuration handed to every subcommand. */
export interface Config {
  /** The embedded store's data directory. */
  dataDir: string;
  logLevel: LogLevel;
  blobService: ServiceAddr;
  directoryService: ServiceAddr;
  pathInfoService: ServiceAddr;
}

/** A bad configuration value: the message names the option and the problem. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Global options as commander hands them over (all optional). */
export interface GlobalFlags {
  config?: string;
  dataDir?: string;
  logLevel?: string;
  remote?: string;
  blobServiceAddr?: string;
  directoryServiceAddr?: string;
  pathInfoServiceAddr?: string;
}

const FILE_KEYS: Record<string, keyof GlobalFlags> = {
  "data-dir": "dataDir",
  "dataDir": "dataDir",
  "log-level": "logLevel",
  "logLevel": "logLevel",
  "remote": "remote",
  "blob-service-addr": "blobServiceAddr",
  "blobServiceAddr": "blobServiceAddr",
  "directory-service-addr": "directoryServiceAddr",
  "directoryServiceAddr": "directoryServiceAddr",
  "path-info-service-addr": "pathInfoServiceAddr",
  "pathInfoServiceAddr": "pathInfoServiceAddr",
};

/** The default data directory: `/var/lib/snix` as root, else `$XDG_DATA_HOME/snix`. */
export function defaultDataDir(
  env: Record<string, string | undefined>,
): string {
  const uid = typeof process.getuid === "function" ? process.getuid() : 0;
  if (uid === 0) return "/var/lib/snix";
  const xdg = env.XDG_DATA_HOME || join(env.HOME ?? "/tmp", ".local/share");
  return join(xdg, "snix");
}

function readConfigFile(path: string): GlobalFlags {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(
      `--config: cannot read ${path}: ${(e as Error).message}`,
    );
  }
  let raw: unknown;
  try {
    raw = path.endsWith(".json") || text.trimStart().startsWith("{")
      ? JSON.parse(text)
      : parseToml(text);
  } catch (e) {
    throw new ConfigError(
      `--config: ${path} is neither valid JSON nor TOML: ${
        (e as Error).message
      }`,
    );
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`--config: ${path} must hold a table of settings`);
  }
  const out: GlobalFlags = {};
  for (const [k, v] of Object.entries(raw)) {
    const key = FILE_KEYS[k];
    if (!key || key === "config") {
      throw new ConfigError(`--config: ${path}: unknown setting "${k}"`);
    }
    if (typeof v !== "string") {
      throw new ConfigError(
        `--config: ${path}: setting "${k}" must be a string`,
      );
    }
    out[key] = v;
  }
  return out;
}

/**
 * Parses a service address: `memory://`, `local:///dir` or a plain absolute
 * path, `grpc+http://host:port`, `grpc+unix:///path.sock`.
 */
export function parseServiceAddr(option: string, value: string): ServiceAddr {
  if (value === "memory://" || value === "memory:") return { kind: "memory" };
  if (value.startsWith("/")) return { kind: "local", dir: value };
  if (value.startsWith("local://")) {
    const dir = value.slice("local://".length);
    if (!dir.startsWith("/")) {
      throw new ConfigError(
        `${option}: "${value}": local:// needs an absolute path (local:///var/lib/snix)`,
      );
    }
    return { kind: "local", dir };
  }
  if (value.startsWith("grpc+http://") || value.startsWith("grpc+https://")) {
    const baseUrl = value.slice("grpc+".length);
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new ConfigError(`${option}: "${value}" is not a valid URL`);
    }
    if (!url.port) {
      throw new ConfigError(
        `${option}: "${value}" needs a port (grpc+http://[::1]:8000)`,
      );
    }
    return {
      kind: "grpc",
      url: value,
      baseUrl: `${url.protocol}//${url.host}`,
    };
  }
  if (value.startsWith("grpc+unix://")) {
    const socketPath = value.slice("grpc+unix://".length);
    if (!socketPath.startsWith("/")) {
      throw new ConfigError(
        `${option}: "${value}": grpc+unix:// needs an absolute socket path (grpc+unix:///run/snix.sock)`,
      );
    }
    return {
      kind: "grpc",
      url: value,
      baseUrl: "http://localhost",
      socketPath,
    };
  }
  throw new ConfigError(
    `${option}: unsupported address "${value}" (use memory://, local:///DIR, grpc+http://HOST:PORT or grpc+unix:///PATH)`,
  );
}

/**
 * Builds the configuration: flags > environment > config file > defaults.
 * Throws {@linkcode ConfigError} naming the offending option.
 */
export function resolveConfig(
  flags: GlobalFlags,
  env: Record<string, string | undefined> = process.env,
): Config {
  const configPath = flags.config ?? env.SNIX_CONFIG;
  const file = configPath ? readConfigFile(configPath) : {};
  const pick = (key: keyof GlobalFlags, envName?: string) =>
    flags[key] ?? (envName ? env[envName] || undefined : undefined) ??
      file[key];

  // A relative data directory is taken from where it was given: the
  // working directory (flag, environment) or the config file's directory.
  const givenDir = flags.dataDir ?? (env.SNIX_DATA_DIR || undefined);
  const dataDir = givenDir !== undefined
    ? resolve(givenDir)
    : file.dataDir !== undefined
    ? resolve(dirname(configPath!), file.dataDir)
    : defaultDataDir(env);
  if (dataDir.includes("\0")) {
    throw new ConfigError(`--data-dir: "${dataDir}" contains a NUL byte`);
  }
  const logLevel = (pick("logLevel", "SNIX_LOG_LEVEL") ?? "info").toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(
      `--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(", ")}`,
    );
  }
  const addr = (
    key: keyof GlobalFlags,
    envName: string,
    option: string,
  ): ServiceAddr => {
    const sources: [string | undefined, string][] = [
      [flags[key], option],
      [flags.remote, "--remote"],
      [env[envName] || undefined, envName],
      [env.SNIX_REMOTE || undefined, "SNIX_REMOTE"],
      [file[key], `${option} (config file)`],
      [file.remote, "remote (config file)"],
    ];
    const found = sources.find(([v]) => v !== undefined);
    return found
      ? parseServiceAddr(found[1], found[0]!)
      : { kind: "local", dir: dataDir };
  };
  return {
    dataDir,
    logLevel: logLevel as LogLevel,
    blobService: addr(
      "blobServiceAddr",
      "BLOB_SERVICE_ADDR",
      "--blob-service-addr",
    ),
    directoryService: addr(
      "directoryServiceAddr",
      "DIRECTORY_SERVICE_ADDR",
      "--directory-service-addr",
    ),
    pathInfoService: addr(
      "pathInfoServiceAddr",
      "PATH_INFO_SERVICE_ADDR",
      "--path-info-service-addr",
    ),
  };
}
