/**
 * Listen addresses of the store daemon: `host:port`, `[v6]:port` or
 * `unix:/path/to.sock`; the clients' spellings `grpc+http://host:port` and
 * `grpc+unix:///path` are taken too (one can paste the address the clients
 * are given).
 *
 * @module
 */

/** Where a server listens. */
export type ListenAddress =
  | { kind: "tcp"; host: string; port: number }
  | { kind: "unix"; path: string };

/** Parses a listen address; throws an `Error` saying what is wrong. */
export function parseListenAddress(s: string): ListenAddress {
  if (s.startsWith("grpc+http://")) {
    const rest = s.slice("grpc+http://".length).replace(/\/$/, "");
    if (rest.includes("/")) {
      throw new Error(`listen address "${s}": expected grpc+http://host:port`);
    }
    return parseListenAddress(rest);
  }
  if (s.startsWith("grpc+unix://")) {
    return parseListenAddress("unix:" + s.slice("grpc+unix://".length));
  }
  if (s.startsWith("unix:")) {
    const path = s.slice("unix:".length).replace(/^\/\/(?=\/)/, "");
    if (!path.startsWith("/")) {
      throw new Error(
        `listen address "${s}": unix: needs an absolute path (unix:/run/snix.sock)`,
      );
    }
    return { kind: "unix", path };
  }
  let host: string;
  let portText: string;
  if (s.startsWith("[")) {
    const end = s.indexOf("]");
    if (end < 0 || s[end + 1] !== ":") {
      throw new Error(`listen address "${s}": expected [v6 address]:port`);
    }
    host = s.slice(1, end);
    portText = s.slice(end + 2);
  } else {
    const colon = s.lastIndexOf(":");
    if (colon <= 0) {
      throw new Error(
        `listen address "${s}": expected host:port, [v6]:port or unix:/path`,
      );
    }
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (host.includes(":")) {
      throw new Error(
        `listen address "${s}": put IPv6 addresses in brackets ([::1]:8000)`,
      );
    }
  }
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw new Error(
      `listen address "${s}": port "${portText}" is not a number in 0..65535`,
    );
  }
  if (host.length === 0) throw new Error(`listen address "${s}": missing host`);
  return { kind: "tcp", host, port: Number(portText) };
}

/** Formats a listen address the way it is parsed. */
export function formatListenAddress(a: ListenAddress): string {
  if (a.kind === "unix") return `unix:${a.path}`;
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
