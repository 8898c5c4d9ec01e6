// How the demo games look: the arena field and the connect-four board, drawn from a state as the
// server sends it (docs/protocol.md, `state` frames). Shared by the game pages and the replay viewer.

export const ARENA_FIELD = 1000, ARENA_HILL = 50;  // gameserver/games/arena.py
export const COLUMNS = 7, ROWS = 6;  // gameserver/games/connect_four.py; board[row][column], row 0 at the bottom

/** A player's colour hue, the same on every page. */
export function hue(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

/** Draw an arena state on `canvas` and list its players in `tbody`: one row per player, with
 * data-player, data-x, data-y, data-vx and data-vy. `me` (a player id or null) is outlined and bold. */
export function drawArena(canvas, tbody, state, me = null) {
  const ctx = canvas.getContext("2d");
  const scale = canvas.width / ARENA_FIELD;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#e8f5e9";
  ctx.beginPath();
  ctx.arc(ARENA_FIELD / 2 * scale, ARENA_FIELD / 2 * scale, ARENA_HILL * scale, 0, 2 * Math.PI);
  ctx.fill();
  const rows = [];
  for (const [name, p] of Object.entries(state.players)) {
    const mine = name === me;
    ctx.fillStyle = `hsl(${hue(name)} 70% 45%)`;
    ctx.beginPath();
    ctx.arc(p.x * scale, p.y * scale, mine ? 9 : 7, 0, 2 * Math.PI);
    ctx.fill();
    if (mine) { ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.stroke(); }
    const row = document.createElement("tr");
    row.dataset.player = name;
    row.dataset.x = p.x; row.dataset.y = p.y; row.dataset.vx = p.vx; row.dataset.vy = p.vy;
    row.className = mine ? "me" : "";
    for (const text of [mine ? `${name} (you)` : name, p.x.toFixed(0), p.y.toFixed(0), p.score]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    rows.push(row);
  }
  tbody.replaceChildren(...rows);
}

/** Build a connect-four board in `container`: a button on top of each column, then the rows from the
 * top (row 5) down. `onColumn(column)` is called for a click anywhere in a column (none if null).
 * Returns `draw(state, me)`: each cell's data-owner is "" (empty), "me" (`me`'s piece) or "them". */
export function connectFourBoard(container, onColumn = null) {
  const cells = [];
  for (let column = 0; column < COLUMNS; column++) {
    const button = document.createElement("button");
    button.className = "column";
    button.dataset.column = column;
    button.textContent = "↓";
    button.title = `drop in column ${column}`;
    button.disabled = !onColumn;
    if (onColumn) button.onclick = () => onColumn(column);
    container.append(button);
  }
  for (let row = ROWS - 1; row >= 0; row--) {
    cells[row] = [];
    for (let column = 0; column < COLUMNS; column++) {
      const cell = document.createElement("div");
      cell.className = "cell";
      cell.dataset.row = row;
      cell.dataset.column = column;
      if (onColumn) cell.onclick = () => onColumn(column);
      container.append(cell);
      cells[row][column] = cell;
    }
  }
  return function draw(state, me) {
    for (let row = 0; row < ROWS; row++) {
      for (let column = 0; column < COLUMNS; column++) {
        const owner = state.board[row][column];
        const cell = cells[row][column];
        cell.dataset.owner = owner === "" ? "" : owner === me ? "me" : "them";
        cell.title = owner;
        const last = state.last_move;
        cell.classList.toggle("last", !!last && last.row === row && last.column === column);
      }
    }
  };
}
