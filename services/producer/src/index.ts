export { runProducerLoop, type Pace, type ProducerLoopOptions, type ProducerLoopReport } from "./producer.js";
export { producerOptions, type ProducerSettings } from "./settings.js";
export { paceOf, runProducer } from "./main.js";
