// Server-Sent Events over fetch(): EventSource cannot send the Authorization header.
//
// Parses text/event-stream as the HTML spec says (event/data/id/retry fields, comments, any of
// CRLF, LF or CR as line ends) and reconnects after a dropped connection with the last id as
// Last-Event-ID, which the master takes as a resume cursor (no gaps, no repeats). It stops for
// good after an `end` message, a 4xx answer, or close().

import { authHeaders, errorFrom } from "./api.js";

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

/** Feed decoded text chunks; calls onEvent({event, data, id}) per complete message. */
export class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = "";
    this.data = [];
    this.event = "";
    this.lastId = undefined;
    this.retry = undefined;
  }

  push(text) {
    this.buf += text;
    let start = 0;
    const buf = this.buf;
    for (let i = start; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      if (c === 13 && i === buf.length - 1) break; // a CR may be half of a CRLF: wait
      this.line(buf.slice(start, i));
      if (c === 13 && buf.charCodeAt(i + 1) === 10) i++;
      start = i + 1;
    }
    this.buf = buf.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
      }
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return; // comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }
}

/**
 * Follow `path` (an /api/runs/{id}/stream URL). Handlers:
 *   onMessage(event, data, id)   data is parsed JSON
 *   onStatus(status, error?)     "open" | "reconnecting" | "ended" | "error"
 * Returns {close()}.
 */
export function openStream(path, { onMessage, onStatus = () => {} }) {
  const ctrl = new AbortController();
  let lastId;
  let stopped = false;

  (async () => {
    let delay = 1000;
    while (!stopped) {
      let ended = false;
      let error;
      try {
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        if (lastId !== undefined) headers["Last-Event-ID"] = lastId;
        const res = await fetch(path, { headers, signal: ctrl.signal, cache: "no-store" });
        if (!res.ok) {
          const err = await errorFrom(res, path);
          if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
            stopped = true;
            onStatus("error", err);
            return;
          }
          throw err;
        }
        onStatus("open");
        delay = 1000;
        const parser = new EventStreamParser((msg) => {
          if (ended) return;
          lastId = msg.id;
          let data = null;
          try {
            data = JSON.parse(msg.data);
          } catch {
            data = msg.data;
          }
          if (msg.event === "end") ended = true;
          onMessage(msg.event, data, msg.id);
        });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        while (!ended) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(value);
        }
        if (parser.retry) delay = parser.retry;
        if (ended) {
          // the master closes the stream right after `end`: read to its close rather than abort
          // (an aborted fetch shows up as a failed request)
          stopped = true;
          onStatus("ended");
          while (!(await reader.read()).done) {
            /* nothing follows `end` */
          }
          return;
        }
      } catch (e) {
        if (stopped || e.name === "AbortError") return;
        error = e;
      }
      if (stopped) return;
      onStatus("reconnecting", error);
      await sleep(delay, ctrl.signal);
      delay = Math.min(delay * 2, 5000);
    }
  })();

  return {
    close() {
      stopped = true;
      ctrl.abort();
    },
  };
}
