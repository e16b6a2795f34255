import { parseArgs } from "node:util";
import { Server, ServerCredentials, type handleUnaryCall, type ServiceDefinition } from "@grpc/grpc-js";

/**
 * The submit scenario's baseline: a bare grpc-js server that responds to
 * /mpmc.v1.BrokerService/Submit with fixed response bytes and reads nothing
 * of the request. The benchmark passes a real SubmitResponse of the broker,
 * so the same Connect client decodes both servers' responses, and request and
 * response sizes match the broker's. Started by the benchmark with an IPC
 * channel, it reports its port there.
 */

const { values } = parseArgs({
  options: {
    "response-base64": { type: "string" },
  },
});
const encoded = values["response-base64"];
if (encoded === undefined) {
  process.stderr.write("echo-server: missing --response-base64: pass the bytes of one SubmitResponse\n");
  process.exit(2);
}
const response = Buffer.from(encoded, "base64");

const passThrough = (bytes: Buffer): Buffer => bytes;
const definition: ServiceDefinition = {
  submit: {
    path: "/mpmc.v1.BrokerService/Submit",
    requestStream: false,
    responseStream: false,
    requestSerialize: passThrough,
    requestDeserialize: passThrough,
    responseSerialize: passThrough,
    responseDeserialize: passThrough,
  },
};
const submit: handleUnaryCall<Buffer, Buffer> = (_call, callback) => callback(null, response);

const server = new Server();
server.addService(definition, { submit });
server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) => {
  if (err !== null) {
    process.stderr.write(`echo-server: cannot listen on 127.0.0.1: ${err.message}\n`);
    process.exit(1);
  }
  process.send?.({ type: "listening", port });
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    server.forceShutdown();
    process.exit(0);
  });
}
// The benchmark's IPC channel closes when it exits, even if it was killed, so the server does not outlive it.
process.on("disconnect", () => process.exit(0));
