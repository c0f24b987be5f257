/**
 * `GrpcPathInfoService`: the path info service seam over a remote
 * `snix.store.v1.PathInfoService`, plus the remote CalculateNAR.
 *
 * @module
 */
import {
  type Client,
  ConnectError,
  createClient,
  type Transport,
} from "@connectrpc/connect";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import { PathInfoService as PathInfoServiceDesc } from "../../proto/gen/snix/store/protos/rpc_pathinfo_pb.ts";
import type { PathInfoService } from "../store/path_info_service.ts";
import { validatePathInfo } from "../store/path_info.ts";
import { STORE_PATH_DIGEST_SIZE } from "../nix/store_path.ts";
import { Code } from "@connectrpc/connect";
import {
  type ClientOptions,
  connectClient,
  type GrpcAddress,
} from "./transport.ts";
import { dataLoss, isNotFound, rethrowFrom } from "./client_errors.ts";

/** Options of {@linkcode GrpcPathInfoService}. */
export type GrpcPathInfoServiceOptions = ClientOptions;

/** A PathInfoService backed by a remote gRPC PathInfoService. */
export class GrpcPathInfoService implements PathInfoService {
  readonly #client: Client<typeof PathInfoServiceDesc>;
  readonly #peer: string;
  readonly #onClose?: () => void;

  /** Uses an existing transport (which the caller closes). */
  constructor(transport: Transport, opts: GrpcPathInfoServiceOptions = {}) {
    this.#client = createClient(PathInfoServiceDesc, transport);
    this.#peer = opts.peer ?? "path info service";
    this.#onClose = opts.onClose;
  }

  /** Connects to `grpc+http://host:port` or `grpc+unix:///path`; `close()` closes the connection. */
  static connect(
    address: string | GrpcAddress,
    opts: GrpcPathInfoServiceOptions = {},
  ): GrpcPathInfoService {
    return connectClient(
      address,
      opts,
      (t, o) => new GrpcPathInfoService(t, o),
    );
  }

  /** The PathInfo for a 20-byte store path digest, checked; `undefined` if missing. */
  async get(outputHash: Uint8Array): Promise<PathInfo | undefined> {
    if (outputHash.length !== STORE_PATH_DIGEST_SIZE) {
      throw new ConnectError(
        `store path digest must be ${STORE_PATH_DIGEST_SIZE} bytes, got ${outputHash.length}`,
        Code.InvalidArgument,
      );
    }
    let info: PathInfo;
    try {
      info = await this.#client.get({
        byWhat: { case: "byOutputHash", value: outputHash },
      });
    } catch (e) {
      if (isNotFound(e)) return undefined;
      rethrowFrom(this.#peer, e);
    }
    this.#check(info, outputHash);
    return info;
  }

  /** Stores a PathInfo remotely (the server checks it and that its root is in castore). */
  async put(info: PathInfo): Promise<PathInfo> {
    validatePathInfo(info);
    try {
      return await this.#client.put(info);
    } catch (e) {
      rethrowFrom(this.#peer, e);
    }
  }

  /** Every PathInfo the server has, streamed. */
  async *list(): AsyncGenerator<PathInfo> {
    const abort = new AbortController();
    try {
      for await (
        const info of this.#client.list({}, { signal: abort.signal })
      ) {
        this.#check(info);
        yield info;
      }
    } catch (e) {
      abort.abort();
      rethrowFrom(this.#peer, e);
    } finally {
      abort.abort();
    }
  }

  /** NAR size and SHA-256 of a castore node, computed by the server (CalculateNAR). */
  async calculateNar(
    entry: Entry,
  ): Promise<{ narSize: number; narSha256: Uint8Array }> {
    let resp;
    try {
      resp = await this.#client.calculateNAR(entry);
    } catch (e) {
      rethrowFrom(this.#peer, e);
    }
    if (resp.narSha256.length !== 32) {
      throw dataLoss(
        this.#peer,
        `CalculateNAR answered a ${resp.narSha256.length}-byte nar_sha256`,
      );
    }
    return { narSize: Number(resp.narSize), narSha256: resp.narSha256 };
  }

  #check(info: PathInfo, outputHash?: Uint8Array): void {
    try {
      validatePathInfo(info, outputHash);
    } catch (e) {
      throw dataLoss(
        this.#peer,
        `received an invalid PathInfo: ${ConnectError.from(e).rawMessage}`,
      );
    }
  }

  /** Closes the connection if this service owns it. */
  close(): Promise<void> {
    this.#onClose?.();
    return Promise.resolve();
  }
}
