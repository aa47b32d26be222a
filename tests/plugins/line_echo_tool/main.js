// tests/plugins/echo_tool in Node.js, speaking line/1 (docs/line-protocol.md): one JSON object per line.
// Run by the daemon, it speaks on stdin/stdout (stdout carries protocol messages only; anything else
// goes to stderr). With REMOTE_INSTALL_URL=host:port and REMOTE_INSTALL_KEY set, it connects to the
// daemon's debug port instead, and registers with the declaration in LINE_DECLARATION_FILE (a JSON
// file {"manifest", "declarations", "assets"}).
"use strict";
const net = require("net");
const readline = require("readline");
const fs = require("fs");

const remote = process.env.REMOTE_INSTALL_URL;
const socket = remote ? net.connect(Number(remote.split(":")[1]), remote.split(":")[0]) : null;
const output = socket || process.stdout;
const input = socket || process.stdin;
const send = (message) => output.write(JSON.stringify(message) + "\n");
if (socket) {
  const declaration = JSON.parse(fs.readFileSync(process.env.LINE_DECLARATION_FILE, "utf8"));
  const { author, name } = declaration.manifest;
  send({ type: "auth", api_key: process.env.REMOTE_INSTALL_KEY, plugin_id: `${author}/${name}` });
  send({ type: "declaration", ...declaration });
  socket.on("error", (error) => { process.stderr.write(`${error.message}\n`); process.exit(1); });
}
const log = (level, message) => send({ type: "log", level, message, timestamp: new Date().toISOString() });

// Backwards calls waiting for their answer: call_id -> { chunks, resolve, reject }.
const calls = new Map();
let nextCall = 0;

function backwards(session_id, target, request) {
  const call_id = `c${++nextCall}`;
  return new Promise((resolve, reject) => {
    calls.set(call_id, { chunks: [], resolve, reject });
    send({ type: "backwards_invoke", session_id, call_id, target, request });
  });
}

function onBackwardsResponse(message) {
  const call = calls.get(message.call_id);
  if (!call) return;
  if (message.status === "chunk") return call.chunks.push(message.data);
  calls.delete(message.call_id);
  if (message.status === "success") call.resolve(call.chunks);
  else call.reject(new Error(message.error ? message.error.message : "backwards call failed"));
}

const toHex = (text) => Buffer.from(text, "utf8").toString("hex");
const fromHex = (hex) => Buffer.from(hex, "hex").toString("utf8");

async function storage(session_id, p) {
  const key = String(p.key ?? "");
  const call = async (request) => (await backwards(session_id, "storage", request))[0] || {};
  switch (p.op) {
    case "set":
      await call({ opt: "set", key, value: toHex(String(p.value ?? "")) });
      return { ok: true };
    case "get":
      return { value: fromHex((await call({ opt: "get", key })).data) };
    case "exist":
      return { exists: Boolean((await call({ opt: "exist", key })).data) };
    case "delete":
      await call({ opt: "del", key });
      return { ok: true };
    default:
      throw Object.assign(new Error(`unknown storage op: ${p.op}`), { name: "ValueError" });
  }
}

const PATTERN = "0123456789";
const blobOf = (size) => Buffer.from(PATTERN.repeat(Math.ceil(size / PATTERN.length) + 1).slice(0, size));

async function invoke(message) {
  const { session_id, request_id, action, data } = message;
  const reply = (body) => send({ type: "response", session_id, request_id, ...body });
  const fail = (type, text, code) => reply({ status: "error", error: { type, message: text, code } });
  const chunk = (item) => send({ type: "stream_chunk", session_id, data: item });
  if (action === "validate") {
    if ((data.credentials || {}).api_key === "bad") return fail("ToolProviderCredentialValidationError", "invalid api_key");
    return reply({ status: "success", data: { result: true } });
  }
  const p = data.parameters || {};
  switch (data.tool_name) {
    case "echo":
      log("info", `echo called by ${data.context.user_id}`);
      return reply({ status: "success", data: { type: "text", content: String(p.text ?? "") } });
    case "multi":
      return reply({
        status: "success",
        data: [
          { type: "text", content: "a" },
          { type: "json", content: { k: 1 } },
          { type: "variable", name: "v", value: 42 },
          { type: "variable", name: "s", value: "chunk", stream: true },
        ],
      });
    case "blob": {
      const blob = blobOf(Number(p.size || 5));
      return reply({ status: "success", data: { type: "blob", content: blob.toString("base64"), mime_type: "text/plain" } });
    }
    case "fail":
      send({ type: "stream_start", session_id, request_id });
      chunk({ type: "text", content: "before" });
      return fail("ValueError", "boom");
    case "storage":
      try {
        return reply({ status: "success", data: { type: "json", content: await storage(session_id, p) } });
      } catch (error) {
        return fail(error.name === "ValueError" ? "ValueError" : "StorageError", error.message);
      }
    case "sleep":
      await new Promise((done) => setTimeout(done, Number(p.seconds ?? 1) * 1000));
      return reply({ status: "success", data: { type: "text", content: "slept" } });
    case "crash":
      send({ type: "stream_start", session_id, request_id });
      return output.write(JSON.stringify({ type: "stream_chunk", session_id, data: { content: "dying" } }) + "\n", () => process.exit(3));
    case "llm": {
      // A call into Dify's inner API: the LLM answers in chunks, each streamed as a text message.
      const request = {
        provider: String(p.provider ?? ""), model: String(p.model ?? ""), model_type: "llm", mode: "chat",
        completion_params: {}, prompt_messages: [{ role: "user", content: String(p.query ?? "") }],
        tools: [], stop: [], stream: true,
      };
      try {
        for (const answer of await backwards(session_id, "llm", request)) {
          const content = answer && answer.delta && answer.delta.message && answer.delta.message.content;
          if (typeof content === "string" && content) chunk({ type: "text", content });
        }
      } catch (error) {
        return fail("InvokeError", error.message);
      }
      return send({ type: "stream_end", session_id, data: {} });
    }
    case "huge":
      return reply({ status: "success", data: { type: "text", content: "x".repeat(Number(p.size || 0)) } });
    default:
      return fail("ToolNotFoundError", `no tool ${data.tool_name}`, "NOT_FOUND");
  }
}

readline.createInterface({ input }).on("line", (line) => {
  let message;
  try {
    message = JSON.parse(line);
  } catch (error) {
    return process.stderr.write(`unreadable line: ${error.message}\n`);
  }
  if (message.type === "heartbeat") return send({ type: "heartbeat_ack" });
  if (message.type === "auth_failed") {
    process.stderr.write(`registration refused: ${message.message}\n`);
    process.exit(1);
  }
  if (message.type === "backwards_response") return onBackwardsResponse(message);
  if (message.type === "invoke") invoke(message).catch((error) => process.stderr.write(`${error.stack}\n`));
}).on("close", () => process.exit(0));
