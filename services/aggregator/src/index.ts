export { Aggregation } from "./aggregation.js";
export { aggregatorOptions, type AggregatorSettings } from "./settings.js";
export { followResults, type SubscriberOptions } from "./subscriber.js";
export { aggregatorServiceName, runAggregator } from "./main.js";
