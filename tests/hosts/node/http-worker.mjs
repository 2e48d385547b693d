// The HTTP side of the Node host, in a worker thread.
//
// The component's `http.send` is a synchronous import: the guest's call must not return before
// the response is complete, yet Node performs HTTP only on an event loop. So the main thread
// posts the request here and blocks in `Atomics.wait`; this worker performs the request on its
// own event loop, posts the outcome back on the message port, then publishes the request's
// number in shared memory and wakes the main thread, which takes the message with
// `receiveMessageOnPort` (no event loop needed). See `blockingFetch` in host.mjs for the other half.
//
// Messages in: { number, url, method, headers: [[name, value]...], body: Uint8Array, timeoutMs,
// cap } where `url` is already routed (the emulator's base URL) and `headers` already carry
// the bearer token when asked. Messages out: { number, ok: { status, headers, body } } or
// { number, err: { tag, val } } with the `http-error` case (`body-too-large` carries the cap
// as a Number; the main thread makes it a BigInt).

import http from 'node:http';
import https from 'node:https';
import { parentPort } from 'node:worker_threads';

// Keep-alive: a sync makes thousands of calls to one host; a fresh TCP connection each time
// would dominate small requests.
const agents = {
  'http:': new http.Agent({ keepAlive: true, maxSockets: 4 }),
  'https:': new https.Agent({ keepAlive: true, maxSockets: 4 }),
};

let finished; // Int32Array over a SharedArrayBuffer: the number of the last request answered
let port; // MessagePort back to the main thread

parentPort.once('message', (init) => {
  finished = init.finished;
  port = init.port;
  port.on('message', (req) => {
    perform(req).then(
      (outcome) => reply(req.number, outcome),
      (e) => reply(req.number, { err: { tag: 'connection', val: String(e?.message ?? e) } }),
    );
  });
});

function reply(number, outcome) {
  const transfer = outcome.ok ? [outcome.ok.body.buffer] : [];
  port.postMessage({ number, ...outcome }, transfer);
  // The message is queued before the number is published, so the woken main thread finds it.
  Atomics.store(finished, 0, number);
  Atomics.notify(finished, 0);
}

function perform(req) {
  return new Promise((resolve) => {
    let settled = false;
    const done = (message) => {
      if (!settled) {
        settled = true;
        resolve(message);
      }
    };
    let url;
    try {
      url = new URL(req.url);
    } catch (e) {
      return done({ err: { tag: 'invalid-request', val: `bad URL: ${e.message}` } });
    }
    const transport = url.protocol === 'https:' ? https : http;
    let request;
    try {
      request = transport.request(url, {
        method: req.method,
        agent: agents[url.protocol],
        // An array of [name, value] pairs keeps repeated headers and the guest's casing.
        // The host frames the body itself (the main thread dropped any Content-Length).
        headers: req.body.length > 0 || req.method === 'POST' || req.method === 'PUT'
          ? [...req.headers.flat(), 'Content-Length', String(req.body.length)]
          : req.headers.flat(),
      });
    } catch (e) {
      // Node refuses invalid header names or values before sending anything.
      return done({ err: { tag: 'invalid-request', val: e.message } });
    }
    // A read timeout: no byte for this long (connecting included) ends the request.
    request.setTimeout(req.timeoutMs, () => {
      done({ err: { tag: 'timeout', val: `no response within ${req.timeoutMs} ms` } });
      request.destroy();
    });
    request.on('error', (e) => done({ err: { tag: 'connection', val: e.message } }));
    request.on('response', (res) => {
      // A HEAD response announces the length of a body it does not carry.
      const declared = req.method === 'HEAD' ? 0 : Number(res.headers['content-length'] ?? NaN);
      // Settle before destroying: destroying emits the events of a dropped connection.
      if (Number.isFinite(declared) && declared > req.cap) {
        done({ err: { tag: 'body-too-large', val: req.cap } });
        return res.destroy();
      }
      // One buffer of the announced size when there is one: a 64 MiB body is then copied once
      // here and handed to the main thread without a copy (transferred).
      let body = new Uint8Array(Number.isFinite(declared) ? declared : 64 * 1024);
      let length = 0;
      res.on('data', (chunk) => {
        if (length + chunk.length > req.cap) {
          done({ err: { tag: 'body-too-large', val: req.cap } });
          return res.destroy();
        }
        if (length + chunk.length > body.length) {
          const grown = new Uint8Array(Math.min(req.cap, Math.max(body.length * 2, length + chunk.length)));
          grown.set(body.subarray(0, length));
          body = grown;
        }
        body.set(chunk, length);
        length += chunk.length;
      });
      res.on('error', (e) => done({ err: { tag: 'connection', val: e.message } }));
      res.on('aborted', () => done({ err: { tag: 'connection', val: 'the connection dropped mid-response' } }));
      res.on('end', () => {
        if (!res.complete) {
          return done({ err: { tag: 'connection', val: 'the connection dropped mid-response' } });
        }
        const headers = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          headers.push([res.rawHeaders[i].toLowerCase(), res.rawHeaders[i + 1]]);
        }
        // Transfer needs a buffer of exactly the body's length.
        const exact = length === body.length ? body : body.slice(0, length);
        done({ ok: { status: res.statusCode, headers, body: exact } });
      });
    });
    if (req.method !== 'GET' && req.method !== 'HEAD' && req.body.length > 0) request.write(req.body);
    request.end();
  });
}
