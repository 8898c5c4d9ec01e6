// Watching a recorded match from the browser: an ES module, no dependencies, no build step.
//
//   import { ArbiterHTTP } from "/arbiter.js";
//   import { ReplayClient } from "/replay.js";
//
//   const http = new ArbiterHTTP();
//   const { token } = await http.call("POST", `/v1/matches/${matchId}/tokens`,
//     { body: { player_id: "viewer", role: "spectator" }, admin: true });   // or replayToken() below
//   const replay = new ReplayClient(matchId, token);
//   replay.on("state", ({ tick, state }) => draw(state));
//   await replay.connect();                  // resolves with the `replay` frame
//   replay.speed(2); replay.seek(600); replay.pause(); replay.play();
//
// It speaks the replay stream of docs/replay.md ("Watching a replay"): the WebSocket
// /v1/matches/{match_id}/replay on the page's own origin, `state` and `event` frames in the live
// protocol's shape, `replay` and `playback` frames for the position. See docs/web.md.

import { MatchClosed } from "./arbiter.js";

export const SPEEDS = [0.5, 1, 2, 4, 8];

/** A spectator token for `matchId` (finished or live) from POST /v1/matches/{id}/tokens, an admin
 * call: open on a development server, else `http` needs its adminToken. */
export async function replayToken(http, matchId, viewer = `viewer-${Math.random().toString(36).slice(2, 10)}`) {
  const grant = await http.call("POST", `/v1/matches/${encodeURIComponent(matchId)}/tokens`,
    { body: { player_id: viewer, role: "spectator" }, admin: true });
  return grant.token;
}

/** The replay stream's URL on the page's origin (ws: or wss: as the page is http: or https:). */
export function replayUrl(matchId, origin = globalThis.location?.origin) {
  const url = new URL(`/v1/matches/${encodeURIComponent(matchId)}/replay`, origin);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export class ReplayClient {
  constructor(matchId, token, { url = replayUrl(matchId), connectTimeoutS = 10 } = {}) {
    this.matchId = matchId;
    this.token = token;
    this.url = url;
    this.connectTimeoutS = connectTimeoutS;
    this.info = null;      // the `replay` frame: game, tick_rate, last_tick, players, result...
    this.playback = null;  // the last `playback` frame: tick, playing, speed, last_tick, finished, ended
    this.tick = -1;        // the tick of the last state
    this.state = null;     // the last state
    this.status = "new";   // new, connecting, open, closed
    this.ws = null;
    this._handlers = new Map();
  }

  /** Listen: "replay", "playback", "state" ({tick, acks, state}), "event" ({tick, kind, data}),
   * "error" ({code, message}), "close" ({code, reason}). Returns a function that stops listening. */
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
        console.error(`arbiter replay: a "${type}" handler threw`, error);
      }
    }
  }

  /** Open the stream and authenticate; resolves with the `replay` frame, rejects with MatchClosed. */
  connect() {
    this.status = "connecting";
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, ["arbiter.json.v1"]);
      this.ws = ws;
      let started = false;
      const timer = setTimeout(() => {
        reject(new MatchClosed(null, `no answer within ${this.connectTimeoutS} s`));
        ws.close();
      }, this.connectTimeoutS * 1000);
      ws.onopen = () => ws.send(JSON.stringify({ t: "auth", token: this.token }));
      ws.onmessage = (message) => {
        let frame;
        try {
          frame = JSON.parse(message.data);
        } catch {
          return;
        }
        if (frame.t === "replay" && !started) {
          started = true;
          clearTimeout(timer);
          this.info = frame;
          this.status = "open";
          this._emit("replay", frame);
          resolve(frame);
          return;
        }
        this._dispatch(frame);
      };
      ws.onclose = (closed) => {
        clearTimeout(timer);
        this.status = "closed";
        this.ws = null;
        if (!started) reject(new MatchClosed(closed.code, closed.reason || "closed before the replay started"));
        this._emit("close", { code: closed.code, reason: closed.reason });
      };
    });
  }

  _dispatch(frame) {
    if (frame.t === "state") {
      this.tick = frame.tick;
      this.state = frame.state;
      this._emit("state", { tick: frame.tick, acks: frame.acks, state: frame.state });
    } else if (frame.t === "playback") {
      this.playback = frame;
      this._emit("playback", frame);
    } else if (frame.t === "event") {
      this._emit("event", { tick: frame.tick, kind: frame.kind, data: frame.data });
    } else if (frame.t === "error") {
      this._emit("error", { code: frame.code, message: frame.message });
    } // other frame types (pong): ignored
  }

  _send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  play() { this._send({ t: "play" }); }
  pause() { this._send({ t: "pause" }); }
  /** 0.5 to 8. */
  speed(speed) { this._send({ t: "speed", speed }); }
  /** Jump to the state after `tick` (0 to playback.last_tick); playing goes on from there if it was. */
  seek(tick) { this._send({ t: "seek", tick }); }

  close() {
    if (this.ws) this.ws.close(1000, "");
  }
}
