export * from "./gen/mpmc/v1/job_pb.js";
export * from "./gen/mpmc/v1/stats_pb.js";
export * from "./gen/mpmc/v1/broker_pb.js";
export * from "./gen/mpmc/v1/aggregator_pb.js";
export { Health, HealthCheckResponse_ServingStatus } from "./gen/grpc/health/v1/health_pb.js";
export { MpmcError, hasCode, type ErrorCode } from "./errors.js";
export { grpcStatusOf, toServiceError } from "./grpc/status.js";
export { addGrpcService, grpcServiceDefinition, writeEncoded, type GrpcHandlers } from "./grpc/service-definition.js";
export { addReflection, fileDescriptorSet } from "./grpc/reflection.js";
export { startGrpcServer, type GrpcServerOptions, type RunningGrpcServer } from "./grpc/server.js";
export { connectTo, createSessionManager, createTransport } from "./grpc/client.js";
export { createLogger, type Logger, type LogFormat, type LoggerOptions } from "./logger.js";
export {
  defaultProcessId,
  durationIn,
  integerIn,
  isValidId,
  maxIdLength,
  parseAddress,
  parseDurationMs,
  parseId,
  parseMsRange,
  randomInRange,
  type MsRange,
} from "./settings.js";
export { Backoff } from "./backoff.js";
export { durationOfMs, msOfDuration, msOfTimestamp, timestampOfMs } from "./time.js";
export { notifyParent, stopOnSignals, type ChildMessage } from "./process.js";
export {
  adminTokenOption,
  brokerAddressOption,
  listenOptions,
  logOptions,
  metricsOptions,
  shutdownGraceOption,
  tlsOptions,
  type LogSettings,
} from "./cli-options.js";
export { adminTokenHeaders, checkAdminToken, requireAdminToken, type AdminAuth } from "./auth.js";
export {
  metricsDisabledPort,
  serveMetrics,
  startMetricsServer,
  type MetricsServerOptions,
  type MetricsSettings,
  type RunningMetricsServer,
} from "./metrics-server.js";
export {
  readClientTls,
  readServerTls,
  type ClientTls,
  type ClientTlsSettings,
  type ServerTls,
  type ServerTlsSettings,
} from "./tls.js";
// Services build their metrics with these, so prom-client stays a dependency of this package alone.
export { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
