export { Consumer, type ConsumerOptions, type ConsumerReport } from "./consumer.js";
export {
  PermanentJobError,
  isPermanentFailure,
  loadHandler,
  outputOf,
  simulatedWork,
  type HandlerJob,
  type JobHandler,
} from "./handler.js";
export { consumerOptions, type ConsumerSettings } from "./settings.js";
export { runConsumer } from "./main.js";
