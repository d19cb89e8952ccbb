#!/usr/bin/env node
// A scripted model server for testing braid against the real Claude Code and
// Codex CLIs on loopback. Node built-ins only (http, fs, zlib).
//
//   node model_server.mjs [--script FILE] [--log FILE] [--port N] [--host H]
//   env: MODEL_SERVER_SCRIPT, MODEL_SERVER_LOG, MODEL_SERVER_PORT (default 0)
//
// Prints the port it listens on, alone on the first line of stdout, once
// listening. Speaks:
//   - the Anthropic Messages API (Claude Code, via ANTHROPIC_BASE_URL):
//     POST /v1/messages (stream or not), POST /v1/messages/count_tokens,
//     GET /v1/models[/ID]
//   - the OpenAI Responses API (Codex, via a model provider's base_url):
//     POST /v1/responses (SSE), GET /v1/models
//   - HEAD/GET /api/hello: Claude Code's connectivity probe at startup
//   - GET /__log: the request log so far (JSON array), GET /__state: how
//     far each script has got. Anything else: 404 JSON, logged.
//   - as HTTP(S)_PROXY: a CONNECT (or an absolute-URL request) for any host
//     but loopback is logged with kind "proxy" and refused (403), so a test
//     can assert that a CLI tried to reach nothing but this server.
//
// Why Node: its http server streams (res.write per SSE event, chunked,
// keep-alive) without any threading of our own, node is already needed for
// npm and for Codex's launcher, and the same JSON values go in and out.
//
// The script (JSON) says what each model turn answers:
//   {
//     "anthropic": [TURN, ...],   // consumed by the main agent's /v1/messages calls
//     "openai":    [TURN, ...],   // consumed by /v1/responses calls
//     "turns":     [TURN, ...],   // for an API whose own list is absent (each API keeps its own place in it)
//     "exhausted": TURN           // answered once a list is used up (default: text)
//   }
// TURN:
//   {
//     "text": "final words",                      // a text block / message
//     "tool_use": [{"name": "Write", "input": {...}, "id": "toolu_x"}],   // anthropic
//     "function_call": [{"name": "exec_command", "arguments": {"cmd": "ls"}, "call_id": "call_x"}], // openai
//     "custom_tool_call": [{"name": "apply_patch", "input": "*** Begin Patch..."}],          // openai
//     "usage": {"input_tokens": 100, "output_tokens": 20,
//               "cache_read_input_tokens": 30, "cache_creation_input_tokens": 40,  // anthropic
//               "cached_tokens": 30, "cache_write_tokens": 40, "reasoning_tokens": 0}, // openai
//     "model": "claude-sonnet-4-5",               // model named in the answer (default: the request's)
//     "error": {"status": 429, "headers": {"retry-after": "1"}, "body": {...}},
//     "repeat": 3,                                // answer this turn this many times (errors: retries)
//     "stream_error": {"type": "overloaded_error", "message": "..."},   // anthropic: SSE error event after message_start
//     "failed": {"code": "rate_limit_exceeded", "message": "..."},      // openai: response.failed after response.created
//     "delay_ms": 0,                              // pause before each SSE event
//     "hang_after": 3                             // send this many SSE events, then stall forever
//   }
// A list may be used up: later calls get "exhausted" (default: a text turn
// saying so). Claude Code's side calls (the ones with no tools: titles,
// topic checks, quota probes) do not consume the anthropic list; they get a
// short text answer, unless the script sets "side": TURN.
//
// Every request is appended to the log file (JSON lines):
//   {"seq", "time", "method", "path", "headers", "body", "api", "kind", "turn"}
// where body is the parsed JSON (or a string; gzip/deflate/br bodies are
// decoded), api is "anthropic"/"openai", kind is one of main, side,
// count_tokens, models, hello, proxy, unknown, and turn is the index in the
// script list the answer came from (null when none). A retried call logs a
// new line with the same turn index while a "repeat" lasts.

import http from "node:http";
import fs from "node:fs";
import zlib from "node:zlib";

function arg(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const scriptPath = arg("--script") ?? process.env.MODEL_SERVER_SCRIPT;
const logPath = arg("--log") ?? process.env.MODEL_SERVER_LOG;
const port = Number(arg("--port") ?? process.env.MODEL_SERVER_PORT ?? 0);
const host = arg("--host") ?? process.env.MODEL_SERVER_HOST ?? "127.0.0.1";

const script = scriptPath ? JSON.parse(fs.readFileSync(scriptPath, "utf8")) : {};
const queues = {
  anthropic: script.anthropic ?? script.turns ?? [],
  openai: script.openai ?? script.turns ?? [],
};
// position in each list, and how many times the current turn was answered
const cursor = { anthropic: { i: 0, n: 0 }, openai: { i: 0, n: 0 } };
const memoryLog = [];
let seq = 0;
let idCounter = 0;
const nextId = (p) => `${p}_${(++idCounter).toString().padStart(6, "0")}${Date.now().toString(36)}`;

function record(entry) {
  memoryLog.push(entry);
  if (logPath) fs.appendFileSync(logPath, JSON.stringify(entry) + "\n");
}

// Take the next turn of a list; a turn with "repeat": n is answered n times.
function take(api) {
  const q = queues[api];
  const c = cursor[api];
  if (c.i >= q.length) {
    return { turn: script.exhausted ?? { text: `(model_server: ${api} script exhausted)` }, index: null };
  }
  const turn = q[c.i];
  const index = c.i;
  c.n += 1;
  if (c.n >= (turn.repeat ?? 1)) {
    c.i += 1;
    c.n = 0;
  }
  return { turn, index };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let buf = Buffer.concat(chunks);
      const enc = (req.headers["content-encoding"] || "").toLowerCase();
      try {
        if (enc === "gzip") buf = zlib.gunzipSync(buf);
        else if (enc === "deflate") buf = zlib.inflateSync(buf);
        else if (enc === "br") buf = zlib.brotliDecompressSync(buf);
        else if (enc === "zstd" && typeof zlib.zstdDecompressSync === "function") buf = zlib.zstdDecompressSync(buf);
        else if (enc && enc !== "identity") {
          resolve({ raw: buf.toString("base64"), encoding: enc });
          return;
        }
      } catch (e) {
        resolve({ raw: buf.toString("base64"), encoding: enc, error: String(e) });
        return;
      }
      const text = buf.toString("utf8");
      if (!text) return resolve(null);
      try {
        resolve(JSON.parse(text));
      } catch {
        resolve(text);
      }
    });
    req.on("error", reject);
  });
}

function sendJson(res, status, obj, headers = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers });
  res.end(body);
}

function sendError(res, err, api) {
  const status = err.status ?? 429;
  const defaultBody =
    api === "anthropic"
      ? { type: "error", error: { type: status === 429 ? "rate_limit_error" : status === 529 ? "overloaded_error" : "api_error", message: err.message ?? `scripted error ${status}` } }
      : { error: { message: err.message ?? `scripted error ${status}`, type: status === 429 ? "rate_limit_exceeded" : "server_error", code: status === 429 ? "rate_limit_exceeded" : null, param: null } };
  sendJson(res, status, err.body ?? defaultBody, err.headers ?? {});
}

// An SSE writer honouring delay_ms and hang_after.
function sse(res, turn) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
  res.flushHeaders();
  const delay = turn.delay_ms ?? 0;
  const hangAfter = turn.hang_after ?? Infinity;
  let sent = 0;
  let hung = false;
  const events = [];
  return {
    event(name, data) {
      events.push([name, data]);
    },
    async flush() {
      for (const [name, data] of events) {
        if (res.destroyed) return;
        if (sent >= hangAfter) {
          hung = true;
          break;
        }
        if (delay) await new Promise((r) => setTimeout(r, delay));
        res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
        sent += 1;
      }
      if (hung) return; // leave the connection open; the client goes away or the server is stopped
      res.end();
    },
  };
}

// ---------------------------------------------------------------- Anthropic

function anthropicUsage(turn, extra = {}) {
  const u = turn.usage ?? {};
  return {
    input_tokens: u.input_tokens ?? 10,
    cache_creation_input_tokens: u.cache_creation_input_tokens ?? 0,
    cache_read_input_tokens: u.cache_read_input_tokens ?? 0,
    output_tokens: u.output_tokens ?? 5,
    ...extra,
  };
}

function anthropicBlocks(turn) {
  const blocks = [];
  if (turn.text !== undefined) blocks.push({ type: "text", text: turn.text });
  for (const t of turn.tool_use ?? []) {
    blocks.push({ type: "tool_use", id: t.id ?? nextId("toolu"), name: t.name, input: t.input ?? {} });
  }
  if (blocks.length === 0) blocks.push({ type: "text", text: "" });
  return blocks;
}

async function anthropicMessages(req, res, body, kind, pick) {
  const { turn, index } = pick;
  if (turn.error) return sendError(res, turn.error, "anthropic");
  const model = turn.model ?? body?.model ?? "claude-test";
  const blocks = anthropicBlocks(turn);
  const stopReason = turn.stop_reason ?? (blocks.some((b) => b.type === "tool_use") ? "tool_use" : "end_turn");
  const usage = anthropicUsage(turn);
  const id = nextId("msg");
  if (!body?.stream) {
    return sendJson(res, 200, { id, type: "message", role: "assistant", model, content: blocks, stop_reason: stopReason, stop_sequence: null, usage });
  }
  const s = sse(res, turn);
  s.event("message_start", {
    type: "message_start",
    message: { id, type: "message", role: "assistant", model, content: [], stop_reason: null, stop_sequence: null, usage: { ...usage, output_tokens: 1 } },
  });
  if (turn.stream_error) {
    s.event("error", { type: "error", error: turn.stream_error });
    return s.flush();
  }
  s.event("ping", { type: "ping" });
  blocks.forEach((b, i) => {
    if (b.type === "text") {
      s.event("content_block_start", { type: "content_block_start", index: i, content_block: { type: "text", text: "" } });
      // two deltas, so a reader sees a real stream
      const half = Math.ceil(b.text.length / 2);
      for (const part of [b.text.slice(0, half), b.text.slice(half)]) {
        if (part) s.event("content_block_delta", { type: "content_block_delta", index: i, delta: { type: "text_delta", text: part } });
      }
    } else {
      s.event("content_block_start", { type: "content_block_start", index: i, content_block: { type: "tool_use", id: b.id, name: b.name, input: {} } });
      const json = JSON.stringify(b.input);
      const half = Math.ceil(json.length / 2);
      for (const part of [json.slice(0, half), json.slice(half)]) {
        if (part) s.event("content_block_delta", { type: "content_block_delta", index: i, delta: { type: "input_json_delta", partial_json: part } });
      }
    }
    s.event("content_block_stop", { type: "content_block_stop", index: i });
  });
  s.event("message_delta", {
    type: "message_delta",
    delta: { stop_reason: stopReason, stop_sequence: null },
    usage: { output_tokens: usage.output_tokens, input_tokens: usage.input_tokens, cache_creation_input_tokens: usage.cache_creation_input_tokens, cache_read_input_tokens: usage.cache_read_input_tokens },
  });
  s.event("message_stop", { type: "message_stop" });
  return s.flush();
}

// A main-loop call of Claude Code carries its tools; its side calls (title,
// topic, quota probe, summaries) carry none.
function anthropicKind(body) {
  return Array.isArray(body?.tools) && body.tools.length > 0 ? "main" : "side";
}

const MODELS_ANTHROPIC = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"];

// ------------------------------------------------------------------ OpenAI

async function openaiResponses(req, res, body, pick) {
  const { turn } = pick;
  if (turn.error) return sendError(res, turn.error, "openai");
  const model = turn.model ?? body?.model ?? "gpt-test";
  const id = nextId("resp");
  const created = Math.floor(Date.now() / 1000);
  const base = { id, object: "response", created_at: created, model, status: "in_progress", output: [] };
  const s = sse(res, turn);
  let n = 0;
  const ev = (type, data) => s.event(type, { type, sequence_number: n++, ...data });
  ev("response.created", { response: base });
  ev("response.in_progress", { response: base });
  if (turn.failed) {
    ev("response.failed", { response: { ...base, status: "failed", error: turn.failed } });
    return s.flush();
  }
  const output = [];
  let oi = 0;
  if (turn.text !== undefined) {
    const itemId = nextId("msg");
    const item = { id: itemId, type: "message", status: "in_progress", role: "assistant", content: [] };
    ev("response.output_item.added", { output_index: oi, item });
    ev("response.content_part.added", { item_id: itemId, output_index: oi, content_index: 0, part: { type: "output_text", text: "", annotations: [] } });
    const half = Math.ceil(turn.text.length / 2);
    for (const part of [turn.text.slice(0, half), turn.text.slice(half)]) {
      if (part) ev("response.output_text.delta", { item_id: itemId, output_index: oi, content_index: 0, delta: part });
    }
    ev("response.output_text.done", { item_id: itemId, output_index: oi, content_index: 0, text: turn.text });
    const part = { type: "output_text", text: turn.text, annotations: [] };
    ev("response.content_part.done", { item_id: itemId, output_index: oi, content_index: 0, part });
    const done = { ...item, status: "completed", content: [part] };
    ev("response.output_item.done", { output_index: oi, item: done });
    output.push(done);
    oi += 1;
  }
  for (const f of turn.function_call ?? []) {
    const itemId = nextId("fc");
    const args = typeof f.arguments === "string" ? f.arguments : JSON.stringify(f.arguments ?? {});
    const item = { id: itemId, type: "function_call", status: "in_progress", call_id: f.call_id ?? nextId("call"), name: f.name, arguments: "" };
    ev("response.output_item.added", { output_index: oi, item });
    ev("response.function_call_arguments.delta", { item_id: itemId, output_index: oi, delta: args });
    ev("response.function_call_arguments.done", { item_id: itemId, output_index: oi, arguments: args });
    const done = { ...item, status: "completed", arguments: args };
    ev("response.output_item.done", { output_index: oi, item: done });
    output.push(done);
    oi += 1;
  }
  for (const f of turn.custom_tool_call ?? []) {
    const itemId = nextId("ctc");
    const item = { id: itemId, type: "custom_tool_call", status: "in_progress", call_id: f.call_id ?? nextId("call"), name: f.name, input: "" };
    ev("response.output_item.added", { output_index: oi, item });
    ev("response.custom_tool_call_input.delta", { item_id: itemId, output_index: oi, delta: f.input });
    ev("response.custom_tool_call_input.done", { item_id: itemId, output_index: oi, input: f.input });
    const done = { ...item, status: "completed", input: f.input };
    ev("response.output_item.done", { output_index: oi, item: done });
    output.push(done);
    oi += 1;
  }
  const u = turn.usage ?? {};
  const usage = {
    input_tokens: u.input_tokens ?? 10,
    input_tokens_details: {
      cached_tokens: u.cached_tokens ?? u.cache_read_input_tokens ?? 0,
      cache_write_tokens: u.cache_write_tokens ?? u.cache_creation_input_tokens ?? 0,
    },
    output_tokens: u.output_tokens ?? 5,
    output_tokens_details: { reasoning_tokens: u.reasoning_tokens ?? 0 },
  };
  usage.total_tokens = usage.input_tokens + usage.output_tokens;
  ev("response.completed", { response: { ...base, status: "completed", output, usage } });
  return s.flush();
}

// ------------------------------------------------------------------ server

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  const path = url.pathname.replace(/\/+$/, "") || "/";
  let body = null;
  try {
    body = await readBody(req);
  } catch (e) {
    body = { read_error: String(e) };
  }
  const entry = { seq: ++seq, time: new Date().toISOString(), method: req.method, path: req.url, headers: req.headers, body, api: null, kind: null, turn: null };
  try {
    if (req.method === "GET" && path === "/__log") return sendJson(res, 200, memoryLog);
    if ((req.method === "HEAD" || req.method === "GET") && path === "/api/hello") {
      // Claude Code's connectivity probe at startup (HEAD {ANTHROPIC_BASE_URL}/api/hello)
      Object.assign(entry, { api: "anthropic", kind: "hello" });
      record(entry);
      res.writeHead(200, { "content-type": "text/plain" });
      return res.end(req.method === "HEAD" ? undefined : "hello");
    }
    if (!req.url.startsWith("/")) {
      // an absolute URL: a client using this server as its HTTP proxy for some other host
      const u = new URL(req.url);
      if (!/^(127\.|localhost$|\[::1\]$)/.test(u.hostname)) {
        Object.assign(entry, { kind: "proxy" });
        record(entry);
        return sendJson(res, 403, { error: { message: `model_server: refused to proxy ${req.url}` } });
      }
    }
    if (req.method === "GET" && path === "/__state") return sendJson(res, 200, { cursor, lengths: { anthropic: queues.anthropic.length, openai: queues.openai.length } });

    if (req.method === "POST" && /\/messages\/count_tokens$/.test(path)) {
      Object.assign(entry, { api: "anthropic", kind: "count_tokens" });
      record(entry);
      return sendJson(res, 200, { input_tokens: 42 });
    }
    if (req.method === "POST" && /\/messages$/.test(path)) {
      const kind = anthropicKind(body);
      const pick = kind === "main" ? take("anthropic") : { turn: script.side ?? { text: "ok", usage: { input_tokens: 1, output_tokens: 1 } }, index: null };
      Object.assign(entry, { api: "anthropic", kind, turn: pick.index });
      record(entry);
      return await anthropicMessages(req, res, body, kind, pick);
    }
    if (req.method === "POST" && /\/responses$/.test(path)) {
      const pick = take("openai");
      Object.assign(entry, { api: "openai", kind: "main", turn: pick.index });
      record(entry);
      return await openaiResponses(req, res, body, pick);
    }
    if (req.method === "GET" && /\/models(\/[^/]+)?$/.test(path)) {
      const isAnthropic = "anthropic-version" in req.headers || "x-api-key" in req.headers;
      const one = path.match(/\/models\/([^/]+)$/);
      Object.assign(entry, { api: isAnthropic ? "anthropic" : "openai", kind: "models" });
      record(entry);
      if (isAnthropic) {
        const m = (id) => ({ type: "model", id, display_name: id, created_at: "2025-01-01T00:00:00Z" });
        if (one) return sendJson(res, 200, m(decodeURIComponent(one[1])));
        return sendJson(res, 200, { data: MODELS_ANTHROPIC.map(m), has_more: false, first_id: MODELS_ANTHROPIC[0], last_id: MODELS_ANTHROPIC.at(-1) });
      }
      // Codex asks for {"models": [...]} (its own catalogue shape); an empty list keeps its built-in one.
      return sendJson(res, 200, { object: "list", data: [], models: [] });
    }
    entry.kind = "unknown";
    record(entry);
    return sendJson(res, 404, { error: { type: "not_found_error", message: `model_server: no route for ${req.method} ${path}` } });
  } catch (e) {
    entry.error = String(e?.stack ?? e);
    record(entry);
    if (!res.headersSent) sendJson(res, 500, { error: { type: "api_error", message: String(e) } });
    else res.destroy();
  }
});

// Used as HTTPS_PROXY, the server records which hosts a CLI tries to reach
// (telemetry, update checks, ...) and refuses them.
server.on("connect", (req, socket) => {
  socket.on("error", () => {});
  record({ seq: ++seq, time: new Date().toISOString(), method: "CONNECT", path: req.url, headers: req.headers, body: null, api: null, kind: "proxy", turn: null });
  socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
});

server.on("connection", (socket) => socket.on("error", () => {}));
server.on("clientError", (err, socket) => socket.destroy());
// A client that goes away mid-stream must not stop the server.
process.on("uncaughtException", (e) => process.stderr.write(`model_server: ${e?.stack ?? e}\n`));

server.keepAliveTimeout = 65_000;
server.listen(port, host, () => {
  process.stdout.write(`${server.address().port}\n`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
