// A browser-like EventSource client (the WhatWG spec, via the `eventsource` package) for the
// stream tests. Usage: node client.cjs <url>. Prints one JSON line per thing that happens:
//   {"kind": "event", "type": <SSE event type>, "id": <lastEventId>, "data": <data string>}
//   {"kind": "error", "code": <HTTP status or null>}
//   {"kind": "closed", "readyState": 2}
// It does nothing but what a page would: EventSource reconnects by itself (with Last-Event-ID)
// after the server closes the stream, and stops for good on a 204.
const { EventSource } = require("eventsource");

const url = process.argv[2];
const source = new EventSource(url);
const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");

for (const type of ["status", "progress", "log", "complete", "message"]) {
  source.addEventListener(type, (event) => {
    print({ kind: "event", type, id: event.lastEventId, data: event.data });
  });
}
source.onerror = (error) => {
  print({ kind: "error", code: error.code ?? null });
  if (source.readyState === EventSource.CLOSED) {
    print({ kind: "closed", readyState: source.readyState });
    process.exit(0);
  }
};
setTimeout(() => {
  print({ kind: "timeout" });
  process.exit(1);
}, 60000);
