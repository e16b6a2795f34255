import { toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import type { MessageTypeDefinition, PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import type { Server } from "@grpc/grpc-js";

/**
 * Collects the descriptors of the given files and everything they import,
 * imports first, as a FileDescriptorSet requires.
 */
export function fileDescriptorSet(files: readonly DescFile[]): FileDescriptorProto[] {
  const ordered: FileDescriptorProto[] = [];
  const seen = new Set<string>();
  const visit = (file: DescFile): void => {
    if (seen.has(file.name)) {
      return;
    }
    seen.add(file.name);
    for (const dependency of file.dependencies) {
      visit(dependency);
    }
    ordered.push(file.proto);
  };
  for (const file of files) {
    visit(file);
  }
  return ordered;
}

/**
 * Adds gRPC server reflection (v1 and v1alpha) describing the given files, their
 * imports and grpc.health.v1, so grpcurl and ghz work without the proto files.
 *
 * @grpc/reflection 1.0 reads only the fileDescriptorProtos of each package
 * definition entry. The descriptors come from protobuf-es, not proto-loader,
 * because proto-loader merges the files of one package into one file without
 * imports, and reflection clients cannot link that.
 */
export function addReflection(server: Pick<Server, "addService">, files: readonly DescFile[]): void {
  const encoded = fileDescriptorSet([...files, file_grpc_health_v1_health]).map((file) =>
    Buffer.from(toBinary(FileDescriptorProtoSchema, file)),
  );
  const contract: MessageTypeDefinition<object, object> = {
    format: "Protocol Buffer 3 DescriptorProto",
    type: {},
    fileDescriptorProtos: encoded,
    // Reflection never encodes messages with this entry.
    serialize: () => {
      throw new Error("not a message type");
    },
    deserialize: () => {
      throw new Error("not a message type");
    },
  };
  const definition: PackageDefinition = { "mpmc.contract": contract };
  new ReflectionService(definition).addToServer(server);
}
