# syntax=docker/dockerfile:1
#
# One image for every mpmc command: the broker, producer, consumer, aggregator,
# run, stats and close. The build stage installs every dependency and builds;
# the runtime stage holds the production dependencies and the compiled dist/
# folders. The benchmark workspace is built but not shipped.
#
#   docker build -t mpmc:0.1.0 .
#   docker run --rm -p 50051:50051 mpmc:0.1.0            # the broker
#   docker run --rm mpmc:0.1.0 consumer --broker HOST:50051

ARG NODE_IMAGE=node:20-bookworm-slim

# better-sqlite3, the durable store's engine, is a native addon: npm installs a
# prebuilt binary where one exists for the platform, and compiles it with these
# tools where none does.
FROM ${NODE_IMAGE} AS toolchain
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# npm ci needs every workspace's package.json to link the workspaces into node_modules.
COPY package.json package-lock.json ./
COPY packages/common/package.json packages/common/
COPY packages/cli/package.json packages/cli/
COPY services/broker/package.json services/broker/
COPY services/producer/package.json services/producer/
COPY services/consumer/package.json services/consumer/
COPY services/aggregator/package.json services/aggregator/
COPY bench/package.json bench/


FROM toolchain AS build
# The manifests come first, in the toolchain stage, so that the npm ci layer is rebuilt only when they change.
RUN npm ci --no-audit --no-fund

# npm run build generates the messages with buf and protoc-gen-es, compiles every
# workspace with tsc -b and writes the descriptor set to dist/mpmc.binpb.
COPY buf.yaml buf.gen.yaml tsconfig.base.json tsconfig.json ./
COPY proto proto
COPY packages packages
COPY services services
COPY bench bench
COPY bin bin
RUN npm run build


FROM toolchain AS production-dependencies
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force


FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app

# The production dependencies, with the workspace links and the compiled addon.
COPY --from=production-dependencies /app/node_modules node_modules
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/packages/common/package.json packages/common/
COPY --from=build /app/packages/cli/package.json packages/cli/
COPY --from=build /app/services/broker/package.json services/broker/
COPY --from=build /app/services/producer/package.json services/producer/
COPY --from=build /app/services/consumer/package.json services/consumer/
COPY --from=build /app/services/aggregator/package.json services/aggregator/

COPY --from=build /app/packages/common/dist packages/common/dist
COPY --from=build /app/packages/cli/dist packages/cli/dist
COPY --from=build /app/services/broker/dist services/broker/dist
COPY --from=build /app/services/producer/dist services/producer/dist
COPY --from=build /app/services/consumer/dist services/consumer/dist
COPY --from=build /app/services/aggregator/dist services/aggregator/dist
COPY --from=build /app/bin bin
COPY --from=build /app/dist/mpmc.binpb dist/mpmc.binpb
COPY examples examples

# The durable store's folder, owned by the runtime user; Kubernetes mounts a volume here.
RUN mkdir -p /var/lib/mpmc && chown 1000:1000 /var/lib/mpmc

# 1000:1000 is the node user of the official Node.js images. A numeric user lets
# Kubernetes check runAsNonRoot without a runAsUser in the pod spec.
USER 1000:1000

# gRPC: broker 50051, aggregator 50052. Prometheus metrics: broker 9464,
# aggregator 9465, consumer 9466, producer 9467.
EXPOSE 50051 50052 9464 9465 9466 9467

# The exec form makes node PID 1, so SIGTERM reaches the handlers that drain
# each service. Arguments after the image name replace CMD: `docker run IMAGE consumer ...`.
ENTRYPOINT ["node", "bin/mpmc.js"]
CMD ["broker"]
