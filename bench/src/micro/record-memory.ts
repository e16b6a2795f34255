/**
 * Heap bytes per object, and the time to make and keep one, for the shapes a
 * queued job is made of, to explain the scale scenario's memory per job and
 * BrokerCore.offer's share of the publish profile. Run with a GC the script
 * can call:
 *
 *   node --expose-gc bench/dist/micro/record-memory.js
 *
 * Each line keeps `count` objects alive in an array (4 bytes per slot with
 * V8's pointer compression are included) and reads heapUsed after two full
 * GCs before and after making them.
 */

const count = 200_000;

if (globalThis.gc === undefined) {
  process.stderr.write("record-memory: run with node --expose-gc\n");
  process.exit(2);
}
const collect = globalThis.gc;

/** Returns heap bytes per object and wall-clock ns per object, GC included, for count objects kept alive. */
function measure(make: (i: number) => unknown): { bytes: number; nanos: number } {
  collect();
  collect();
  const before = process.memoryUsage().heapUsed;
  const started = process.hrtime.bigint();
  const liveObjects = new Array<unknown>(count);
  for (let i = 0; i < count; i++) {
    liveObjects[i] = make(i);
  }
  const nanos = Number(process.hrtime.bigint() - started) / count;
  collect();
  collect();
  const bytes = (process.memoryUsage().heapUsed - before) / count;
  // Reading liveObjects after the measurement keeps the objects alive through it.
  return { bytes: liveObjects.length === count ? bytes : Number.NaN, nanos };
}

interface Input {
  data: bigint;
  payload: Uint8Array;
  attributes: Record<string, string>;
  sequence: number;
  leaseMs: number;
}

const payload = new Uint8Array(16);
const attributes: Record<string, string> = {};
// Not a whole number, so V8 stores it as a double, as it does Date.now() in a record's createdAtMs field.
const createdAtMs = Date.now() + 0.5;
// Stands for a received request, whose bytes every decoded payload of that request views.
const requestBuffer = Buffer.alloc(3_000);
const inputOf = (i: number): Input => ({ data: 5n, payload, attributes, sequence: i, leaseMs: 0 });

const cases: [string, (i: number) => unknown][] = [
  // BrokerCore.offer builds each JobRecord this way.
  ["job record from an object spread", (i) => ({ ...inputOf(i), id: i, producerId: "p", createdAtMs, attempt: 1 })],
  [
    "job record as one object literal",
    (i) => {
      const input = inputOf(i);
      return {
        data: input.data,
        payload: input.payload,
        attributes: input.attributes,
        sequence: input.sequence,
        leaseMs: input.leaseMs,
        id: i,
        producerId: "p",
        createdAtMs,
        attempt: 1,
      };
    },
  ],
  ["empty object, as protobuf-es makes for an empty map field", () => ({})],
  ["Uint8Array(0), as an empty bytes field gets", () => new Uint8Array(0)],
  ["16-byte view into one shared Buffer, as protobuf-es decodes a bytes field", () => requestBuffer.subarray(5, 21)],
  ["BigInt, as an int64 field", (i) => BigInt(i) * 1_000_000n],
];

process.stdout.write(`heap bytes and ns per object, ${count} objects kept alive\n`);
for (const [name, make] of cases) {
  const { bytes, nanos } = measure(make);
  process.stdout.write(`${bytes.toFixed(0).padStart(5)} bytes ${nanos.toFixed(0).padStart(5)} ns  ${name}\n`);
}
