// What the demo pages share: a guest player, the three ways into a match (matchmaking, create a
// custom match, join one by code), and the connection to it. Each page load is a new guest player.

import { ArbiterHTTP, MatchClient } from "./arbiter.js";

const $ = (id) => document.getElementById(id);

/** Wire a page's lobby controls (#find, #create, #join with #code-input, #leave, #status, #code,
 * #me) to a match of `game` (`queue` for matchmaking). `onClient(client)` is called with each new
 * MatchClient before it connects, to attach the page's handlers. */
export function lobby({ game, queue = game, params = {}, onClient }) {
  const http = new ArbiterHTTP();
  const page = { http, client: null };
  window.arbiter = page; // for the console (and the browser tests)

  const status = (text) => { $("status").textContent = text; };
  const busy = (on) => {
    for (const id of ["find", "create", "join", "code-input"]) $(id).disabled = on;
  };

  async function play(grant) {
    if (grant.code) {
      $("code").textContent = grant.code;
      const link = new URL(location.href);
      link.search = `?code=${grant.code}`;
      $("share").href = link.href;
      $("share").hidden = false;
    }
    const client = new MatchClient(grant.ws_url, grant.token);
    page.client = client;
    client.on("status", (s) => {
      if (s === "reconnecting") status("connection lost: reconnecting...");
      if (s === "open") status(`playing as ${client.player}`);
    });
    client.on("close", ({ code, reason }) => {
      status(`closed (${code ?? "no code"}): ${reason || "no reason given"}`);
      if ($("replay") && client.welcome) {  // the page has a replay link: to this match's (replay.html)
        $("replay").href = `replay.html?match=${client.welcome.match}`;
        $("replay").hidden = false;
      }
      $("leave").disabled = true;
      busy(false);
    });
    onClient(client);
    status("connecting...");
    await client.connect();
    $("leave").disabled = false;
  }

  async function start(how, label) {
    busy(true);
    try {
      if (!http.playerToken) {
        await http.guest();
        $("me").textContent = http.playerId;
      }
      status(label);
      await play(await how());
    } catch (error) {
      status(`failed: ${error.message}`);
      busy(false);
    }
  }

  $("find").onclick = () => start(() => http.matchmake(queue, {
    onTicket: (t) => status(`ticket ${t.status}${t.status === "queued" ? ": waiting for players" : ""}`),
  }), "queueing...");
  $("create").onclick = () => start(() => http.createCustom(game, params), "creating a match...");
  const joinByCode = () => {
    const code = $("code-input").value.trim().toUpperCase();
    if (code) start(() => http.joinCustom(code), `joining ${code}...`);
  };
  $("join").onclick = joinByCode;
  $("code-input").onkeydown = (e) => { if (e.key === "Enter") joinByCode(); };
  $("leave").onclick = () => page.client?.leave();
  $("leave").disabled = true;

  const code = new URLSearchParams(location.search).get("code");
  if (code) {
    $("code-input").value = code;
    joinByCode();
  }
  return page;
}
