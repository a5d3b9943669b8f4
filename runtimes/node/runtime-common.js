'use strict';
// Shared core of the Lambda@Home Node.js runtime, used by both transports
// (bootstrap.js = AWS Runtime API 2018-06-01 over HTTP, bootstrap-websocket.js =
// WebSocket Runtime API of docs/websocket-protocol.md). It owns: configuration from the
// environment, handler loading (CJS and ESM), the AWS-style console patch, the
// context object, handler invocation semantics (promise / callback /
// callbackWaitsForEmptyEventLoop), response streaming (the global `awslambda`:
// streamifyResponse, HttpResponseStream; docs/streaming.md) and error formatting.
// No third-party modules.
// Invariant: at most one invocation is in flight (`current`), as in AWS.

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const { Writable } = require('stream');
const { pathToFileURL } = require('url');

const DEFAULT_RUNTIME_API = 'host.docker.internal:9001';
// An abstract socket's address is sun_path after its leading NUL: 107 bytes.
const ABSTRACT_ADDRESS_BYTES = 107;
// Exit codes AWS's Node runtime uses after reporting a fatal error for an invocation.
const EXIT_UNCAUGHT_EXCEPTION = 129;
const EXIT_UNHANDLED_REJECTION = 128;

function readConfig(env = process.env) {
  return {
    runtimeApi: env.AWS_LAMBDA_RUNTIME_API || DEFAULT_RUNTIME_API,
    runtimeSocket: runtimeSocketPath(env.LAMBDA_RUNTIME_API_SOCKET),
    handler: env._HANDLER || '',
    taskRoot: env.LAMBDA_TASK_ROOT || process.cwd(),
    functionName: env.AWS_LAMBDA_FUNCTION_NAME || '',
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION || '$LATEST',
    memorySize: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE || '128',
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME || '',
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME || '',
    useWebSocket: env.LAMBDA_USE_WEBSOCKET !== 'false',
    // `library` opts into the `ws` package; anything else uses the built-in client.
    wsClient: env.LAMBDA_WS_CLIENT === 'library' ? 'library' : 'builtin',
    instanceId: env.LAMBDA_INSTANCE_ID || '',
    runtimeName: env.LAMBDA_RUNTIME_NAME || `nodejs${process.versions.node.split('.')[0]}.x`,
    debug: Boolean(env.LAMBDA_RUNTIME_DEBUG),
  };
}

// `host:port` of AWS_LAMBDA_RUNTIME_API (an IPv6 host may be in brackets); port 80 if absent.
function parseHostPort(runtimeApi) {
  const idx = runtimeApi.lastIndexOf(':');
  const host = idx > 0 ? runtimeApi.slice(0, idx) : runtimeApi;
  const port = idx > 0 ? Number(runtimeApi.slice(idx + 1)) : 80;
  return { host: host.replace(/^\[(.*)\]$/, '$1'), port };
}

// The instance's own Unix socket for the Runtime API, as a path for net.connect, or '' for none:
// LAMBDA_RUNTIME_API_SOCKET is `@NAME`, an abstract socket whose address fills sun_path (the name
// padded with NULs to 107 bytes; Node 20 always passes the whole of sun_path, newer Node and
// Python what they are given, so the padding is explicit).
function runtimeSocketPath(value) {
  if (!value || !value.startsWith('@')) return '';
  const name = value.slice(1);
  const bytes = Buffer.byteLength(name);
  if (bytes > ABSTRACT_ADDRESS_BYTES || name.includes('\0')) return '';
  return `\0${name}${'\0'.repeat(ABSTRACT_ADDRESS_BYTES - bytes)}`;
}

// Opens a connection to the Runtime API: the instance's Unix socket while it works, else TCP with
// Nagle off. A Unix connection that fails before it opens switches this process to TCP for good
// (the server serves the instance on both); the caller sees that failure like any other and
// connects again.
function connectRuntimeApi(config, host, port) {
  if (config.runtimeSocket) {
    const socket = net.connect({ path: config.runtimeSocket });
    let opened = false;
    socket.once('connect', () => {
      opened = true;
    });
    socket.once('error', () => {
      if (!opened) config.runtimeSocket = '';
    });
    return socket;
  }
  const socket = net.connect({ host, port });
  socket.setNoDelay(true);
  return socket;
}

// Runtime diagnostics are plain lines on stdout (not request-prefixed), written
// with the original stream so the console patch does not reformat them.
function runtimeLog(message) {
  process.stdout.write(`${message}\n`);
}

function makeDebugLog(config) {
  return config.debug ? runtimeLog : () => {};
}

// ---------------------------------------------------------------- console patch

let currentRequestId; // printed as "undefined" outside invocations, like AWS

const LOG_LEVELS = [
  ['log', 'INFO'],
  ['info', 'INFO'],
  ['warn', 'WARN'],
  ['error', 'ERROR'],
  ['debug', 'DEBUG'],
  ['trace', 'TRACE'],
];

// Same line shape as AWS's LogPatch: `<ISO time>\t<request id>\t<LEVEL>\t<message>`;
// newlines inside a message become \r so one call stays one log record.
function formatLogLine(level, args) {
  const message = util.format(...args).replace(/\n/g, '\r');
  return `${new Date().toISOString()}\t${currentRequestId}\t${level}\t${message}\n`;
}

// AWS's application log levels, least severe first (AWS_LAMBDA_LOG_LEVEL).
const LEVEL_ORDER = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];

// With LoggingConfig.LogFormat JSON (AWS_LAMBDA_LOG_FORMAT=JSON) a console call is one JSON
// record as AWS's runtime writes it: timestamp, level, requestId, message (and for an error
// argument its type, message and stack), filtered by AWS_LAMBDA_LOG_LEVEL.
function formatJsonRecord(level, args) {
  const record = {
    timestamp: new Date().toISOString(),
    level,
    requestId: currentRequestId,
    message: util.format(...args),
  };
  const err = args.find((a) => isErrorLike(a));
  if (err) {
    record.errorType = err.name;
    record.errorMessage = err.message;
    record.stackTrace = typeof err.stack === 'string' ? err.stack.split('\n') : [];
  }
  return `${JSON.stringify(record)}\n`;
}

function patchConsole(env = process.env) {
  const json = env.AWS_LAMBDA_LOG_FORMAT === 'JSON';
  const min = LEVEL_ORDER.indexOf((env.AWS_LAMBDA_LOG_LEVEL || 'INFO').toUpperCase());
  const methods = json ? [...LOG_LEVELS, ['fatal', 'FATAL']] : LOG_LEVELS;
  for (const [method, level] of methods) {
    if (json && LEVEL_ORDER.indexOf(level) < min) {
      console[method] = () => {};
      continue;
    }
    const format = json ? formatJsonRecord : formatLogLine;
    console[method] = (...args) => {
      process.stdout.write(format(level, args));
    };
  }
}

// ---------------------------------------------------------------- errors

class RuntimeError extends Error {
  constructor(type, message) {
    super(message);
    Object.defineProperty(this, 'name', { value: type, enumerable: false });
  }
}

function isErrorLike(value) {
  return (
    util.types.isNativeError(value) ||
    (value !== null &&
      typeof value === 'object' &&
      typeof value.message === 'string' &&
      typeof value.name === 'string')
  );
}

function describeNonError(value) {
  if (value !== null && typeof value === 'object') {
    try {
      return JSON.stringify(value);
    } catch (_err) {
      return String(value);
    }
  }
  return String(value);
}

// errorType is the class: an explicit `name` wins (TypeError, Runtime.*), otherwise
// the constructor name, so `class MyError extends Error {}` reports "MyError".
function errorTypeOf(err) {
  if (typeof err.name === 'string' && err.name && err.name !== 'Error') return err.name;
  const ctor = err.constructor && err.constructor.name;
  return ctor || 'Error';
}

function formatError(err) {
  if (isErrorLike(err)) {
    return {
      errorMessage: String(err.message),
      errorType: errorTypeOf(err),
      stackTrace: typeof err.stack === 'string' ? err.stack.split('\n') : [],
    };
  }
  return { errorMessage: describeNonError(err), errorType: typeof err, stackTrace: [] };
}

// ---------------------------------------------------------------- handler loading

const HANDLER_EXPR = /^([^.]*)\.(.*)$/;

function parseHandlerString(handlerString) {
  const slash = handlerString.lastIndexOf('/');
  const moduleRoot = handlerString.slice(0, slash + 1);
  const match = HANDLER_EXPR.exec(handlerString.slice(slash + 1));
  if (!match || !match[1] || !match[2]) {
    throw new RuntimeError('Runtime.MalformedHandlerName', `Bad handler ${handlerString}`);
  }
  return { moduleRoot, moduleName: match[1], handlerPath: match[2] };
}

function nearestPackageType(dir) {
  for (let current = dir; ; current = path.dirname(current)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(current, 'package.json'), 'utf8'));
      return pkg.type === 'module' ? 'module' : 'commonjs';
    } catch (_err) {
      // no (readable) package.json here: keep walking up
    }
    if (path.dirname(current) === current) return 'commonjs';
  }
}

function importFile(file) {
  return import(pathToFileURL(file).href);
}

async function loadJsFile(file) {
  if (nearestPackageType(path.dirname(file)) === 'module') return importFile(file);
  try {
    return require(file);
  } catch (err) {
    if (err && (err.code === 'ERR_REQUIRE_ESM' || err.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
      return importFile(file);
    }
    throw err;
  }
}

function resolveBareModule(moduleName, moduleDir) {
  try {
    return require.resolve(path.join(moduleDir, moduleName));
  } catch (_err) {
    // not a file/directory module: maybe a package in node_modules (AWS allows it)
  }
  try {
    return require.resolve(moduleName, { paths: [moduleDir] });
  } catch (_err) {
    return null;
  }
}

async function loadModule(moduleDir, moduleName) {
  const base = path.join(moduleDir, moduleName);
  if (fs.existsSync(`${base}.js`)) return loadJsFile(`${base}.js`);
  if (fs.existsSync(`${base}.mjs`)) return importFile(`${base}.mjs`);
  if (fs.existsSync(`${base}.cjs`)) return require(`${base}.cjs`);
  const resolved = resolveBareModule(moduleName, moduleDir);
  if (!resolved) {
    const err = new Error(`Cannot find module '${moduleName}'`);
    err.code = 'MODULE_NOT_FOUND';
    throw err;
  }
  return resolved.endsWith('.mjs') ? importFile(resolved) : require(resolved);
}

// Classify module-evaluation failures the way AWS does.
function classifyLoadError(err) {
  if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
    const wrapped = new RuntimeError('Runtime.ImportModuleError', `Error: ${err.message}`);
    wrapped.stack = `${wrapped.name}: ${wrapped.message}`;
    return wrapped;
  }
  if (err instanceof SyntaxError) {
    const wrapped = new RuntimeError('Runtime.UserCodeSyntaxError', `SyntaxError: ${err.message}`);
    wrapped.stack = `${wrapped.name}: ${wrapped.message}\n${err.stack || ''}`.trimEnd();
    return wrapped;
  }
  return err;
}

function resolveHandlerPath(mod, handlerPath) {
  return handlerPath.split('.').reduce((obj, key) => (obj == null ? undefined : obj[key]), mod);
}

// `src/app.handler` -> LAMBDA_TASK_ROOT/src/app.{js,mjs,cjs}, export `handler`
// (nested paths such as `index.handlers.main` are followed as AWS does).
async function loadHandler(handlerString, taskRoot) {
  const { moduleRoot, moduleName, handlerPath } = parseHandlerString(handlerString);
  let mod;
  try {
    mod = await loadModule(path.resolve(taskRoot, moduleRoot), moduleName);
  } catch (err) {
    throw classifyLoadError(err);
  }
  const fn = resolveHandlerPath(mod, handlerPath);
  const label = `${moduleName}.${handlerPath}`;
  if (fn === undefined) {
    throw new RuntimeError('Runtime.HandlerNotFound', `${label} is undefined or not exported`);
  }
  if (typeof fn !== 'function') {
    throw new RuntimeError('Runtime.HandlerNotFound', `${label} is not a function`);
  }
  return fn;
}

// ---------------------------------------------------------------- invocation

function parseJsonField(value) {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch (_err) {
    return value; // keep the raw string rather than crash the runtime
  }
}

// inv: { requestId, deadlineMs, invokedFunctionArn, clientContext, cognitoIdentity }
function buildContext(config, inv, members) {
  const deadlineMs = Number(inv.deadlineMs);
  return {
    callbackWaitsForEmptyEventLoop: true,
    awsRequestId: inv.requestId,
    invokedFunctionArn: inv.invokedFunctionArn,
    functionName: config.functionName,
    functionVersion: config.functionVersion,
    memoryLimitInMB: String(config.memorySize),
    logGroupName: config.logGroupName,
    logStreamName: config.logStreamName,
    clientContext: parseJsonField(inv.clientContext),
    identity: parseJsonField(inv.cognitoIdentity),
    getRemainingTimeInMillis: () =>
      Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now()) : 0,
    ...members,
  };
}

let current = null; // { finish(outcome), onEmptyLoop: fn|null } of the running invocation

function isPromise(value) {
  return value !== null && typeof value === 'object' && typeof value.then === 'function';
}

function success(result) {
  return { ok: true, result };
}

function failure(err) {
  return { ok: false, error: formatError(err) };
}

// Back to the state before any invocation (log lines say "undefined", no trace id): after the
// pooled process's warm-up invocations, so that the instance's init sees what an ordinary
// start's does.
function resetInvocationState() {
  currentRequestId = undefined;
  current = null;
  delete process.env._X_AMZN_TRACE_ID;
}

function setInvocationEnvironment(inv) {
  currentRequestId = inv.requestId;
  if (inv.traceId) process.env._X_AMZN_TRACE_ID = inv.traceId;
  else delete process.env._X_AMZN_TRACE_ID;
}

// Runs one invocation with AWS's Node semantics and resolves with
// { ok: true, result } | { ok: false, error: {errorMessage, errorType, stackTrace}, exitCode? }.
// A returned promise settles it at once; a callback settles it when the event loop
// empties unless context.callbackWaitsForEmptyEventLoop is false; a handler that does
// neither succeeds with null once the event loop is empty (AWS's default exit listener).
function invoke(handler, config, inv) {
  return new Promise((resolve) => {
    let settled = false;
    let called = false; // only the first of callback/done/succeed/fail counts
    const state = {};
    state.finish = (outcome) => {
      if (settled) return;
      settled = true;
      if (current === state) current = null;
      resolve(outcome);
    };
    state.onEmptyLoop = () => state.finish(success(null));
    current = state;
    setInvocationEnvironment(inv);

    const once = (fn) => (...args) => {
      if (called) return;
      called = true;
      fn(...args);
    };
    const done = (err, result) => {
      state.onEmptyLoop = null;
      state.finish(err !== undefined && err !== null ? failure(err) : success(result));
    };
    const fail = (err) => done(err === undefined || err === null ? 'handled' : err);
    const context = buildContext(config, inv, {
      done: once(done),
      succeed: once((result) => done(null, result)),
      fail: once(fail),
    });
    const callback = once((err, result) => {
      if (err !== undefined && err !== null) done(err);
      else if (!context.callbackWaitsForEmptyEventLoop) done(null, result);
      else state.onEmptyLoop = () => state.finish(success(result));
    });

    try {
      const returned = handler(inv.event, context, callback);
      if (isPromise(returned)) {
        returned.then(once((result) => done(null, result)), once(fail));
      }
    } catch (err) {
      callback(err);
    }
  });
}

// ---------------------------------------------------------------- response streaming
//
// AWS's Node runtime API for streamed responses: the global `awslambda` with
// streamifyResponse(handler) (handler(event, responseStream, context)) and
// HttpResponseStream.from(responseStream, metadata). A transport supplies a sink
// { start(contentType), write(buffer) -> Promise, finish(error|null) -> Promise }; the
// response stream calls start before its first byte (or at end(), for an empty stream).

const STREAMING_HANDLER = Symbol.for('aws.lambda.runtime.handler.streaming');
const STREAMING_MODE = 'response';
const DEFAULT_STREAM_CONTENT_TYPE = 'application/octet-stream';
const HTTP_INTEGRATION_CONTENT_TYPE = 'application/vnd.awslambda.http-integration-response';
// The HTTP-integration prelude (JSON metadata) is followed by this many NUL bytes.
const HTTP_INTEGRATION_DELIMITER_BYTES = 8;

function streamifyResponse(handler, options) {
  if (typeof handler !== 'function') throw new TypeError('streamifyResponse expects a function');
  handler[STREAMING_HANDLER] = STREAMING_MODE;
  if (options && options.highWaterMark) handler.streamHighWaterMark = options.highWaterMark;
  return handler;
}

function isStreamingHandler(handler) {
  return Boolean(handler) && handler[STREAMING_HANDLER] === STREAMING_MODE;
}

const HttpResponseStream = {
  // Declares an HTTP-integration response (function URLs): metadata {statusCode, headers,
  // cookies} as JSON, then 8 NUL bytes, then the body the handler writes.
  from(responseStream, metadata) {
    responseStream.setContentType(HTTP_INTEGRATION_CONTENT_TYPE);
    responseStream.write(JSON.stringify(metadata || {}));
    responseStream.write(Buffer.alloc(HTTP_INTEGRATION_DELIMITER_BYTES));
    return responseStream;
  },
};

function installAwsLambdaGlobal() {
  globalThis.awslambda = { streamifyResponse, HttpResponseStream };
}

// The handler's responseStream: a Writable whose bytes go to the sink as they are written
// (each write completes when the transport has taken it, which is the backpressure).
function createResponseStream(sink, highWaterMark) {
  let contentType = DEFAULT_STREAM_CONTENT_TYPE;
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    sink.start(contentType);
  };
  const stream = new Writable({
    highWaterMark,
    write(chunk, _encoding, cb) {
      start();
      sink.write(chunk).then(() => cb(), cb);
    },
    final(cb) {
      start();
      cb();
    },
  });
  stream.setContentType = (type) => {
    if (started) throw new Error('The content type cannot be set after the first write');
    contentType = String(type);
  };
  return stream;
}

// Runs a streaming handler: resolves { ok: true } once the handler has resolved and its
// stream has ended (as on AWS, the handler must end() it), or { ok: false, error } when the
// handler throws or rejects, or the stream fails. The transport then finishes the sink.
function invokeStreaming(handler, config, inv, sink) {
  return new Promise((resolve) => {
    let settled = false;
    const state = { onEmptyLoop: null };
    state.finish = (outcome) => {
      if (settled) return;
      settled = true;
      if (current === state) current = null;
      resolve(outcome);
    };
    current = state;
    setInvocationEnvironment(inv);
    const stream = createResponseStream(sink, handler.streamHighWaterMark);
    const finished = new Promise((res, rej) => {
      stream.on('finish', res);
      stream.on('error', rej);
    });
    finished.catch((err) => state.finish(failure(err)));
    let returned;
    try {
      returned = handler(inv.event, stream, buildContext(config, inv, {}));
    } catch (err) {
      state.finish(failure(err));
      return;
    }
    Promise.resolve(returned).then(
      // A failed stream was reported by finished.catch above.
      () => finished.then(() => state.finish(success(null)), () => {}),
      (err) => state.finish(failure(err)),
    );
  });
}

// JSON body of a successful invocation; undefined becomes "null" like AWS.
function serializeResult(result) {
  try {
    const body = JSON.stringify(result === undefined ? null : result);
    return body === undefined ? 'null' : body;
  } catch (err) {
    throw new RuntimeError(
      'Runtime.SerializationError',
      `Unable to stringify response body: ${err && err.message}`,
    );
  }
}

function logInvokeError(error) {
  console.error('Invoke Error', `\t${JSON.stringify(error)}`);
}

// ---------------------------------------------------------------- process hooks

function failCurrentOrExit(err, exitCode, label) {
  if (current) {
    current.finish({ ...failure(err), exitCode });
    return;
  }
  console.error(label, `\t${JSON.stringify(formatError(err))}`);
  process.exit(exitCode);
}

function unhandledRejectionError(reason) {
  const text = isErrorLike(reason)
    ? `${errorTypeOf(reason)}: ${reason.message}`
    : describeNonError(reason);
  const err = new RuntimeError('Runtime.UnhandledPromiseRejection', text);
  err.stack = `${err.name}: ${text}${isErrorLike(reason) && reason.stack ? `\n${reason.stack}` : ''}`;
  return err;
}

function installProcessHooks() {
  process.on('SIGTERM', () => process.exit(0));
  process.on('uncaughtException', (err) =>
    failCurrentOrExit(err, EXIT_UNCAUGHT_EXCEPTION, 'Uncaught Exception'),
  );
  process.on('unhandledRejection', (reason) =>
    failCurrentOrExit(
      unhandledRejectionError(reason),
      EXIT_UNHANDLED_REJECTION,
      'Unhandled Promise Rejection',
    ),
  );
  // The transports keep no referenced handle while a handler runs, so an empty
  // event loop means the handler's own work is finished.
  process.on('beforeExit', () => {
    if (current && current.onEmptyLoop) {
      const onEmptyLoop = current.onEmptyLoop;
      current.onEmptyLoop = null;
      setImmediate(onEmptyLoop);
    }
  });
}

module.exports = {
  DEFAULT_RUNTIME_API,
  HTTP_INTEGRATION_CONTENT_TYPE,
  HttpResponseStream,
  createResponseStream,
  installAwsLambdaGlobal,
  invokeStreaming,
  isStreamingHandler,
  streamifyResponse,
  RuntimeError,
  buildContext,
  connectRuntimeApi,
  formatError,
  formatLogLine,
  installProcessHooks,
  invoke,
  loadHandler,
  logInvokeError,
  makeDebugLog,
  parseHandlerString,
  parseHostPort,
  patchConsole,
  readConfig,
  resetInvocationState,
  runtimeLog,
  runtimeSocketPath,
  serializeResult,
};
