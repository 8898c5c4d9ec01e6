// The Arbiter browser client: an ES module, no dependencies, no build step.
//
//   import { ArbiterHTTP, MatchClient } from "/arbiter.js";
//
//   const http = new ArbiterHTTP();             // the page's origin: where `arbiter up` serves the API
//   await http.guest();                         // development mode: a guest player token
//   const assignment = await http.matchmake("connect_four");   // ticket + long-poll
//   const client = new MatchClient(assignment.ws_url, assignment.token);
//   client.on("state", ({ tick, acks, state }) => draw(state));
//   await client.connect();                     // resolves with the first welcome
//   const seq = client.sendInput({ column: 3 });
//
// It speaks docs/protocol.md (JSON, subprotocol "arbiter.json.v1") and behaves like the Python client
// (clients/client.py): it numbers inputs from 1 (or on from welcome.last_seq), keeps each input until
// the server acknowledges it (acks[me] >= seq), and when the connection drops for a reason worth
// retrying it reconnects with backoff, resumes from the last tick it saw and resends the inputs the
// server has not processed. Inputs go out in seq order through one queue, paced to the limits the
// welcome announces (InputPacer below), so the server never refuses one as rate_limited, not even
// the hundreds of resends after a long drop. See docs/web.md and docs/protocol.md ("Pacing inputs").

export const JSON_SUBPROTOCOL = "arbiter.json.v1";
// Close codes after which reconnecting cannot help (docs/protocol.md, "Close codes").
export const FINAL_CLOSE_CODES = new Set([1000, 1002, 1007, 1008, 1009, 4001, 4004, 4005, 4009, 4011, 4012, 4013]);
// Error codes that refuse an input for good. Inputs refused with another code stay kept until an
// acknowledgement passes them: not_ready, not_started, and rate_limited (also in `rateLimited`).
export const REFUSED_INPUT_CODES = new Set(["invalid_input", "not_seated", "forbidden"]);

/** When the next input may go so that the server's input rate limit (a token bucket of `input_burst`
 * refilled at `input_rate` a second, counted as the server reads) never refuses one, whatever the
 * network does to the timing: a bucket of its own (`burst` tokens at `rate` a second) and a window of
 * `window` inputs sent and not yet answered, with burst + window <= input_burst and rate <= input_rate.
 * The same rule and margins as the Python client's clients/pacing.py (docs/protocol.md, "Pacing
 * inputs"). Times are in seconds. */
export class InputPacer {
  constructor(inputRate, inputBurst, now) {
    if (!(inputRate > 0) || !(inputBurst >= 1)) throw new RangeError("inputRate > 0 and inputBurst >= 1");
    this.window = Math.max(1, Math.floor(inputBurst * 0.3));
    this.burst = Math.max(1, Math.floor(inputBurst * 0.9) - this.window);
    this.rate = inputRate * 0.9;
    this.tokens = this.burst;
    this.stamp = now;
  }

  /** For a welcome's `limits` (the server's defaults, 60 and 120, if it announced none). */
  static fromWelcome(limits, now) {
    const rate = limits?.input_rate, burst = limits?.input_burst;
    return new InputPacer(typeof rate === "number" && rate > 0 ? rate : 60,
      typeof burst === "number" && burst >= 1 ? burst : 120, now);
  }

  /** 0: send now (then call sent); > 0: seconds until a token; null: the window is full. */
  delay(now, inFlight) {
    if (inFlight >= this.window) return null;
    this._refill(now);
    return this.tokens >= 1 - 1e-9 ? 0 : (1 - this.tokens) / this.rate;
  }

  sent(now) {
    this._refill(now);
    this.tokens -= 1;
  }

  _refill(now) {
    if (now > this.stamp) {
      this.tokens = Math.min(this.burst, this.tokens + (now - this.stamp) * this.rate);
      this.stamp = now;
    }
  }
}

const seconds = () => performance.now() / 1000;

/** The HTTP API answered an error (application/problem+json): `status`, `code`, `detail`. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(`${status} ${problem.code ?? "http_error"}: ${problem.detail ?? ""}`);
    this.name = "ApiError";
    this.status = status;
    this.code = problem.code ?? "http_error";
    this.detail = problem.detail ?? "";
  }
}

/** A ticket ended without a match: `status` is expired, cancelled or timeout; `reason` says why. */
export class MatchmakingFailed extends Error {
  constructor(status, reason) {
    super(`ticket ${status}: ${reason}`);
    this.name = "MatchmakingFailed";
    this.status = status;
    this.reason = reason;
  }
}

/** The connection closed for good: the match ended, a refusal, a bad token, or no way back. */
export class MatchClosed extends Error {
  constructor(code, reason) {
    super(`closed with ${code}: ${reason}`);
    this.name = "MatchClosed";
    this.code = code;
    this.reason = reason;
  }
}

export class ArbiterHTTP {
  /** `baseUrl`: the HTTP API (default: this page's origin). `playerToken`: from your login service,
   * or call guest(). `adminToken`: sent with the admin calls when the server has one. */
  constructor(baseUrl = globalThis.location?.origin, { playerToken = null, adminToken = null } = {}) {
    this.baseUrl = String(baseUrl).replace(/\/$/, "");
    this.playerToken = playerToken;
    this.adminToken = adminToken;
    this.playerId = null;
  }

  async call(method, path, { body, params, player = false, admin = false, signal } = {}) {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(params ?? {})) {
      for (const item of Array.isArray(value) ? value : [value]) {
        if (item !== undefined && item !== null) url.searchParams.append(name, String(item));
      }
    }
    const headers = {};
    if (player) {
      if (!this.playerToken) throw new Error("no player token: pass { playerToken } or call guest() first");
      headers.authorization = `Bearer ${this.playerToken}`;
    } else if (admin && this.adminToken) {
      headers.authorization = `Bearer ${this.adminToken}`;
    }
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(url, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, answer);
    return answer;
  }

  // -- matchmaking (player token) -----------------------------------------------------------------

  /** Development mode: become a new guest player; returns the player id. */
  async guest() {
    const answer = await this.call("POST", "/v1/auth/guest");
    this.playerToken = answer.token;
    this.playerId = answer.player_id;
    return answer.player_id;
  }

  /** `properties`: party, numbers, strings, string_sets, latencies (docs/matchmaking.md). A ticket with a
   * party is pending until each other member accepts it (acceptTicket). */
  createTicket(queue, properties = {}) {
    return this.call("POST", "/v1/tickets", { body: { queue, ...properties }, player: true });
  }

  /** The ticket; with `waitS`, a long-poll that answers when its version differs from `version`. */
  ticket(ticketId, { waitS = 0, version, signal } = {}) {
    return this.call("GET", `/v1/tickets/${encodeURIComponent(ticketId)}`,
      // plain decimals: the server takes no exponent (String(5e-7) is "5e-7")
      { params: { wait_s: Math.max(waitS, 0).toFixed(3), version }, player: true, signal });
  }

  /** Cancel a queued or pending ticket (a party ticket you have not accepted: decline it). */
  cancelTicket(ticketId) {
    return this.call("DELETE", `/v1/tickets/${encodeURIComponent(ticketId)}`, { player: true });
  }

  /** Accept a party ticket that names you (again: no change); the last acceptance queues it. */
  acceptTicket(ticketId) {
    return this.call("POST", `/v1/tickets/${encodeURIComponent(ticketId)}/accept`, { player: true });
  }

  /** Your tickets, newest first; invitations are the `pending` ones whose `accepted` does not name you.
   * `status` filters; `limit` 1 to 100 (default 20). */
  listTickets({ status, limit } = {}) {
    return this.call("GET", "/v1/tickets", { params: { status, limit }, player: true });
  }

  /** Queue a ticket and wait (long-poll) until it is matched: its assignment (match_id, ws_url,
   * token, ...); with `party`, it waits for the other members to accept it first. `onTicket(ticket)` sees
   * every version. Throws MatchmakingFailed when the ticket expires (`not_accepted`: a party not accepted
   * in time) or is cancelled (declined), or (status "timeout") after `timeoutS`; a timeout or an abort through
   * `signal` cancels the ticket. */
  async matchmake(queue, { timeoutS = 300, signal, onTicket, ...properties } = {}) {
    let ticket = await this.createTicket(queue, properties);
    onTicket?.(ticket);
    const deadline = performance.now() + timeoutS * 1000;
    try {
      while (waiting(ticket) && performance.now() < deadline) {
        const waitS = Math.min(30, Math.max(0, (deadline - performance.now()) / 1000));
        ticket = await this.ticket(ticket.ticket_id, { waitS, version: ticket.version, signal });
        onTicket?.(ticket);
      }
    } catch (error) {
      if (waiting(ticket)) await this.cancelTicket(ticket.ticket_id).catch(() => {});
      throw error;
    }
    if (ticket.status === "matched") return ticket.assignment;
    if (waiting(ticket)) {
      await this.cancelTicket(ticket.ticket_id).catch(() => {}); // matched or placed meanwhile
      throw new MatchmakingFailed("timeout", `not matched within ${timeoutS} s`);
    }
    throw new MatchmakingFailed(ticket.status, ticket.reason);
  }

  /** An open match that others join by its code: match_id, code, ws_url and your token. */
  createCustom(game, params = {}, { private: isPrivate = false } = {}) {
    return this.call("POST", "/v1/custom", { body: { game, params, private: isPrivate }, player: true });
  }

  joinCustom(code) {
    return this.call("POST", "/v1/custom/join", { body: { code }, player: true });
  }

  /** Unfinished matches, newest first. Filters: game, queue, joinable, label (["key:value"]), limit. */
  matches(filters = {}) {
    return this.call("GET", "/v1/matches", { params: filters, admin: true });
  }

  games() {
    return this.call("GET", "/v1/games");
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const waiting = (ticket) => ticket.status === "pending" || ticket.status === "queued";

export class MatchClient {
  /** `wsUrl` and `token`: from an assignment, a custom match, or POST /v1/matches/{id}/tokens.
   * `attachment`: any JSON value kept with the connection on the server (docs/protocol.md). */
  constructor(wsUrl, token, { reconnect = true, maxReconnectS = 30, connectTimeoutS = 10, attachment } = {}) {
    this.wsUrl = wsUrl;
    this.token = token;
    this.reconnect = reconnect;
    this.maxReconnectS = maxReconnectS;
    this.connectTimeoutS = connectTimeoutS;
    this.attachment = attachment;
    this.player = null;
    this.role = null;
    this.welcome = null;   // the last welcome frame
    this.state = null;     // the latest game state (from welcome or state)
    this.tick = -1;        // the last tick seen, for resume
    this.acked = 0;        // this player's last acknowledged seq
    this.nextSeq = 1;
    this.unacked = new Map(); // seq -> data, in sending order
    this.rateLimited = [];    // seqs the server refused with rate_limited (not applied); pacing keeps it empty
    this.reconnects = 0;
    this.status = "new";   // new, connecting, open, reconnecting, closed
    this.ws = null;        // the WebSocket while it is admitted (after its welcome)
    this._handlers = new Map();
    this._closing = false;
    this._socket = null;   // the WebSocket being opened or open
    // Sending, per connection: seqs to send on it in order (resends first), seqs sent on it and not
    // answered yet (acknowledged, or refused with their seq), its pacer; only the head is sent.
    this._queue = [];
    this._inFlight = [];
    this._pacer = null;
    this._timer = null;    // a pump waiting for a token
    this._leave = false;   // leave() was called: send it after the queued inputs
  }

  /** Listen: "welcome" ({...frame, resumed}), "state" ({tick, acks, state}), "event" ({tick, kind,
   * data}), "error" ({code, message, seq}), "pong" ({id}), "status" (the new status), "close"
   * ({code, reason}: closed for good). Returns a function that stops listening. */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type).delete(handler);
  }

  _emit(type, detail) {
    for (const handler of this._handlers.get(type) ?? []) {
      try {
        handler(detail);
      } catch (error) {
        console.error(`arbiter: a "${type}" handler threw`, error);
      }
    }
  }

  _setStatus(status) {
    this.status = status;
    this._emit("status", status);
  }

  /** Open the connection; resolves with the first welcome, rejects with MatchClosed. */
  async connect() {
    this._setStatus("connecting");
    try {
      return await this._open(false);
    } catch (error) {
      this._finish(error.code ?? null, error.reason ?? String(error));
      throw error;
    }
  }

  // -- sending ------------------------------------------------------------------------------------

  /** Send an input; returns its seq. It is kept until acknowledged and resent after a resume. It
   * goes out after every earlier input, at once or when the pacer allows (a token, room in the
   * window of unacknowledged inputs, a connection). */
  sendInput(data) {
    const seq = this.nextSeq++;
    this.unacked.set(seq, data);
    this._queue.push(seq);
    this._pump();
    return seq;
  }

  ping(id = null) {
    this._send({ t: "ping", id });
  }

  /** Give up the seat for good; the server closes the connection with 1000. Sent after the inputs
   * still queued, so that they count. */
  leave() {
    this._leave = true;
    this._pump();
  }

  /** Close the connection (the seat stays, as after a drop); no reconnect follows. */
  close(code = 1000, reason = "") {
    this._closing = true;
    if (this._socket && this._socket.readyState <= WebSocket.OPEN) {
      this._socket.close(code, reason);
    } else {
      this._finish(code, reason || "closed by the client");
    }
  }

  /** Sent only on an admitted connection; otherwise kept inputs go out after the next welcome. */
  _send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  /** Send the queue's head while the pacer allows; then a requested leave. */
  _pump() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this._pacer) return; // the next welcome pumps
    while (this._queue.length > 0) {
      const seq = this._queue[0];
      if (!this.unacked.has(seq)) { // acknowledged by a welcome, or refused, meanwhile
        this._queue.shift();
        continue;
      }
      const now = seconds();
      const delay = this._pacer.delay(now, this._inFlight.length);
      if (delay === null) return; // the window is full: an answer pumps again
      if (delay > 0) {
        if (this._timer === null) {
          this._timer = setTimeout(() => { this._timer = null; this._pump(); }, Math.ceil(delay * 1000));
        }
        return;
      }
      this._pacer.sent(now);
      this._queue.shift();
      this._inFlight.push(seq);
      ws.send(JSON.stringify({ t: "input", seq, data: this.unacked.get(seq) }));
    }
    if (this._leave) {
      this._leave = false;
      ws.send(JSON.stringify({ t: "leave" }));
    }
  }

  /** Inputs in flight were answered: acknowledged up to `acked`, or `seq` refused. */
  _answered(seq = null) {
    while (this._inFlight.length > 0 && this._inFlight[0] <= this.acked) this._inFlight.shift();
    if (seq !== null) {
      const at = this._inFlight.indexOf(seq);
      if (at >= 0) this._inFlight.splice(at, 1);
    }
    if (this._queue.length > 0 || this._leave) this._pump();
  }

  // -- receiving ----------------------------------------------------------------------------------

  _acknowledge(acks) {
    const acked = acks?.[this.player] ?? 0;
    if (acked > this.acked) this.acked = acked;
    for (const seq of this.unacked.keys()) {
      if (seq > this.acked) break;
      this.unacked.delete(seq);
    }
    this._answered();
  }

  _dispatch(frame) {
    if (frame.t === "state") {
      this.tick = frame.tick;
      this.state = frame.state;
      this._acknowledge(frame.acks);
      this._emit("state", { tick: frame.tick, acks: frame.acks, state: frame.state });
    } else if (frame.t === "event") {
      this._emit("event", { tick: frame.tick, kind: frame.kind, data: frame.data });
    } else if (frame.t === "error") {
      if (frame.seq != null) {
        if (REFUSED_INPUT_CODES.has(frame.code)) this.unacked.delete(frame.seq);
        else if (frame.code === "rate_limited") this.rateLimited.push(frame.seq);
        this._answered(frame.seq);
      }
      this._emit("error", { code: frame.code, message: frame.message, seq: frame.seq ?? null });
    } else if (frame.t === "pong") {
      this._emit("pong", { id: frame.id });
    } // other frame types: ignored, as the protocol asks
  }

  _welcomed(frame, ws, resumed) {
    this.welcome = frame;
    this.player = frame.player;
    this.role = frame.role;
    this.tick = frame.tick;
    this.state = frame.state;
    this._acknowledge(frame.acks);
    // A seat that already has inputs (a reloaded page with the same token): number on from the server's count.
    this.nextSeq = Math.max(this.nextSeq, frame.last_seq + 1);
    // Resend, in order and with their seq, what the server has not processed (it drops what it has),
    // paced to this connection's limits; inputs sent from here on queue behind them.
    this._queue = [...this.unacked.keys()].filter((seq) => seq > frame.last_seq);
    this._inFlight = [];
    this._pacer = InputPacer.fromWelcome(frame.limits, seconds());
    this.ws = ws;
    this._pump();
    this._setStatus("open");
    this._emit("welcome", { ...frame, resumed });
  }

  // -- connecting ---------------------------------------------------------------------------------

  /** One connection: resolves at its welcome; rejects with MatchClosed if it closes before. */
  _open(resume) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.wsUrl, [JSON_SUBPROTOCOL]);
      this._socket = ws;
      let admitted = false;
      const timer = setTimeout(() => {
        reject(new MatchClosed(null, `no welcome within ${this.connectTimeoutS} s`));
        ws.close();
      }, this.connectTimeoutS * 1000);
      ws.onopen = () => {
        const auth = { t: "auth", token: this.token };
        if (this.attachment !== undefined) auth.attachment = this.attachment;
        if (resume && this.tick >= 0) auth.resume_tick = this.tick;
        ws.send(JSON.stringify(auth));
      };
      ws.onmessage = (message) => {
        let frame;
        try {
          frame = JSON.parse(message.data);
        } catch {
          return; // not JSON: nothing this client can use
        }
        if (admitted) {
          this._dispatch(frame);
        } else if (frame.t === "welcome") {
          admitted = true;
          clearTimeout(timer);
          this._welcomed(frame, ws, resume);
          resolve(this.welcome);
        } else if (frame.t === "error") {
          // The server refused our auth frame: retrying cannot help.
          clearTimeout(timer);
          reject(new MatchClosed(1008, `${frame.code}: ${frame.message}`));
          ws.close();
        }
      };
      ws.onclose = (closed) => {
        clearTimeout(timer);
        if (admitted) {
          this._dropped(closed.code, closed.reason);
        } else {
          reject(new MatchClosed(closed.code, closed.reason || "the connection closed before its welcome"));
        }
      };
    });
  }

  _dropped(code, reason) {
    this.ws = null;
    if (this._closing || !this.reconnect || FINAL_CLOSE_CODES.has(code)) {
      this._finish(code, reason);
    } else {
      this._reconnect(code, reason);
    }
  }

  async _reconnect(code, reason) {
    this._setStatus("reconnecting");
    const deadline = performance.now() + this.maxReconnectS * 1000;
    let delay = 50;
    let last = `${code}: ${reason}`;
    while (!this._closing) {
      try {
        await this._open(true);
        this.reconnects += 1;
        return;
      } catch (error) {
        if (FINAL_CLOSE_CODES.has(error.code) || this._closing) {
          this._finish(error.code, error.reason);
          return;
        }
        last = error.message;
      }
      if (performance.now() + delay > deadline) break;
      await sleep(delay * (0.5 + Math.random()));
      delay = Math.min(delay * 2, 2000);
    }
    this._finish(code, this._closing ? "closed by the client" : `could not reconnect: ${last}`);
  }

  _finish(code, reason) {
    if (this.status === "closed") return;
    this.ws = null;
    this._setStatus("closed");
    this._emit("close", { code, reason });
  }
}
