import { create, toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { loadFileDescriptorSetFromBuffer, loadSync, type PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { protoPath as healthProtoPath } from "grpc-health-check";
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
 */
export function addReflection(server: Pick<Server, "addService">, files: readonly DescFile[]): void {
  const set = create(FileDescriptorSetSchema, { file: fileDescriptorSet(files) });
  const contract = loadFileDescriptorSetFromBuffer(Buffer.from(toBinary(FileDescriptorSetSchema, set)), {
    keepCase: true,
  });
  const health = loadSync(healthProtoPath, { keepCase: true });
  const definition: PackageDefinition = { ...contract, ...health };
  new ReflectionService(definition).addToServer(server);
}
