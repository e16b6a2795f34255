export { BrokerCore, maxCredit, type BrokerCoreOptions } from "./core/broker-core.js";
export { ManualClock, systemClock, type Clock } from "./core/clock.js";
export type * from "./core/types.js";
export { defaultRequestLimits, type RequestLimits } from "./rpc/limits.js";
export { brokerDefaults, brokerOptions, type BrokerSettings } from "./settings.js";
export { brokerServiceName, startBroker, type RunningBroker } from "./server.js";
export { runBroker } from "./main.js";
