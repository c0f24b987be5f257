/**
 * `grpc.health.v1.Health/Check`: SERVING for the whole server ("") and for
 * each service it hosts, NOT_FOUND for any other name (as the gRPC health
 * checking protocol asks). Watch is not offered (UNIMPLEMENTED).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../../proto/gen/grpc/health/v1/health_pb.ts";

/** Implements Health/Check; `services` are the fully qualified names served; `serving()` flips to NOT_SERVING on shutdown. */
export function healthServer(
  services: readonly string[],
  serving: () => boolean = () => true,
): Partial<ServiceImpl<typeof Health>> {
  const known = new Set(["", ...services]);
  return {
    check(req) {
      if (!known.has(req.service)) {
        throw new ConnectError(
          `unknown service "${req.service}"`,
          Code.NotFound,
        );
      }
      return create(HealthCheckResponseSchema, {
        status: serving()
          ? HealthCheckResponse_ServingStatus.SERVING
          : HealthCheckResponse_ServingStatus.NOT_SERVING,
      });
    },
  };
}
