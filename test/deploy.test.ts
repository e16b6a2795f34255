/**
 * Offline checks of the deployment files against the code: the Kubernetes
 * manifests as `kubectl kustomize` renders them, the extras, the ghz load-test
 * configs and the Dockerfile. Nothing here contacts a cluster or a server.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { fromJson, type DescMessage, type DescMethod, type JsonValue } from "@bufbuild/protobuf";
import type { Option } from "commander";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IStatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IJob } from "kubernetes-models/batch/v1/Job";
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { IPodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IRole } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role";
import type { IRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPodTemplateSpec } from "kubernetes-models/v1/PodTemplateSpec";
import type { IProbe } from "kubernetes-models/v1/Probe";
import type { IService } from "kubernetes-models/v1/Service";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { aggregatorOptions, aggregatorServiceName } from "@mpmc/aggregator";
import { brokerOptions, brokerServiceName } from "@mpmc/broker";
import { consumerOptions } from "@mpmc/consumer";
import { producerOptions } from "@mpmc/producer";
import { closeCommand, statsCommand } from "../packages/cli/dist/admin.js";
import { descriptorSetPath, loadDescriptorSet } from "./support/descriptors.js";

const repositoryRoot = fileURLToPath(new URL("..", import.meta.url));
const namespace = "mpmc";

const kustomizations = {
  base: "deploy/k8s",
  local: "deploy/k8s/overlays/local",
  demoJobs: "deploy/k8s/overlays/demo-jobs",
  durable: "deploy/k8s/overlays/durable",
} as const;

/** Options of every mpmc command that a manifest runs, as the built code defines them. */
const commandOptions: Record<string, readonly Option[]> = {
  broker: brokerOptions(),
  aggregator: aggregatorOptions(),
  consumer: consumerOptions(),
  producer: producerOptions(),
  stats: statsCommand().options,
  close: closeCommand().options,
};

/** Health-check service name of each gRPC server. */
const grpcServiceNames: Record<string, string> = {
  broker: brokerServiceName,
  aggregator: aggregatorServiceName,
};

/**
 * Prometheus port of each service, as agreed with the metrics work. Used only
 * while a command has no --metrics-port option; once it has one, its default wins.
 */
const agreedMetricsPorts: Record<string, number> = { broker: 9464, aggregator: 9465, consumer: 9466, producer: 9467 };

// ---------------------------------------------------------------------------
// Rendering and lookups

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

type LabelSelector = NonNullable<INetworkPolicy["spec"]>["podSelector"];

const renders = new Map<string, K8sObject[]>();

/** Returns the objects that `kubectl kustomize DIRECTORY` renders, parsed from YAML. */
function render(directory: string): K8sObject[] {
  const cached = renders.get(directory);
  if (cached !== undefined) {
    return cached;
  }
  let output: string;
  try {
    output = execFileSync("kubectl", ["kustomize", join(repositoryRoot, directory)], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error("kubectl not found on PATH; install kubectl (it includes kustomize) to render deploy/k8s", { cause: err });
    }
    const stderr = (err as { stderr?: string }).stderr ?? "";
    throw new Error(`kubectl kustomize ${directory} failed: ${stderr || String(err)}`, { cause: err });
  }
  const objects = parseYamlDocuments(output, directory);
  renders.set(directory, objects);
  return objects;
}

function parseYamlDocuments(text: string, source: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const document of parseAllDocuments(text)) {
    if (document.errors.length > 0) {
      throw new Error(`invalid YAML in ${source}: ${document.errors.map((error) => error.message).join("; ")}`);
    }
    const value: unknown = document.toJS();
    if (value !== null && value !== undefined) {
      objects.push(value as K8sObject);
    }
  }
  return objects;
}

function objectsOfKind<T>(objects: K8sObject[], kind: string): (T & K8sObject)[] {
  return objects.filter((object) => object.kind === kind) as (T & K8sObject)[];
}

function findObject<T>(objects: K8sObject[], kind: string, name: string): T & K8sObject {
  const found = objectsOfKind<T>(objects, kind).find((object) => object.metadata.name === name);
  if (found === undefined) {
    throw new Error(`${kind} ${name} not found`);
  }
  return found;
}

/** A Deployment, StatefulSet or Job, with the pod template it runs. */
interface Workload {
  kind: string;
  name: string;
  template: IPodTemplateSpec;
}

function workloadsOf(objects: K8sObject[]): Workload[] {
  const workloads: Workload[] = [];
  for (const deployment of objectsOfKind<IDeployment>(objects, "Deployment")) {
    workloads.push({ kind: "Deployment", name: deployment.metadata.name, template: deployment.spec!.template });
  }
  for (const statefulSet of objectsOfKind<IStatefulSet>(objects, "StatefulSet")) {
    workloads.push({ kind: "StatefulSet", name: statefulSet.metadata.name, template: statefulSet.spec!.template });
  }
  for (const job of objectsOfKind<IJob>(objects, "Job")) {
    workloads.push({ kind: "Job", name: job.metadata.name, template: job.spec!.template });
  }
  return workloads;
}

function containersOf(template: IPodTemplateSpec): IContainer[] {
  const spec = template.spec!;
  return [...(spec.initContainers ?? []), ...spec.containers];
}

/** "registry.example/team/mpmc:0.1.0@sha256:..." -> "mpmc" */
function imageName(image: string | undefined): string {
  const withoutDigest = (image ?? "").split("@")[0]!;
  const lastSegment = withoutDigest.split("/").pop()!;
  return lastSegment.split(":")[0]!;
}

/** The mpmc command a container runs, and the flags after it. */
interface Invocation {
  command: string;
  flags: string[];
}

/** Returns what a container of the mpmc image runs, or undefined for another image. */
function invocationOf(container: IContainer): Invocation | undefined {
  if (imageName(container.image) !== "mpmc") {
    return undefined;
  }
  if (container.command === undefined) {
    // The image's ENTRYPOINT is `node bin/mpmc.js` and its CMD is `broker`.
    const [command, ...flags] = container.args ?? ["broker"];
    return { command: command!, flags };
  }
  const script = [...container.command, ...(container.args ?? [])].join(" ");
  const match = /\bbin\/mpmc\.js\s+([a-z]+)/.exec(script);
  if (match === null) {
    throw new Error(`container ${container.name} replaces the entrypoint without running bin/mpmc.js`);
  }
  return { command: match[1]!, flags: [] };
}

function optionsOf(command: string): readonly Option[] {
  const options = commandOptions[command];
  if (options === undefined) {
    throw new Error(`unknown mpmc command "${command}"`);
  }
  return options;
}

/** Environment variables a container gets from env and from ConfigMaps in envFrom. */
function environmentOf(container: IContainer, objects: K8sObject[]): Map<string, string> {
  const environment = new Map<string, string>();
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef === undefined) {
      throw new Error(`container ${container.name}: only configMapRef sources are expected in envFrom`);
    }
    const configMap = findObject<IConfigMap>(objects, "ConfigMap", source.configMapRef.name!);
    for (const [key, value] of Object.entries(configMap.data ?? {})) {
      environment.set(`${source.prefix ?? ""}${key}`, value);
    }
  }
  for (const variable of container.env ?? []) {
    environment.set(variable.name, variable.value ?? "(valueFrom)");
  }
  return environment;
}

/** Returns the value given to a flag as "--flag value" or "--flag=value", or undefined. */
function flagValue(flags: string[], long: string | undefined): string | undefined {
  if (long === undefined) {
    return undefined;
  }
  for (let i = 0; i < flags.length; i++) {
    const flag = flags[i]!;
    if (flag === long) {
      return flags[i + 1];
    }
    if (flag.startsWith(`${long}=`)) {
      return flag.slice(long.length + 1);
    }
  }
  return undefined;
}

function parseOptionValue(option: Option, value: string): unknown {
  return option.parseArg === undefined ? value : option.parseArg(value, option.defaultValue);
}

/** Returns the value a command uses for the option of envVar: a flag overrides the variable, which overrides the default. */
function effectiveSetting(invocation: Invocation, environment: Map<string, string>, envVar: string): unknown {
  const option = optionsOf(invocation.command).find((candidate) => candidate.envVar === envVar);
  if (option === undefined) {
    return undefined;
  }
  const fromFlag = flagValue(invocation.flags, option.long);
  if (fromFlag !== undefined) {
    return parseOptionValue(option, fromFlag);
  }
  const fromEnvironment = environment.get(envVar);
  if (fromEnvironment !== undefined) {
    return parseOptionValue(option, fromEnvironment);
  }
  return option.defaultValue;
}

function metricsPortOf(invocation: Invocation, environment: Map<string, string>): number | undefined {
  const fromCode = effectiveSetting(invocation, environment, "MPMC_METRICS_PORT");
  // NOTE: falls back to the agreed port while the built command has no --metrics-port.
  return (fromCode as number | undefined) ?? agreedMetricsPorts[invocation.command];
}

/** Resolves a port number or container port name to the number, or undefined when the container lacks it. */
function containerPortNumber(container: IContainer, port: number | string | undefined): number | undefined {
  const ports = container.ports ?? [];
  if (typeof port === "string") {
    return ports.find((candidate) => candidate.name === port)?.containerPort;
  }
  return ports.some((candidate) => candidate.containerPort === port) ? port : undefined;
}

function selects(selector: LabelSelector | undefined, labels: Record<string, string> | undefined): boolean {
  if (selector === undefined) {
    return false;
  }
  const present = labels ?? {};
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (present[key] !== value) {
      return false;
    }
  }
  for (const expression of selector.matchExpressions ?? []) {
    const value = present[expression.key];
    const values = expression.values ?? [];
    const matches =
      expression.operator === "In"
        ? value !== undefined && values.includes(value)
        : expression.operator === "NotIn"
          ? value === undefined || !values.includes(value)
          : expression.operator === "Exists"
            ? value !== undefined
            : value === undefined;
    if (!matches) {
      return false;
    }
  }
  return true;
}

function preStopSleepSeconds(container: IContainer): number {
  const command = container.lifecycle?.preStop?.exec?.command;
  if (command?.[0] === "sleep" && command[1] !== undefined) {
    return Number(command[1]);
  }
  return 0;
}

function cpuMillicores(quantity: string | number | undefined): number {
  if (quantity === undefined) {
    return Number.NaN;
  }
  const text = String(quantity);
  return text.endsWith("m") ? Number(text.slice(0, -1)) : Number(text) * 1000;
}

const binarySuffixes: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 };

function memoryBytes(quantity: string | number | undefined): number {
  if (quantity === undefined) {
    return Number.NaN;
  }
  const match = /^(\d+)(Ki|Mi|Gi)?$/.exec(String(quantity));
  if (match === null) {
    throw new Error(`unexpected memory quantity "${quantity}"`);
  }
  return Number(match[1]) * (match[2] === undefined ? 1 : binarySuffixes[match[2]]!);
}

async function validateWithSchema(object: K8sObject): Promise<void> {
  // kubernetes-models 4 exports one module per kind, e.g. kubernetes-models/apps/v1/Deployment.
  const module = (await import(`kubernetes-models/${object.apiVersion}/${object.kind}`)) as Record<
    string,
    new (data: K8sObject) => { validate(): void }
  >;
  const Model = module[object.kind];
  if (Model === undefined) {
    throw new Error(`kubernetes-models has no ${object.apiVersion} ${object.kind}`);
  }
  new Model(object).validate();
}

/**
 * Lists the fields of each object that its kubernetes-models interface does not
 * declare, such as a misspelt readinesProbe. The JSON schemas of kubernetes-models
 * accept unknown fields, but kubectl's default --validate=strict rejects them.
 * The TypeScript declarations of kubernetes-models name every field, so the
 * type checker walks each object along them.
 */
function undeclaredFields(objects: K8sObject[]): string[] {
  const modelsDirectory = join(repositoryRoot, "node_modules/kubernetes-models");
  const declarationFile = (object: K8sObject) => join(modelsDirectory, object.apiVersion, `${object.kind}.d.ts`);
  const program = ts.createProgram([...new Set(objects.map(declarationFile))], {
    noEmit: true,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    types: [],
  });
  const checker = program.getTypeChecker();
  const undeclared: string[] = [];

  const walk = (value: unknown, declaredType: ts.Type, path: string): void => {
    const type = checker.getNonNullableType(declaredType);
    if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) {
      return;
    }
    if (Array.isArray(value)) {
      if (checker.isArrayType(type)) {
        const [elementType] = checker.getTypeArguments(type as ts.TypeReference);
        value.forEach((element, index) => walk(element, elementType!, `${path}[${index}]`));
      }
      return;
    }
    if (value === null || typeof value !== "object") {
      return;
    }
    const objectTypes = type.isUnion() ? type.types.filter((member) => member.flags & ts.TypeFlags.Object) : [type];
    if (objectTypes.length !== 1) {
      // A union of several object types is left to the schema check.
      return;
    }
    const objectType = objectTypes[0]!;
    const indexInfo = checker.getIndexInfoOfType(objectType, ts.IndexKind.String);
    for (const [key, child] of Object.entries(value)) {
      const property = checker.getPropertyOfType(objectType, key);
      if (property !== undefined) {
        walk(child, checker.getTypeOfSymbol(property), `${path}.${key}`);
      } else if (indexInfo !== undefined) {
        walk(child, indexInfo.type, `${path}.${key}`);
      } else {
        undeclared.push(`${path}.${key}`);
      }
    }
  };

  for (const object of objects) {
    const source = program.getSourceFile(declarationFile(object));
    const moduleSymbol = source === undefined ? undefined : checker.getSymbolAtLocation(source);
    const interfaceSymbol = moduleSymbol === undefined ? undefined : checker.getExportsOfModule(moduleSymbol).find((symbol) => symbol.name === `I${object.kind}`);
    if (interfaceSymbol === undefined) {
      throw new Error(`kubernetes-models declares no I${object.kind} for ${object.apiVersion}`);
    }
    walk(object, checker.getDeclaredTypeOfSymbol(interfaceSymbol), `${object.kind} ${object.metadata.name}`);
  }
  return undeclared;
}

// ---------------------------------------------------------------------------
// Checks that hold for the base and for every overlay

describe.each(Object.entries(kustomizations))("kustomization %s", (_label, directory) => {
  it("objects match the Kubernetes 1.27 schemas", async () => {
    const objects = render(directory);
    expect(objects.length).toBeGreaterThan(0);
    for (const object of objects) {
      await expect(validateWithSchema(object), `${object.kind} ${object.metadata.name}`).resolves.toBeUndefined();
    }
  });

  it("objects use only fields the API defines", () => {
    expect(undeclaredFields(render(directory))).toEqual([]);
  });

  it("objects are in the mpmc namespace", () => {
    const objects = render(directory);
    const namespaces = objectsOfKind(objects, "Namespace");
    expect(namespaces.map((object) => object.metadata.name)).toEqual([namespace]);
    for (const object of objects.filter((candidate) => candidate.kind !== "Namespace")) {
      expect.soft(object.metadata.namespace, `${object.kind} ${object.metadata.name}`).toBe(namespace);
    }
  });

  it("environment variables are ones the command reads", () => {
    const objects = render(directory);
    for (const workload of workloadsOf(objects)) {
      for (const container of containersOf(workload.template)) {
        const invocation = invocationOf(container);
        if (invocation === undefined) {
          continue;
        }
        const options = optionsOf(invocation.command);
        for (const [name, value] of environmentOf(container, objects)) {
          const where = `${workload.kind} ${workload.name}, container ${container.name} (mpmc ${invocation.command}), ${name}`;
          const option = options.find((candidate) => candidate.envVar === name);
          expect.soft(option, `${where}: not read by the command`).toBeDefined();
          if (option !== undefined) {
            expect.soft(() => parseOptionValue(option, value), `${where}=${value}`).not.toThrow();
          }
        }
      }
    }
  });

  it("command-line flags exist and parse", () => {
    const objects = render(directory);
    for (const workload of workloadsOf(objects)) {
      for (const container of containersOf(workload.template)) {
        const invocation = invocationOf(container);
        if (invocation === undefined) {
          continue;
        }
        const options = optionsOf(invocation.command);
        for (const flag of invocation.flags.filter((argument) => argument.startsWith("--"))) {
          const long = flag.split("=")[0];
          const where = `${workload.kind} ${workload.name}, mpmc ${invocation.command} ${long}`;
          const option = options.find((candidate) => candidate.long === long);
          expect.soft(option, `${where}: unknown flag`).toBeDefined();
          if (option !== undefined && (option.required || option.optional)) {
            const value = flagValue(invocation.flags, long);
            expect.soft(value, `${where}: missing value`).toBeDefined();
            expect.soft(() => parseOptionValue(option, value ?? ""), `${where} ${value}`).not.toThrow();
          }
        }
      }
    }
  });

  it("pods and containers have a restricted security context", () => {
    for (const workload of workloadsOf(render(directory))) {
      const spec = workload.template.spec!;
      const where = `${workload.kind} ${workload.name}`;
      expect.soft(spec.securityContext?.runAsNonRoot, `${where}: pod runAsNonRoot`).toBe(true);
      expect.soft(spec.securityContext?.seccompProfile?.type, `${where}: pod seccompProfile`).toBe("RuntimeDefault");
      for (const container of containersOf(workload.template)) {
        const context = container.securityContext;
        const at = `${where}, container ${container.name}`;
        expect.soft(context?.runAsNonRoot, `${at}: runAsNonRoot`).toBe(true);
        expect.soft(context?.allowPrivilegeEscalation, `${at}: allowPrivilegeEscalation`).toBe(false);
        expect.soft(context?.readOnlyRootFilesystem, `${at}: readOnlyRootFilesystem`).toBe(true);
        expect.soft(context?.capabilities?.drop, `${at}: capabilities.drop`).toEqual(["ALL"]);
        expect.soft(context?.capabilities?.add, `${at}: capabilities.add`).toBeUndefined();
        expect.soft(context?.privileged, `${at}: privileged`).not.toBe(true);
        expect.soft(context?.seccompProfile?.type, `${at}: seccompProfile`).toBe("RuntimeDefault");
        expect.soft(context?.runAsUser ?? spec.securityContext?.runAsUser, `${at}: runAsUser`).toBeGreaterThan(0);
      }
    }
  });

  it("pods skip service links and API tokens they do not use", () => {
    for (const workload of workloadsOf(render(directory))) {
      const spec = workload.template.spec!;
      const where = `${workload.kind} ${workload.name}`;
      // A Service named like "mpmc" would otherwise inject MPMC_PORT=tcp://... into every pod.
      expect.soft(spec.enableServiceLinks, `${where}: enableServiceLinks`).toBe(false);
      const usesApi = spec.serviceAccountName !== undefined;
      expect.soft(spec.automountServiceAccountToken, `${where}: automountServiceAccountToken`).toBe(usesApi);
    }
  });

  it("containers request and limit CPU and memory", () => {
    for (const workload of workloadsOf(render(directory))) {
      for (const container of containersOf(workload.template)) {
        const resources = container.resources;
        const where = `${workload.kind} ${workload.name}, container ${container.name}`;
        const cpuRequest = cpuMillicores(resources?.requests?.cpu);
        const cpuLimit = cpuMillicores(resources?.limits?.cpu);
        const memoryRequest = memoryBytes(resources?.requests?.memory);
        const memoryLimit = memoryBytes(resources?.limits?.memory);
        expect.soft(cpuRequest, `${where}: cpu request`).toBeGreaterThan(0);
        expect.soft(memoryRequest, `${where}: memory request`).toBeGreaterThan(0);
        expect.soft(cpuLimit, `${where}: cpu limit`).toBeGreaterThanOrEqual(cpuRequest);
        expect.soft(memoryLimit, `${where}: memory limit`).toBeGreaterThanOrEqual(memoryRequest);
      }
    }
  });

  it("container ports match the code", () => {
    const objects = render(directory);
    for (const workload of workloadsOf(objects)) {
      for (const container of workload.template.spec!.containers) {
        const invocation = invocationOf(container);
        if (invocation === undefined) {
          continue;
        }
        const environment = environmentOf(container, objects);
        const where = `${workload.kind} ${workload.name} (mpmc ${invocation.command})`;
        const names = (container.ports ?? []).map((port) => port.name);
        if (invocation.command in grpcServiceNames) {
          const grpcPort = effectiveSetting(invocation, environment, "MPMC_PORT");
          expect.soft(containerPortNumber(container, "grpc"), `${where}: port "grpc"`).toBe(grpcPort);
        } else {
          expect.soft(names, `${where}: a client has no gRPC port`).not.toContain("grpc");
        }
        if (invocation.command in agreedMetricsPorts) {
          const metricsPort = metricsPortOf(invocation, environment);
          expect.soft(containerPortNumber(container, "metrics"), `${where}: port "metrics"`).toBe(metricsPort);
        }
      }
    }
  });

  it("probes use the gRPC health service and HTTP endpoints of the code", () => {
    const objects = render(directory);
    for (const workload of workloadsOf(objects)) {
      for (const container of workload.template.spec!.containers) {
        const invocation = invocationOf(container);
        if (invocation === undefined) {
          continue;
        }
        const environment = environmentOf(container, objects);
        const where = `${workload.kind} ${workload.name} (mpmc ${invocation.command})`;
        const probes: [string, IProbe | undefined][] = [
          ["readinessProbe", container.readinessProbe],
          ["livenessProbe", container.livenessProbe],
          ["startupProbe", container.startupProbe],
        ];
        for (const [kind, probe] of probes) {
          if (probe === undefined) {
            continue;
          }
          const serviceName = grpcServiceNames[invocation.command];
          if (serviceName !== undefined) {
            expect.soft(probe.grpc?.port, `${where}: ${kind} grpc.port`).toBe(effectiveSetting(invocation, environment, "MPMC_PORT"));
            expect.soft(probe.grpc?.service, `${where}: ${kind} grpc.service`).toBe(serviceName);
          } else {
            const expectedPath = kind === "readinessProbe" ? "/readyz" : "/healthz";
            expect.soft(probe.httpGet?.path, `${where}: ${kind} path`).toBe(expectedPath);
            const port = containerPortNumber(container, probe.httpGet?.port);
            expect.soft(port, `${where}: ${kind} port`).toBe(metricsPortOf(invocation, environment));
          }
        }
      }
    }
  });

  it("termination grace covers preStop and the shutdown grace", () => {
    const objects = render(directory);
    for (const workload of workloadsOf(objects)) {
      const spec = workload.template.spec!;
      const graceMs = (spec.terminationGracePeriodSeconds ?? 30) * 1000;
      for (const container of spec.containers) {
        const invocation = invocationOf(container);
        if (invocation === undefined) {
          continue;
        }
        const shutdownGraceMs = effectiveSetting(invocation, environmentOf(container, objects), "MPMC_SHUTDOWN_GRACE");
        const neededMs = preStopSleepSeconds(container) * 1000 + ((shutdownGraceMs as number | undefined) ?? 0);
        expect.soft(graceMs, `${workload.kind} ${workload.name}: terminationGracePeriodSeconds`).toBeGreaterThan(neededMs);
      }
    }
  });

  it("Service selectors match pods with the target ports", () => {
    const objects = render(directory);
    const workloads = workloadsOf(objects);
    for (const service of objectsOfKind<IService>(objects, "Service")) {
      const selected = workloads.filter((workload) => selects({ matchLabels: service.spec!.selector }, workload.template.metadata?.labels));
      expect.soft(selected.length, `Service ${service.metadata.name}: pods selected`).toBeGreaterThan(0);
      for (const workload of selected) {
        const container = workload.template.spec!.containers[0]!;
        for (const port of service.spec!.ports ?? []) {
          const target = containerPortNumber(container, port.targetPort ?? port.port);
          expect.soft(target, `Service ${service.metadata.name} port ${port.name} -> ${workload.kind} ${workload.name}`).toBeDefined();
        }
      }
    }
  });

  it("Deployment selectors match their pod labels", () => {
    for (const deployment of objectsOfKind<IDeployment>(render(directory), "Deployment")) {
      const spec = deployment.spec!;
      expect.soft(selects(spec.selector, spec.template.metadata?.labels), `Deployment ${deployment.metadata.name}`).toBe(true);
    }
  });

  it("network policies admit only the suite to gRPC ports", () => {
    const objects = render(directory);
    const policies = objectsOfKind<INetworkPolicy>(objects, "NetworkPolicy");
    const workloads = workloadsOf(objects);

    const denyAll = policies.find((policy) => Object.keys(policy.spec!.podSelector).length === 0);
    expect(denyAll, "a policy selecting every pod").toBeDefined();
    expect(denyAll!.spec!.policyTypes).toEqual(["Ingress"]);
    expect(denyAll!.spec!.ingress ?? []).toEqual([]);

    for (const workload of workloads) {
      const container = workload.template.spec!.containers[0]!;
      const invocation = invocationOf(container);
      if (invocation === undefined) {
        continue;
      }
      const labels = workload.template.metadata?.labels;
      const rules = policies.filter((policy) => policy !== denyAll && selects(policy.spec!.podSelector, labels)).flatMap((policy) => policy.spec!.ingress ?? []);
      const where = `${workload.kind} ${workload.name}`;

      const ruleFor = (portName: string) => rules.filter((rule) => (rule.ports ?? []).some((port) => port.port === portName));
      if (invocation.command in grpcServiceNames) {
        const grpcRules = ruleFor("grpc");
        expect.soft(grpcRules.length, `${where}: a rule for port grpc`).toBeGreaterThan(0);
        for (const rule of grpcRules) {
          const peers = rule.from ?? [];
          expect.soft(peers.length, `${where}: grpc open to every source`).toBeGreaterThan(0);
          for (const peer of peers) {
            expect.soft(peer.ipBlock, `${where}: grpc peer ipBlock`).toBeUndefined();
            expect.soft(peer.namespaceSelector, `${where}: grpc peer in another namespace`).toBeUndefined();
            // Every pod that runs mpmc must be a peer, or it could not reach the broker.
            for (const client of workloads) {
              expect.soft(selects(peer.podSelector, client.template.metadata?.labels), `${where}: ${client.kind} ${client.name} admitted`).toBe(true);
            }
          }
        }
      }
      if (invocation.command in agreedMetricsPorts) {
        const metricsRules = ruleFor("metrics");
        expect.soft(metricsRules.length, `${where}: a rule for port metrics`).toBeGreaterThan(0);
        for (const rule of metricsRules) {
          expect.soft(rule.from, `${where}: metrics open for scraping`).toBeUndefined();
        }
      }
    }
  });
});

// ---------------------------------------------------------------------------
// The base: services that run until stopped

describe("base kustomization", () => {
  const objects = () => render(kustomizations.base);

  it("broker is one pod replaced with Recreate", () => {
    const broker = findObject<IDeployment>(objects(), "Deployment", "broker");
    expect(broker.spec!.replicas).toBe(1);
    expect(broker.spec!.strategy?.type).toBe("Recreate");
  });

  it("Services expose the broker and the aggregator", () => {
    const broker = findObject<IService>(objects(), "Service", "broker");
    const aggregator = findObject<IService>(objects(), "Service", "aggregator");
    const portsOf = (service: IService) => Object.fromEntries((service.spec!.ports ?? []).map((port) => [port.name, port.port]));
    expect(portsOf(broker)).toEqual({ grpc: 50051, metrics: 9464 });
    expect(portsOf(aggregator)).toEqual({ grpc: 50052, metrics: 9465 });
  });

  it("MPMC_BROKER names the broker Service", () => {
    const broker = findObject<IService>(objects(), "Service", "broker");
    const grpcPort = broker.spec!.ports!.find((port) => port.name === "grpc")!.port;
    for (const workload of workloadsOf(objects())) {
      for (const container of containersOf(workload.template)) {
        const address = environmentOf(container, objects()).get("MPMC_BROKER");
        if (address !== undefined) {
          expect.soft(address, `${workload.kind} ${workload.name}`).toBe(`broker:${grpcPort}`);
        }
      }
    }
  });

  it("consumers run 6 pods with an autoscaler and a disruption budget", () => {
    const consumer = findObject<IDeployment>(objects(), "Deployment", "consumer");
    expect(consumer.spec!.replicas).toBe(6);

    const autoscaler = findObject<IHorizontalPodAutoscaler>(objects(), "HorizontalPodAutoscaler", "consumer");
    expect(autoscaler.apiVersion).toBe("autoscaling/v2");
    expect(autoscaler.spec!.scaleTargetRef).toMatchObject({ apiVersion: "apps/v1", kind: "Deployment", name: "consumer" });
    expect(autoscaler.spec!.minReplicas).toBe(6);
    expect(autoscaler.spec!.maxReplicas).toBeGreaterThan(6);
    expect(autoscaler.spec!.metrics?.[0]?.resource?.name).toBe("cpu");

    const budget = findObject<IPodDisruptionBudget>(objects(), "PodDisruptionBudget", "consumer");
    expect(selects(budget.spec!.selector, consumer.spec!.template.metadata?.labels)).toBe(true);
  });

  it("producers run 4 pods that do not finish", () => {
    const producer = findObject<IDeployment>(objects(), "Deployment", "producer");
    expect(producer.spec!.replicas).toBe(4);
    const container = producer.spec!.template.spec!.containers[0]!;
    const invocation = invocationOf(container)!;
    const environment = environmentOf(container, objects());
    expect(invocation.command).toBe("producer");
    // A fixed count ends the process; a duration ends it too, so it must be long.
    expect(effectiveSetting(invocation, environment, "MPMC_COUNT")).toBeUndefined();
    expect(effectiveSetting(invocation, environment, "MPMC_DURATION")).toBeGreaterThanOrEqual(24 * 3_600_000);
    expect(effectiveSetting(invocation, environment, "MPMC_RATE")).toBeGreaterThan(0);
  });

  it("long-running containers have readiness and liveness probes", () => {
    for (const deployment of objectsOfKind<IDeployment>(objects(), "Deployment")) {
      for (const container of deployment.spec!.template.spec!.containers) {
        const where = `Deployment ${deployment.metadata.name}, container ${container.name}`;
        expect.soft(container.readinessProbe, `${where}: readinessProbe`).toBeDefined();
        expect.soft(container.livenessProbe, `${where}: livenessProbe`).toBeDefined();
      }
    }
  });

  it("gRPC servers wait in preStop before SIGTERM", () => {
    for (const deployment of objectsOfKind<IDeployment>(objects(), "Deployment")) {
      const container = deployment.spec!.template.spec!.containers[0]!;
      if (invocationOf(container)!.command in grpcServiceNames) {
        expect.soft(preStopSleepSeconds(container), `Deployment ${deployment.metadata.name}`).toBeGreaterThan(0);
      }
    }
  });

  it("namespace enforces the restricted pod security standard", () => {
    const [namespaceObject] = objectsOfKind(objects(), "Namespace");
    expect(namespaceObject?.metadata.labels?.["pod-security.kubernetes.io/enforce"]).toBe("restricted");
  });

  it("deploy/k8s renders the same objects as base", () => {
    expect(render(kustomizations.base)).toEqual(render("deploy/k8s/base"));
  });
});

// ---------------------------------------------------------------------------
// Overlays

describe("local overlay", () => {
  it("pulls the image only when the node lacks it", () => {
    for (const workload of workloadsOf(render(kustomizations.local))) {
      for (const container of containersOf(workload.template)) {
        expect.soft(container.imagePullPolicy, `${workload.kind} ${workload.name}`).toBe("IfNotPresent");
      }
    }
  });

  it("requests less than the base", () => {
    const base = workloadsOf(render(kustomizations.base));
    for (const workload of workloadsOf(render(kustomizations.local))) {
      const local = workload.template.spec!.containers[0]!.resources!;
      const original = base.find((candidate) => candidate.name === workload.name)!.template.spec!.containers[0]!.resources!;
      const where = `${workload.kind} ${workload.name}`;
      expect.soft(cpuMillicores(local.requests?.cpu), `${where}: cpu`).toBeLessThan(cpuMillicores(original.requests?.cpu));
      expect.soft(memoryBytes(local.requests?.memory), `${where}: memory`).toBeLessThanOrEqual(memoryBytes(original.requests?.memory));
    }
  });
});

describe("demo-jobs overlay", () => {
  const objects = () => render(kustomizations.demoJobs);
  const jobs = () => objectsOfKind<IJob>(objects(), "Job");
  const jobsOfComponent = (component: string) =>
    jobs().filter((job) => job.spec!.template.metadata?.labels?.["app.kubernetes.io/component"] === component);

  it("replaces the producer and consumer Deployments", () => {
    const deployments = objectsOfKind<IDeployment>(objects(), "Deployment").map((deployment) => deployment.metadata.name);
    expect(deployments.sort()).toEqual(["aggregator", "broker"]);
    expect(objectsOfKind(objects(), "HorizontalPodAutoscaler")).toEqual([]);
    expect(objectsOfKind(objects(), "PodDisruptionBudget")).toEqual([]);
  });

  it("runs the tutorial's queue of 20", () => {
    const broker = findObject<IDeployment>(objects(), "Deployment", "broker");
    const container = broker.spec!.template.spec!.containers[0]!;
    expect(effectiveSetting(invocationOf(container)!, environmentOf(container, objects()), "MPMC_CAPACITY")).toBe(20);
  });

  it("runs 4 producer Jobs of 3 seconds", () => {
    const producers = jobsOfComponent("producer");
    expect(producers).toHaveLength(4);
    for (const job of producers) {
      const container = job.spec!.template.spec!.containers[0]!;
      const invocation = invocationOf(container)!;
      expect.soft(invocation.command, job.metadata.name).toBe("producer");
      expect.soft(effectiveSetting(invocation, environmentOf(container, objects()), "MPMC_DURATION"), job.metadata.name).toBe(3_000);
      expect.soft(effectiveSetting(invocation, environmentOf(container, objects()), "MPMC_COUNT"), job.metadata.name).toBeUndefined();
    }
    const ids = producers.map((job) => flagValue(invocationOf(job.spec!.template.spec!.containers[0]!)!.flags, "--id"));
    expect(new Set(ids).size).toBe(4);
  });

  it("runs 6 consumers as one work-queue Job", () => {
    const [consumers, ...others] = jobsOfComponent("consumer");
    expect(others).toEqual([]);
    // Without completions, the Job succeeds once any pod exits with 0 and all pods have ended.
    expect(consumers!.spec!.parallelism).toBe(6);
    expect(consumers!.spec!.completions).toBeUndefined();
    expect(consumers!.spec!.completionMode ?? "NonIndexed").toBe("NonIndexed");
    expect(invocationOf(consumers!.spec!.template.spec!.containers[0]!)!.command).toBe("consumer");
  });

  it("closes the queue after every producer Job", () => {
    const [closeJob, ...others] = jobsOfComponent("close-queue");
    expect(others).toEqual([]);
    const spec = closeJob!.spec!.template.spec!;
    expect(invocationOf(spec.containers[0]!)!.command).toBe("close");

    const [wait] = spec.initContainers ?? [];
    expect(imageName(wait?.image)).toBe("kubectl");
    const args = wait!.args ?? [];
    expect(args.slice(0, 1)).toEqual(["wait"]);
    expect(args).toContain("--for=condition=complete");
    expect(args).toContain("job");
    const selectorText = args.find((argument) => argument.startsWith("--selector="))!.slice("--selector=".length);
    const selector = Object.fromEntries(selectorText.split(",").map((pair) => pair.split("=") as [string, string]));
    const waitedFor = jobs().filter((job) => selects({ matchLabels: selector }, job.metadata.labels));
    expect(waitedFor.map((job) => job.metadata.name).sort()).toEqual(jobsOfComponent("producer").map((job) => job.metadata.name).sort());
  });

  it("lets only the close Job read Jobs from the API", () => {
    const [closeJob] = jobsOfComponent("close-queue");
    const account = closeJob!.spec!.template.spec!.serviceAccountName!;
    const binding = objectsOfKind<IRoleBinding>(objects(), "RoleBinding").find((candidate) =>
      (candidate.subjects ?? []).some((subject) => subject.kind === "ServiceAccount" && subject.name === account),
    );
    expect(binding).toBeDefined();
    const role = findObject<IRole>(objects(), "Role", binding!.roleRef.name);
    expect(role.rules).toEqual([{ apiGroups: ["batch"], resources: ["jobs"], verbs: ["get", "list", "watch"] }]);

    const otherAccounts = jobs()
      .filter((job) => job !== closeJob)
      .map((job) => job.spec!.template.spec!.serviceAccountName);
    expect(otherAccounts.every((name) => name === undefined)).toBe(true);
  });

  it("waits for the broker before producing or consuming", () => {
    for (const job of [...jobsOfComponent("producer"), ...jobsOfComponent("consumer")]) {
      const init = job.spec!.template.spec!.initContainers ?? [];
      expect.soft(init.map((container) => invocationOf(container)?.command), job.metadata.name).toEqual(["stats"]);
    }
  });
});

// ---------------------------------------------------------------------------
// Extras, applied by hand on clusters with the Prometheus Operator or KEDA

describe("extras", () => {
  const extras = (file: string) => parseYamlDocuments(readFileSync(join(repositoryRoot, "deploy/k8s/extras", file), "utf8"), file);

  it("ServiceMonitor scrapes every Service's metrics port", () => {
    const [monitor] = extras("service-monitor.yaml") as (K8sObject & { spec: { selector: LabelSelector; endpoints: { port: string }[] } })[];
    expect(monitor!.apiVersion).toBe("monitoring.coreos.com/v1");
    expect(monitor!.kind).toBe("ServiceMonitor");
    expect(monitor!.metadata.namespace).toBe(namespace);
    expect(monitor!.spec.endpoints.map((endpoint) => endpoint.port)).toEqual(["metrics"]);

    const services = objectsOfKind<IService>(render(kustomizations.base), "Service");
    const scraped = services.filter((service) => selects(monitor!.spec.selector, service.metadata.labels));
    expect(scraped.map((service) => service.metadata.name).sort()).toEqual(services.map((service) => service.metadata.name).sort());
    for (const service of scraped) {
      expect.soft(service.spec!.ports?.map((port) => port.name), service.metadata.name).toContain("metrics");
    }
  });

  it("KEDA ScaledObject scales consumers on the queue depth", () => {
    type ScaledObject = K8sObject & {
      spec: { scaleTargetRef: { name: string; kind?: string }; minReplicaCount: number; triggers: { type: string; metadata: Record<string, string> }[] };
    };
    const [scaledObject] = extras("keda-scaled-object.yaml") as ScaledObject[];
    expect(scaledObject!.apiVersion).toBe("keda.sh/v1alpha1");
    expect(scaledObject!.kind).toBe("ScaledObject");
    expect(scaledObject!.metadata.namespace).toBe(namespace);

    const consumer = findObject<IDeployment>(render(kustomizations.base), "Deployment", scaledObject!.spec.scaleTargetRef.name);
    expect(consumer.spec!.template.spec!.containers[0]!.args?.[0]).toBe("consumer");
    expect(scaledObject!.spec.minReplicaCount).toBe(consumer.spec!.replicas);

    const [trigger] = scaledObject!.spec.triggers;
    expect(trigger!.type).toBe("prometheus");
    expect(trigger!.metadata.query).toContain("mpmc_queue_depth");
    expect(Number(trigger!.metadata.threshold)).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------
// ghz load-test configs

/**
 * Keys of a ghz config file: the JSON names of the fields of ghz's runner.Config,
 * with the stream-call-* keys that ghz v0.80 added. ghz ignores a misspelt key,
 * so the test rejects keys outside this list.
 */
const ghzConfigKeys = new Set([
  "proto", "protoset", "call", "import-paths", "cacert", "cert", "key", "cname", "skipTLS", "insecure", "authority",
  "async", "rps", "load-schedule", "load-start", "load-end", "load-step", "load-step-duration", "load-max-duration",
  "concurrency", "concurrency-schedule", "concurrency-start", "concurrency-end", "concurrency-step",
  "concurrency-step-duration", "concurrency-max-duration", "total", "timeout", "duration", "max-duration",
  "duration-stop", "data", "data-file", "binary-file", "metadata", "metadata-file", "stream-interval",
  "stream-call-duration", "stream-call-count", "stream-dynamic-messages", "reflect-metadata", "output", "format",
  "skipFirst", "count-errors", "connections", "connect-timeout", "keepalive", "name", "tags", "cpus", "debug", "host",
  "enable-compression", "lb-strategy",
]);

const loadtestDirectory = join(repositoryRoot, "deploy/loadtest");

interface GhzConfig {
  call: string;
  host: string;
  insecure?: boolean;
  total?: number;
  concurrency?: number;
  data?: JsonValue;
  proto?: string;
  protoset?: string;
  "stream-call-count"?: number;
  [key: string]: unknown;
}

function readGhzConfig(file: string): GhzConfig {
  return JSON.parse(readFileSync(join(loadtestDirectory, file), "utf8")) as GhzConfig;
}

/** Finds the method of "package.Service/Method" or "package.Service.Method" in the descriptor set. */
function methodOf(call: string): DescMethod {
  const separator = call.includes("/") ? call.lastIndexOf("/") : call.lastIndexOf(".");
  const serviceName = call.slice(0, separator);
  const methodName = call.slice(separator + 1);
  const service = loadDescriptorSet().getService(serviceName);
  if (service === undefined) {
    throw new Error(`service ${serviceName} not found in ${descriptorSetPath}`);
  }
  const method = service.methods.find((candidate) => candidate.name === methodName);
  if (method === undefined) {
    throw new Error(`method ${methodName} not found in ${serviceName}`);
  }
  return method;
}

/** Parses every message of the config's data as protobuf JSON; unknown fields and wrong types throw. */
function parseMessages(schema: DescMessage, data: JsonValue | undefined): unknown[] {
  const messages = Array.isArray(data) ? data : [data ?? {}];
  return messages.map((message) => fromJson(schema, message));
}

describe("ghz configs", () => {
  const files = readdirSync(loadtestDirectory).filter((file) => file.endsWith(".json"));

  it("cover Submit, Publish and GetStats", () => {
    const calls = files.map((file) => readGhzConfig(file).call).sort();
    expect(calls).toEqual(["mpmc.v1.BrokerService/GetStats", "mpmc.v1.BrokerService/Publish", "mpmc.v1.BrokerService/Submit"]);
  });

  it.each(files)("%s uses only ghz config keys", (file) => {
    const unknown = Object.keys(readGhzConfig(file)).filter((key) => !ghzConfigKeys.has(key));
    expect(unknown).toEqual([]);
  });

  it.each(files)("%s targets the broker in plaintext through reflection", (file) => {
    const config = readGhzConfig(file);
    const brokerPort = optionsOf("broker").find((option) => option.envVar === "MPMC_PORT")!.defaultValue as number;
    expect(config.host).toBe(`127.0.0.1:${brokerPort}`);
    expect(config.insecure).toBe(true);
    // Without proto or protoset ghz describes the methods through the server's reflection service.
    // A --protoset flag on the command line overrides that with the descriptor set.
    expect(config.proto).toBeUndefined();
    expect(config.protoset).toBeUndefined();
    expect(config.total).toBeGreaterThanOrEqual(config.concurrency ?? 50);
  });

  it.each(files)("%s sends messages the method accepts", (file) => {
    const config = readGhzConfig(file);
    const method = methodOf(config.call);
    expect(() => parseMessages(method.input, config.data)).not.toThrow();
  });

  it("Submit is unary with one job", () => {
    const config = readGhzConfig("submit.json");
    const method = methodOf(config.call);
    expect(method.methodKind).toBe("unary");
    const [request] = parseMessages(method.input, config.data) as { producerId: string; job?: unknown }[];
    expect(request!.producerId).not.toBe("");
    expect(request!.job).toBeDefined();
  });

  it("Publish streams messages of one producer", () => {
    const config = readGhzConfig("publish.json");
    const method = methodOf(config.call);
    expect(method.methodKind).toBe("client_streaming");
    expect(Array.isArray(config.data)).toBe(true);
    expect(config["stream-call-count"]).toBeGreaterThan(1);
    const requests = parseMessages(method.input, config.data) as { producerId: string; jobs: unknown[] }[];
    // The broker rejects a stream whose requests name different producers.
    expect(new Set(requests.map((request) => request.producerId)).size).toBe(1);
    expect(requests[0]!.producerId).not.toBe("");
    const maxBatchJobs = optionsOf("broker").find((option) => option.envVar === "MPMC_MAX_BATCH_JOBS")!.defaultValue as number;
    for (const request of requests) {
      expect.soft(request.jobs.length).toBeGreaterThan(0);
      expect.soft(request.jobs.length).toBeLessThanOrEqual(maxBatchJobs);
    }
  });

  it("GetStats is unary", () => {
    expect(methodOf(readGhzConfig("get-stats.json").call).methodKind).toBe("unary");
  });

  it("descriptor set includes the imported files", () => {
    const registry = loadDescriptorSet();
    expect(registry.getFile("google/protobuf/duration.proto")).toBeDefined();
    expect(registry.getFile("google/protobuf/timestamp.proto")).toBeDefined();
    expect(registry.getService("grpc.health.v1.Health")).toBeDefined();
  });

  it("README's protoset path is the built descriptor set", () => {
    const readme = readFileSync(join(loadtestDirectory, "README.md"), "utf8");
    const match = /--protoset[ =](\S+)/.exec(readme);
    expect(match).not.toBeNull();
    expect(resolve(loadtestDirectory, match![1]!)).toBe(descriptorSetPath);
  });
});

// ---------------------------------------------------------------------------
// Dockerfile

interface DockerInstruction {
  keyword: string;
  argument: string;
}

interface DockerStage {
  base: string;
  /** The name after AS, if any. */
  name: string | undefined;
  instructions: DockerInstruction[];
}

/** Splits a Dockerfile into stages, joining continued lines and resolving ARG defaults in FROM. */
function parseDockerfile(text: string): DockerStage[] {
  const logicalLines = text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
  const buildArguments = new Map<string, string>();
  const stages: DockerStage[] = [];
  for (const line of logicalLines) {
    const [keyword, ...rest] = line.split(/\s+/);
    const argument = rest.join(" ");
    const upper = keyword!.toUpperCase();
    if (upper === "ARG" && stages.length === 0) {
      const [name, value] = argument.split("=");
      buildArguments.set(name!, value ?? "");
    } else if (upper === "FROM") {
      const words = argument.split(/\s+/);
      const image = words[0]!.replace(/\$\{(\w+)\}/g, (_, name: string) => buildArguments.get(name) ?? "");
      const name = words[1]?.toUpperCase() === "AS" ? words[2] : undefined;
      stages.push({ base: image, name, instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push({ keyword: upper, argument });
    }
  }
  return stages;
}

describe("Dockerfile", () => {
  const stages = parseDockerfile(readFileSync(join(repositoryRoot, "Dockerfile"), "utf8"));
  const stageNamed = (name: string): DockerStage => {
    const stage = stages.find((candidate) => candidate.name === name);
    if (stage === undefined) {
      throw new Error(`Dockerfile has no stage named ${name}`);
    }
    return stage;
  };
  const build = stageNamed("build");
  const productionDependencies = stageNamed("production-dependencies");
  const runtime = stages.at(-1)!;
  const runs = (stage: DockerStage) => stage.instructions.filter((instruction) => instruction.keyword === "RUN").map((instruction) => instruction.argument);
  const copies = (stage: DockerStage) => stage.instructions.filter((instruction) => instruction.keyword === "COPY").map((instruction) => instruction.argument);
  const workspaces = (JSON.parse(readFileSync(join(repositoryRoot, "package.json"), "utf8")) as { workspaces: string[] }).workspaces;
  // The benchmark is a development tool: built, but not shipped in the image.
  const shippedWorkspaces = workspaces.filter((workspace) => workspace !== "bench");

  it("builds in one stage and runs from another", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const names = stages.map((stage) => stage.name);
    for (const stage of stages) {
      // Each stage starts from the Node 20 slim image or from an earlier stage.
      const fromEarlierStage = names.slice(0, stages.indexOf(stage)).includes(stage.base);
      expect.soft(fromEarlierStage || /^node:20(\.\d+)*-(bookworm-)?slim$/.test(stage.base), `stage ${stage.name} from ${stage.base}`).toBe(true);
    }
    expect(runtime.base).toMatch(/^node:20(\.\d+)*-(bookworm-)?slim$/);
  });

  it("builds with npm ci and npm run build", () => {
    expect(runs(build).some((command) => /^npm ci\b/.test(command) && !command.includes("--omit"))).toBe(true);
    expect(runs(build)).toContain("npm run build");
  });

  it("installs only production dependencies to run", () => {
    expect(runs(productionDependencies).some((command) => /^npm ci\b.*--omit=dev/.test(command))).toBe(true);
    expect(copies(runtime)).toContain("--from=production-dependencies /app/node_modules node_modules");
    expect(runs(runtime).some((command) => command.includes("npm ci") || command.includes("npm run build"))).toBe(false);
  });

  it("copies each workspace's package.json and dist into the runtime stage", () => {
    for (const workspace of shippedWorkspaces) {
      expect.soft(copies(runtime).some((copy) => copy.includes(`${workspace}/package.json`)), `${workspace}/package.json`).toBe(true);
      expect.soft(copies(runtime).some((copy) => copy.includes(`${workspace}/dist`)), `${workspace}/dist`).toBe(true);
    }
    expect(copies(runtime).some((copy) => copy.includes("bench/"))).toBe(false);
    // npm ci in the dependency stages needs every workspace's package.json, the benchmark's too.
    for (const workspace of workspaces) {
      expect.soft(copies(stageNamed("toolchain")).some((copy) => copy.includes(`${workspace}/package.json`)), `toolchain ${workspace}`).toBe(true);
    }
  });

  it("runs as a non-root user", () => {
    const users = runtime.instructions.filter((instruction) => instruction.keyword === "USER").map((instruction) => instruction.argument);
    expect(users.length).toBeGreaterThan(0);
    const user = users.at(-1)!.split(":")[0]!;
    expect(["root", "0"]).not.toContain(user);
  });

  it("starts node directly with the broker as default command", () => {
    const last = (keyword: string) => runtime.instructions.filter((instruction) => instruction.keyword === keyword).at(-1)?.argument;
    // The exec form (a JSON array) makes node PID 1, so SIGTERM reaches it instead of a shell.
    expect(JSON.parse(last("ENTRYPOINT") ?? "null")).toEqual(["node", "bin/mpmc.js"]);
    expect(JSON.parse(last("CMD") ?? "null")).toEqual(["broker"]);
  });

  it(".dockerignore keeps build output and dependencies out of the context", () => {
    const ignored = readFileSync(join(repositoryRoot, ".dockerignore"), "utf8")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"));
    expect(ignored).toContain("**/node_modules");
    expect(ignored).toContain("**/dist");
    expect(ignored).toContain("**/*.tsbuildinfo");
    // Everything the build stage copies from the context must stay in it.
    const copiedFromContext = stages
      .flatMap(copies)
      .filter((copy) => !copy.startsWith("--from"))
      .flatMap((copy) => copy.split(/\s+/).slice(0, -1));
    for (const source of copiedFromContext) {
      expect.soft(ignored, source).not.toContain(source);
      expect.soft(ignored, source).not.toContain(source.split("/")[0]);
    }
  });
});
