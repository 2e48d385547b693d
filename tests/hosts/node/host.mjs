// A Node.js host for connector components (contract pipeshub:connector@0.2.0, wit/connector.wit),
// built on jco. It is small on purpose: it is what a platform written in JavaScript needs to
// run a connector, and it is driven by tests/hosts.rs over stdin/stdout (one JSON object per
// line each way; the protocol is described there).
//
//   node host.mjs --component <file.wasm> --api-base <url> --token <t> [--body-cap <bytes>]
//
// What a host has to provide, and where it is here:
// - the component, turned into JavaScript by jco (`loadComponent`): jco transpiles a component
//   into core wasm modules plus JS glue that lifts and lowers WIT values. "sync" instantiation
//   makes every import a plain synchronous function, which is what the contract's imports are;
// - a fresh instance per operation (`instantiate`): nothing survives between calls but the
//   records store;
// - WASI without capabilities (`guestWasi`): preview2-shim's clocks, random and streams; no
//   environment, no arguments, no cwd, an empty stdin; the guest's stdout and stderr go to our
//   stderr (our stdout is the protocol channel);
// - `http` (`httpImports`): only the manifest's hosts, routed to --api-base; the bearer token
//   attached by the host; no redirects; a body cap. Node has no synchronous HTTP client, so a
//   worker thread performs each request while this thread blocks in `Atomics.wait`
//   (http-worker.mjs);
// - `records` and `paths` (records.mjs): an in-memory store with the contract's semantics;
// - `credentials`, `host`, `content-sink` (`connectorImports`).

import { readFileSync, writeFileSync, mkdtempSync, rmSync, openSync, writeSync, closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { Worker, MessageChannel, receiveMessageOnPort } from 'node:worker_threads';

import { RecordsStore, StoreFailure } from './records.mjs';

// --- command line --------------------------------------------------------------------------

const { values: args } = parseArgs({
  options: {
    component: { type: 'string' },
    'api-base': { type: 'string' },
    token: { type: 'string', default: '' },
    'body-cap': { type: 'string', default: String(64 * 1024 * 1024) },
  },
});
if (!args.component || !args['api-base']) {
  process.stderr.write('usage: node host.mjs --component <file.wasm> --api-base <url> --token <t> [--body-cap <bytes>]\n');
  process.exit(2);
}
const bodyCap = Number(args['body-cap']);
if (!Number.isSafeInteger(bodyCap) || bodyCap < 1024 * 1024) {
  // The contract: a host's response-body cap is at least 1 MiB.
  process.stderr.write(`--body-cap must be an integer of at least 1048576, not ${args['body-cap']}\n`);
  process.exit(2);
}
const apiBase = new URL(args['api-base']);
let accessToken = args.token;

/** What this host allows (`host.limits`). One pending request: `start` only remembers the
 * request and `wait` performs it, which the contract allows. */
const LIMITS = {
  maxResponseBody: BigInt(bodyCap),
  defaultTimeoutMs: 30_000n,
  maxTimeoutMs: 600_000n,
  maxPendingRequests: 1,
};

// --- packages ------------------------------------------------------------------------------
//
// The pinned packages are installed outside this folder (by tests/hosts.rs, under cargo's
// target dir) and found through NODE_PATH. ES modules ignore NODE_PATH, but CommonJS
// resolution honours it: resolve the entry file with `require.resolve`, then import that file.

const require = createRequire(import.meta.url);
const importPackage = (specifier) => import(pathToFileURL(require.resolve(specifier)).href);
const jco = await importPackage('@bytecodealliance/jco');
const shim = await importPackage('@bytecodealliance/preview2-shim');
const { WASIShim } = await importPackage('@bytecodealliance/preview2-shim/instantiation');

// --- the component -------------------------------------------------------------------------

/** Transpile the component once per process; compile its core modules once. */
async function loadComponent(path) {
  const { files, imports, exports } = await jco.transpile(readFileSync(path), {
    name: 'connector',
    // Imports are handed over at instantiation (no import statements in the glue), and
    // instantiation is synchronous: the guest's calls into the host block, as the contract's
    // imports do.
    instantiation: 'sync',
    // No TypeScript declarations: nothing here reads them.
    emitTypescriptDeclarations: false,
  });
  // The glue is an ES module: write it where `import()` can load it. The core modules are
  // compiled from memory.
  const dir = mkdtempSync(join(tmpdir(), 'connector-jco-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'connector.js'), files['connector.js']);
  const glue = await import(pathToFileURL(join(dir, 'connector.js')).href);
  const modules = new Map();
  for (const [name, bytes] of Object.entries(files)) {
    if (name.endsWith('.wasm')) modules.set(name, new WebAssembly.Module(bytes));
  }
  return {
    instantiateGlue: glue.instantiate,
    getCoreModule: (name) => modules.get(name),
    // Interface names without versions ('wasi:cli/stdin'); exports as [name, kind] pairs.
    imports,
    exports: exports.map(([name]) => name),
  };
}

/** Refuse a component this host cannot run, saying why, before anything runs: another
 * version of the contract, or an import outside the world (a file system, sockets). jco's glue
 * would otherwise fail on the first instantiation with a TypeError about a missing import. */
function checkComponent() {
  const exported = component.exports.find((name) => name.startsWith('pipeshub:connector/connector@'));
  const version = exported?.split('@')[1];
  // Before 1.0, the minor version is the compatibility line.
  if (!version || !version.startsWith('0.2.')) {
    throw new Error(
      `the component exports ${exported ?? 'no pipeshub:connector/connector'}; this host runs pipeshub:connector@0.2.x`,
    );
  }
  const offered = new Set(Object.keys({ ...guestWasi(), ...connectorImports(newOperation()) }));
  const missing = component.imports.filter((name) => !offered.has(name));
  if (missing.length > 0) {
    throw new Error(`the component imports ${missing.join(', ')}, which a connector is not given`);
  }
}

const component = await loadComponent(args.component);
const store = new RecordsStore();

/** Per-operation state: what must not outlive one instance. */
function newOperation() {
  return { pending: new Map(), nextRequestId: 0n, sinkFd: null };
}

/** A fresh instance of the component for one operation; returns its `connector` export. */
function instantiate(op) {
  // Keys are interface names WITHOUT the version ('pipeshub:connector/http'): that is what
  // jco's glue looks up, although its TypeScript declarations spell them with it.
  const imports = { ...guestWasi(), ...connectorImports(op) };
  return component.instantiateGlue(component.getCoreModule, imports).connector;
}

// --- WASI, without capabilities ------------------------------------------------------------

/** The guest's stdin: always at its end. It must be an instance of the `InputStream` class the
 * glue was given (jco checks resources with `instanceof`), hence a subclass of the shim's. */
class EmptyInput extends shim.io.streams.InputStream {
  read() {
    throw { tag: 'closed' };
  }
  blockingRead() {
    throw { tag: 'closed' };
  }
  skip() {
    throw { tag: 'closed' };
  }
  blockingSkip() {
    throw { tag: 'closed' };
  }
  subscribe() {
    // A pollable that is ready at once.
    return shim.clocks.monotonicClock.subscribeDuration(0n);
  }
}

/** The guest called `wasi:cli/exit`: the shim would end this process; end the operation. */
class GuestExit extends Error {}

let wasiImports = null;
function guestWasi() {
  if (wasiImports) return wasiImports;
  const guestStderr = shim.cli.stderr.getStderr();
  const wasi = new WASIShim({
    // preview2-shim's own cli gives the guest this process's environment, arguments and
    // working directory, reads our stdin (the protocol), writes our stdout, and ends the
    // process on exit; none of that is for a connector.
    cli: {
      environment: { getEnvironment: () => [], getArguments: () => [], initialCwd: () => undefined },
      exit: {
        exit(status) {
          throw new GuestExit(`the component called exit (${status?.tag ?? status})`);
        },
      },
      stdin: { getStdin: () => new EmptyInput() },
      stdout: { getStdout: () => guestStderr },
      stderr: { getStderr: () => guestStderr },
      terminalInput: shim.cli.terminalInput,
      terminalOutput: shim.cli.terminalOutput,
      // Not a terminal (the shim says every stream is one).
      terminalStdin: { getTerminalStdin: () => undefined },
      terminalStdout: { getTerminalStdout: () => undefined },
      terminalStderr: { getTerminalStderr: () => undefined },
    },
    sandbox: { preopens: {}, env: {}, args: [], enableNetwork: false },
  });
  wasiImports = {};
  // The world imports cli, clocks, io and random (Rust's standard library also imports the
  // terminal interfaces); filesystem, sockets and wasi:http are not handed over at all.
  for (const [name, value] of Object.entries(wasi.getImportObject())) {
    if (/^wasi:(cli|clocks|io|random)\//.test(name)) wasiImports[name] = value;
  }
  return wasiImports;
}

// --- the contract's imports ----------------------------------------------------------------

const ok = (val) => ({ tag: 'ok', val });
const err = (val) => ({ tag: 'err', val });

/** The contract's list cap (wit/connector.wit, `host-limits`): a list a call takes or returns
 * holds at most this many items; more is `invalid`, never a list cut short. */
const MAX_LIST_ITEMS = 10_000;

function withinCap(count, what) {
  if (count > MAX_LIST_ITEMS) {
    throw new StoreFailure('invalid', `${what}: ${count} items, more than the list cap of ${MAX_LIST_ITEMS}`);
  }
}

/** Run a store call; a StoreFailure becomes the `store-error` the guest sees. */
function storeCall(fn) {
  try {
    return ok(fn());
  } catch (e) {
    if (e instanceof StoreFailure) return err(e.toWit());
    throw e;
  }
}

const LOG_LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error']);

function connectorImports(op) {
  return {
    'pipeshub:connector/types': {},
    'pipeshub:connector/manifest-types': {},
    'pipeshub:connector/http': httpImports(op),
    'pipeshub:connector/credentials': {
      // This host holds an access token only: the user must connect again.
      refreshAccessToken: () =>
        err({ tag: 'reauthentication-required', val: 'this host holds no refresh token' }),
    },
    'pipeshub:connector/records': {
      apply: (changes, syncPoint) =>
        storeCall(() => (withinCap(changes.length, 'apply'), store.apply(changes, syncPoint))),
      getSyncPoint: () => storeCall(() => store.getSyncPoint()),
      getRecords: (ids) => storeCall(() => (withinCap(ids.length, 'get-records'), store.getRecords(ids))),
      listRecords: (after, limit) =>
        storeCall(() => (withinCap(limit, 'list-records limit'), store.listRecords(after, limit))),
      listShared: () =>
        storeCall(() => {
          const shared = store.listShared();
          withinCap(shared.length, 'list-shared');
          return shared;
        }),
      putOwner: (owner, group, permissions) =>
        storeCall(() => (withinCap(permissions.length, 'put-owner'), store.putOwner(owner, group, permissions))),
      clear: () => storeCall(() => store.clear()),
    },
    'pipeshub:connector/paths': {
      findByPaths: (paths) => storeCall(() => (withinCap(paths.length, 'find-by-paths'), store.findByPaths(paths))),
      listSubtree: (path, after, limit) =>
        storeCall(() => (withinCap(limit, 'list-subtree limit'), store.listSubtree(path, after, limit))),
    },
    'pipeshub:connector/content-sink': {
      write(chunk) {
        if (op.sinkFd === null) return err({ tag: 'closed', val: 'no content is being streamed' });
        if (chunk.length > bodyCap) {
          return err({ tag: 'storage', val: `a chunk of ${chunk.length} bytes exceeds max-response-body (${bodyCap})` });
        }
        try {
          // `chunk` may be a view of the guest's memory: write it before returning.
          let written = 0;
          while (written < chunk.length) written += writeSync(op.sinkFd, chunk, written);
          return ok(undefined);
        } catch (e) {
          return err({ tag: 'storage', val: e.message });
        }
      },
    },
    'pipeshub:connector/host': {
      log(level, message) {
        process.stderr.write(`connector ${LOG_LEVELS.has(level) ? level : 'info'}: ${message}\n`);
      },
      reportProgress() {
        // Progress is for people watching; the driver reads the summary.
      },
      // No tenant settings: the connector's defaults apply.
      config: () => [],
      shouldStop: () => false,
      sleep(milliseconds) {
        // A real, blocking wait (a rate limit's Retry-After, a back-off), at most 10 minutes.
        const ms = Number(milliseconds > 600_000n ? 600_000n : milliseconds);
        Atomics.wait(sleepCell, 0, 0, ms);
      },
      limits: () => LIMITS,
    },
  };
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

// --- http ----------------------------------------------------------------------------------

const worker = new Worker(new URL('./http-worker.mjs', import.meta.url));
worker.unref();
// The number of the last request the worker finished; it stores it, then notifies.
const finished = new Int32Array(new SharedArrayBuffer(4));
const { port1: replies, port2: workerPort } = new MessageChannel();
worker.postMessage({ finished, port: workerPort }, [workerPort]);
let requestNumber = 0;

/** Perform one routed request on the worker and block until its outcome. */
function blockingFetch(routed) {
  const number = ++requestNumber;
  replies.postMessage({ ...routed, number });
  // The worker applies the read timeout (between bytes); this bound on the whole request
  // only catches a worker that died.
  const deadline = Date.now() + Math.max(4 * routed.timeoutMs, 600_000);
  for (;;) {
    const seen = Atomics.load(finished, 0);
    if (seen === number) break;
    const left = deadline - Date.now();
    if (left <= 0) return err({ tag: 'connection', val: 'the HTTP worker did not answer' });
    Atomics.wait(finished, 0, seen, left);
  }
  // Replies to requests given up on earlier are dropped.
  let message;
  do message = receiveMessageOnPort(replies)?.message;
  while (message !== undefined && message.number !== number);
  if (message === undefined) return err({ tag: 'connection', val: 'the HTTP worker lost a reply' });
  if (message.err) {
    const { tag, val } = message.err;
    return err(tag === 'body-too-large' ? { tag, val: BigInt(val) } : { tag, val });
  }
  return ok(message.ok);
}

/** The manifest's hosts: the only destinations (read at start, before the first command). */
let allowedHosts = new Set();

/** Check a request and route it to the emulator; `{ err }` for what the contract refuses. */
function route(req) {
  let url;
  try {
    url = new URL(req.url);
  } catch {
    return { err: { tag: 'invalid-request', val: `not a URL: ${req.url}` } };
  }
  if (url.protocol !== 'https:' || !allowedHosts.has(url.hostname) || (url.port !== '' && url.port !== '443')) {
    return { err: { tag: 'destination-not-allowed', val: `${url.protocol}//${url.host}` } };
  }
  if (url.username || url.password) {
    return { err: { tag: 'invalid-request', val: 'credentials in the URL' } };
  }
  const headers = [];
  for (const [name, value] of req.headers) {
    const lower = name.toLowerCase();
    if (lower === 'authorization') {
      return { err: { tag: 'invalid-request', val: 'an Authorization header is set by the host: ask for `authenticated`' } };
    }
    // The host frames the body itself.
    if (lower === 'content-length' || lower === 'transfer-encoding' || lower === 'host') continue;
    headers.push([name, value]);
  }
  if (req.authenticated) {
    if (!accessToken) return { err: { tag: 'no-credentials', val: 'no access token' } };
    headers.push(['Authorization', `Bearer ${accessToken}`]);
  }
  if (req.body.length > bodyCap) {
    return { err: { tag: 'invalid-request', val: `a request body of ${req.body.length} bytes exceeds ${bodyCap}` } };
  }
  const asked = req.timeoutMs ?? LIMITS.defaultTimeoutMs;
  const timeoutMs = Number(asked > LIMITS.maxTimeoutMs ? LIMITS.maxTimeoutMs : asked);
  // Every allowed host maps onto the one base URL (the emulator serves api, content, notify).
  const target = new URL(apiBase);
  target.pathname = apiBase.pathname.replace(/\/$/, '') + url.pathname;
  target.search = url.search;
  return {
    ok: {
      url: target.href,
      method: req.method.toUpperCase(),
      headers,
      // A copy: the guest's memory may move or be reused once this call returns.
      body: req.body.slice(),
      timeoutMs,
      cap: bodyCap,
    },
  };
}

function httpImports(op) {
  return {
    send(req) {
      const routed = route(req);
      return routed.err ? err(routed.err) : blockingFetch(routed.ok);
    },
    start(req) {
      const routed = route(req);
      if (routed.err) return err(routed.err);
      if (op.pending.size >= LIMITS.maxPendingRequests) {
        return err({ tag: 'invalid-request', val: `more than ${LIMITS.maxPendingRequests} pending request(s)` });
      }
      op.nextRequestId += 1n;
      op.pending.set(op.nextRequestId, routed.ok);
      return ok(op.nextRequestId);
    },
    wait(id) {
      const routed = op.pending.get(id);
      if (routed === undefined) return err({ tag: 'invalid-request', val: `no pending request ${id}` });
      op.pending.delete(id);
      return blockingFetch(routed);
    },
  };
}

// --- the driver's commands -----------------------------------------------------------------

/** Run one export on a fresh instance; a connector-error becomes `{ err: { kind, message } }`,
 * anything else (a trap, a bug here) `{ err: { kind: 'host', ... } }`. */
function call(fn, op = newOperation()) {
  try {
    return { ok: fn(instantiate(op)) };
  } catch (e) {
    const payload = e?.payload;
    if (payload && typeof payload.tag === 'string') {
      const message = payload.tag === 'rate-limited' ? payload.val.reason : String(payload.val);
      return { err: { kind: payload.tag, message } };
    }
    return hostError(e);
  }
}

/** A failure that is not the connector's answer: a trap, a guest that exits, a bug here. The
 * driver gets one line; the stack goes to stderr. */
function hostError(e) {
  process.stderr.write(`host error: ${e?.stack ?? e}\n`);
  return { err: { kind: 'host', message: e instanceof Error ? `${e.name}: ${e.message}` : String(e) } };
}

const num = (big) => (big === undefined ? null : Number(big));
const opt = (value) => (value === undefined ? null : value);

function recordJson(r) {
  return {
    external_id: r.externalId,
    revision: opt(r.revision),
    name: r.name,
    path_display: r.path?.display ?? null,
    path_lower: r.path?.lower ?? null,
    parent_external_id: opt(r.parentExternalId),
    kind: r.kind,
    mime_type: r.mimeType,
    size: Number(r.size),
    content_hash: opt(r.contentHash),
    client_modified: opt(r.clientModified),
    server_modified: opt(r.serverModified),
    is_downloadable: r.isDownloadable,
    export_format: opt(r.exportFormat),
    web_url: opt(r.webUrl),
    is_shared: r.isShared,
    shared_url: opt(r.sharedUrl),
  };
}

const commands = {
  manifest: () =>
    call((c) => {
      const m = c.manifest();
      return { name: m.name, display_name: m.displayName, allowed_hosts: m.allowedHosts };
    }),
  'test-connection': () =>
    call((c) => {
      const u = c.testConnection();
      return { external_id: u.externalId, email: u.email, display_name: u.displayName };
    }),
  sync: () =>
    call((c) => {
      const s = c.sync();
      return {
        kind: s.kind,
        pages: s.pages,
        entries: num(s.entries),
        created: num(s.created),
        content_updates: num(s.contentUpdates),
        metadata_updates: num(s.metadataUpdates),
        deletions: num(s.deletions),
        api_calls: s.apiCalls,
        interrupted: s.interrupted,
      };
    }),
  records: () => ({ ok: store.liveRecords().map(recordJson) }),
  events: () => ({ ok: store.events().map((e) => ({ seq: e.seq, external_id: e.externalId, kind: e.kind })) }),
  'sync-status': () => {
    const status = store.syncStatus();
    return { ok: { phase: status?.phase ?? null, detail: status?.detail ?? null } };
  },
  stream: ({ id, out }) => {
    const op = newOperation();
    op.sinkFd = openSync(out, 'w');
    try {
      return call((c) => {
        const started = process.hrtime.bigint();
        const s = c.streamRecord(id);
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        return {
          size: Number(s.size),
          content_hash: opt(s.contentHash),
          verified: s.verified,
          mime_type: s.mimeType,
          seconds,
        };
      }, op);
    } finally {
      closeSync(op.sinkFd);
    }
  },
  'signed-url': ({ id }) =>
    call((c) => {
      const u = c.getSignedUrl(id);
      return { url: u.url, expires_at: Number(u.expiresAt) };
    }),
  'set-token': ({ token }) => {
    accessToken = token;
    return { ok: null };
  },
};

function respond(response) {
  // Synchronous, so a response is complete on the pipe before the next command is read. Node
  // makes its stdio pipes non-blocking: a write may take only part of a large response (the
  // records of a whole account) or fail with EAGAIN while the reader is behind, so loop.
  const bytes = Buffer.from(JSON.stringify(response) + '\n');
  let offset = 0;
  while (offset < bytes.length) {
    try {
      offset += writeSync(1, bytes, offset);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(sleepCell, 0, 0, 1);
    }
  }
}

try {
  checkComponent();
  // The manifest makes no calls; a fresh instance answers it before anything else runs.
  allowedHosts = new Set(instantiate(newOperation()).manifest().allowedHosts);
} catch (e) {
  process.stderr.write(`cannot run ${args.component}: ${e?.message ?? e}\n`);
  process.exit(1);
}

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line.trim() === '') continue;
  let command;
  try {
    command = JSON.parse(line);
  } catch (e) {
    respond({ err: { kind: 'host', message: `not JSON: ${e.message}` } });
    continue;
  }
  if (command.op === 'quit') {
    respond({ ok: null });
    process.exit(0);
  }
  const handler = commands[command.op];
  if (!handler) {
    respond({ err: { kind: 'host', message: `unknown op ${JSON.stringify(command.op)}` } });
    continue;
  }
  try {
    respond(handler(command));
  } catch (e) {
    respond(hostError(e));
  }
}
process.exit(0);
