import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createFileRegistry, fromBinary, type FileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

/** The FileDescriptorSet, imports included, that `npm run build:descriptors` writes with buf. */
export const descriptorSetPath = fileURLToPath(new URL("../../dist/mpmc.binpb", import.meta.url));

/**
 * Loads dist/mpmc.binpb into a registry of its files, services and messages.
 * buf writes a Buf image, which has the wire format of a FileDescriptorSet
 * plus fields that this decoder keeps as unknown fields.
 */
export function loadDescriptorSet(): FileRegistry {
  if (!existsSync(descriptorSetPath)) {
    throw new Error(`${descriptorSetPath} not found; run \`npm run build\` (or \`npm run build:descriptors\`) first`);
  }
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSetPath));
  return createFileRegistry(set);
}
