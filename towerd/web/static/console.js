// towerd console: draws what the daemon pushes (server-sent events on /api/stream).
// Plain canvas and DOM, shipped with towerd; nothing is fetched from elsewhere
// (map tiles only when the configuration names a tile source).
"use strict";

const CATEGORY_COLOURS = {
  uas: "#e879f9", bird: "#38bdf8", ground_vehicle: "#d6a35c", manned_aircraft: "#f8fafc",
  person: "#a3e635", unknown: "#cbd5e1",
};
const THREAT_COLOURS = { none: null, low: "#fde047", medium: "#fb923c", high: "#ef4444" };
const SENSOR_PLOT_COLOURS = ["#22d3ee", "#f472b6", "#a78bfa", "#facc15"];
const STALE_AFTER_S = 3;

const state = {
  frame: null, frames: 0, rowsReceived: 0, lastFrameAt: 0, streamOpen: false,
  selected: null, waterfall: {}, tab: "ppi",
};
window.towerd = state;  // for technicians' browser consoles and the tests

// ---------------------------------------------------------------- helpers
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "data") Object.assign(e.dataset, v);
    else if (k === "style") e.style.cssText = v;  // CSSOM: allowed by the page's content security policy
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}
const fmt = (x, d = 1) => (x == null || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
function ago(s) {
  if (s == null) return "never";
  if (s < 120) return `${fmt(s, s < 10 ? 1 : 0)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
function table(head, rows, rowClass) {
  const t = el("table");
  t.append(el("tr", {}, ...head.map((h) => el("th", {}, h))));
  rows.forEach((r, i) => {
    const tr = el("tr", rowClass ? { class: rowClass(i) || "" } : {});
    for (const c of r) tr.append(c instanceof Node ? c : el("td", {}, c));
    t.append(tr);
  });
  return t;
}
const td = (text, cls) => el("td", cls ? { class: cls } : {}, text);

// ---------------------------------------------------------------- PPI
class Ppi {
  constructor(canvas, opts) {
    this.canvas = canvas; this.opts = opts;
    this.scale = 2; this.cx = 0; this.cy = 0; this.fitted = false;  // px per metre; view centre (E, N)
    this.tiles = new Map();
    let drag = null;
    canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
    window.addEventListener("mouseup", (e) => {
      if (drag && !drag.moved && e.target === canvas) this.click(e);
      drag = null; canvas.style.cursor = "grab";
    });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      this.cx -= dx / this.scale; this.cy += dy / this.scale; drag.x = e.clientX; drag.y = e.clientY;
      canvas.style.cursor = "grabbing"; this.draw();
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = canvas.getBoundingClientRect();
      this.zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    canvas.addEventListener("dblclick", () => this.reset());
  }
  reset() { this.fitted = false; this.draw(); }
  zoomAt(f, px, py) {
    const [e, n] = this.toWorld(px, py);
    this.scale = Math.min(200, Math.max(0.005, this.scale * f));
    const [e2, n2] = this.toWorld(px, py);
    this.cx += e - e2; this.cy += n - n2; this.draw();
  }
  toScreen(e, n) { return [this.w / 2 + (e - this.cx) * this.scale, this.h / 2 - (n - this.cy) * this.scale]; }
  toWorld(x, y) { return [this.cx + (x - this.w / 2) / this.scale, this.cy - (y - this.h / 2) / this.scale]; }
  fit(f) {
    // The tower, every radar's field of view and every track, with a margin.
    const pts = [[0, 0]];
    for (const r of f.geometry.radars || []) {
      const [e0, n0] = r.position_enu_m;
      pts.push([e0, n0]);
      for (let a = -r.fov_deg / 2; a <= r.fov_deg / 2 + 1e-9; a += r.fov_deg / 12) {
        const b = ((r.boresight_deg + a) * Math.PI) / 180;
        pts.push([e0 + r.range_m * Math.sin(b), n0 + r.range_m * Math.cos(b)]);
      }
    }
    for (const t of f.tracks) pts.push(t.en);
    const es = pts.map((p) => p[0]), ns = pts.map((p) => p[1]);
    const [e0, e1, n0, n1] = [Math.min(...es), Math.max(...es), Math.min(...ns), Math.max(...ns)];
    this.cx = (e0 + e1) / 2; this.cy = (n0 + n1) / 2;
    this.scale = Math.min(this.w / Math.max(50, e1 - e0), this.h / Math.max(50, n1 - n0)) * 0.85;
    this.fitted = true;
  }
  click(ev) {
    const f = state.frame; if (!f) return;
    const r = this.canvas.getBoundingClientRect();
    const x = ev.clientX - r.left, y = ev.clientY - r.top;
    let best = null, bestD = 14;
    for (const t of visibleTracks(f)) {
      const [sx, sy] = this.toScreen(t.en[0], t.en[1]);
      const d = Math.hypot(sx - x, sy - y);
      if (d < bestD) { best = t; bestD = d; }
    }
    state.selected = best ? best.id : null;
    renderDetails(); drawAll();
  }
  draw() {
    const c = this.canvas, f = state.frame;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    }
    this.w = w; this.h = h;
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = "#0b1220"; g.fillRect(0, 0, w, h);
    if (!f) { g.fillStyle = "#8190ab"; g.fillText("waiting for the daemon…", 20, 40); return; }
    if (!this.fitted) this.fit(f);
    if (flag("show-tiles") && f.geometry.tiles) this.drawTiles(g, f);
    this.drawRings(g);
    if (flag("show-zones")) this.drawZones(g, f);
    this.drawRadars(g, f);
    if (flag("show-plots")) this.drawPlots(g, f);
    if (this.opts.alignment) this.drawAlignment(g, f);
    this.drawTracks(g, f);
    this.drawNorth(g);
    if (f.geometry.tiles && f.geometry.tiles.attribution && flag("show-tiles")) {
      g.fillStyle = "#8190ab"; g.font = "11px sans-serif"; g.textAlign = "right";
      g.fillText(f.geometry.tiles.attribution, w - 8, h - 8); g.textAlign = "left";
    }
  }
  drawRings(g) {
    const maxR = Math.hypot(this.w, this.h) / this.scale;
    const target = Math.min(this.w, this.h) / 2 / this.scale / 4;
    const p = Math.pow(10, Math.floor(Math.log10(target)));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= target) || p * 10;
    const [ox, oy] = this.toScreen(0, 0);
    g.strokeStyle = "#23304d"; g.lineWidth = 1; g.fillStyle = "#5b6b88"; g.font = "11px sans-serif";
    for (let r = step; r < maxR + Math.hypot(this.cx, this.cy); r += step) {
      g.beginPath(); g.arc(ox, oy, r * this.scale, 0, 2 * Math.PI); g.stroke();
      const d = (r * this.scale) / Math.SQRT2;
      g.fillText(r >= 1000 ? `${r / 1000} km` : `${r} m`, ox + d + 3, oy - d - 3);
    }
    g.beginPath(); g.moveTo(ox, 0); g.lineTo(ox, this.h); g.moveTo(0, oy); g.lineTo(this.w, oy); g.stroke();
    g.fillStyle = "#dbe4f3"; g.beginPath(); g.arc(ox, oy, 3, 0, 2 * Math.PI); g.fill();
  }
  drawNorth(g) {
    g.save(); g.translate(this.w - 30, 40); g.fillStyle = "#dbe4f3"; g.strokeStyle = "#dbe4f3";
    g.beginPath(); g.moveTo(0, -16); g.lineTo(6, 4); g.lineTo(0, 0); g.lineTo(-6, 4); g.closePath(); g.fill();
    g.font = "bold 12px sans-serif"; g.textAlign = "center"; g.fillText("N", 0, 18); g.restore();
  }
  drawZones(g, f) {
    for (const z of f.geometry.zones || []) {
      const lv = z.levels.includes("high") ? "high" : z.levels.includes("medium") ? "medium" : "low";
      g.beginPath();
      z.en.forEach(([e, n], i) => { const [x, y] = this.toScreen(e, n); i ? g.lineTo(x, y) : g.moveTo(x, y); });
      g.closePath(); g.fillStyle = (THREAT_COLOURS[lv] || "#fde047") + "22"; g.fill();
      g.strokeStyle = THREAT_COLOURS[lv] || "#fde047"; g.setLineDash([6, 4]); g.stroke(); g.setLineDash([]);
      const [x, y] = this.toScreen(z.en[0][0], z.en[0][1]);
      g.fillStyle = g.strokeStyle; g.font = "12px sans-serif"; g.fillText(z.name, x + 4, y - 4);
    }
  }
  drawRadars(g, f) {
    (f.geometry.radars || []).forEach((r, i) => {
      const [x, y] = this.toScreen(r.position_enu_m[0], r.position_enu_m[1]);
      const a0 = ((r.boresight_deg - r.fov_deg / 2 - 90) * Math.PI) / 180;
      const a1 = ((r.boresight_deg + r.fov_deg / 2 - 90) * Math.PI) / 180;
      const down = sensorState(r.name) !== "ok";
      g.beginPath(); g.moveTo(x, y); g.arc(x, y, r.range_m * this.scale, a0, a1); g.closePath();
      g.fillStyle = down ? "rgba(239,68,68,0.08)" : "rgba(56,189,248,0.07)"; g.fill();
      g.strokeStyle = down ? "rgba(239,68,68,0.6)" : "rgba(56,189,248,0.45)"; g.lineWidth = 1; g.stroke();
      const b = ((r.boresight_deg - 90) * Math.PI) / 180;
      const len = r.range_m * this.scale * (this.opts.alignment ? 1.15 : 1);
      g.beginPath(); g.moveTo(x, y); g.lineTo(x + Math.cos(b) * len, y + Math.sin(b) * len);
      g.setLineDash(this.opts.alignment ? [] : [4, 4]);
      g.strokeStyle = this.opts.alignment ? "#38bdf8" : "rgba(56,189,248,0.6)";
      g.lineWidth = this.opts.alignment ? 2 : 1; g.stroke(); g.setLineDash([]); g.lineWidth = 1;
      g.fillStyle = SENSOR_PLOT_COLOURS[i % SENSOR_PLOT_COLOURS.length]; g.font = "12px sans-serif";
      const lx = x + Math.cos(b) * (len + 6), ly = y + Math.sin(b) * (len + 6);
      g.fillText(`${r.name} ${fmt(r.boresight_deg, 1)}°${down ? " (" + sensorState(r.name) + ")" : ""}`, lx, ly);
    });
  }
  drawPlots(g, f) {
    const names = (f.geometry.radars || []).map((r) => r.name);
    const life = f.geometry.plots_s || 3;
    for (const p of f.plots) {
      const a = Math.max(0.05, 1 - p.age_s / life);
      g.fillStyle = SENSOR_PLOT_COLOURS[Math.max(0, names.indexOf(p.sensor)) % SENSOR_PLOT_COLOURS.length];
      g.globalAlpha = a * 0.8;
      for (const [e, n] of p.en) { const [x, y] = this.toScreen(e, n); g.fillRect(x - 1.5, y - 1.5, 3, 3); }
    }
    g.globalAlpha = 1;
  }
  drawAlignment(g, f) {
    const radars = Object.fromEntries((f.geometry.radars || []).map((r) => [r.name, r]));
    g.font = "11px sans-serif";
    for (const t of visibleTracks(f)) {
      if (!t.radar || !radars[t.radar.name]) continue;
      const r = radars[t.radar.name];
      const [x0, y0] = this.toScreen(r.position_enu_m[0], r.position_enu_m[1]);
      const [x1, y1] = this.toScreen(t.en[0], t.en[1]);
      g.strokeStyle = "rgba(250,204,21,0.7)"; g.setLineDash([3, 3]);
      g.beginPath(); g.moveTo(x0, y0); g.lineTo(x1, y1); g.stroke(); g.setLineDash([]);
      g.fillStyle = "#facc15";
      g.fillText(`${t.radar.name} ${fmt(t.radar.bearing_deg, 0)}° (${t.radar.off_boresight_deg >= 0 ? "+" : ""}${fmt(t.radar.off_boresight_deg, 0)}°)`,
                 x1 + 12, y1 + 24);
    }
  }
  drawTracks(g, f) {
    const trails = flag("show-trails");
    for (const t of visibleTracks(f)) {
      const col = CATEGORY_COLOURS[t.category] || CATEGORY_COLOURS.unknown;
      const [x, y] = this.toScreen(t.en[0], t.en[1]);
      if (trails && t.trail.length > 1) {
        g.strokeStyle = col; g.globalAlpha = t.reportable ? 0.75 : 0.35; g.lineWidth = 2; g.beginPath();
        t.trail.forEach(([e, n], i) => { const [a, b] = this.toScreen(e, n); i ? g.lineTo(a, b) : g.moveTo(a, b); });
        g.stroke(); g.globalAlpha = 1; g.lineWidth = 1;
      }
      const vx = t.vel_en[0] || 0, vy = t.vel_en[1] || 0;  // 10 s velocity leader
      g.strokeStyle = col; g.beginPath(); g.moveTo(x, y);
      g.lineTo(x + vx * 10 * this.scale, y - vy * 10 * this.scale); g.stroke();
      const ring = THREAT_COLOURS[t.threat];
      if (ring) { g.strokeStyle = ring; g.lineWidth = 3; g.beginPath(); g.arc(x, y, 10, 0, 2 * Math.PI); g.stroke(); g.lineWidth = 1; }
      g.fillStyle = col; g.strokeStyle = "#0b1220";
      if (!t.reportable) g.globalAlpha = 0.45;  // static clutter: tracked, never reported
      g.beginPath();
      if (t.status === "tentative") { g.globalAlpha = 0.5; g.arc(x, y, 4, 0, 2 * Math.PI); }
      else if (t.category === "uas") { g.moveTo(x, y - 7); g.lineTo(x + 6, y + 5); g.lineTo(x - 6, y + 5); g.closePath(); }
      else g.rect(x - 5, y - 5, 10, 10);
      g.fill(); g.stroke(); g.globalAlpha = 1;
      if (t.status === "coasting") { g.strokeStyle = col; g.setLineDash([2, 2]); g.beginPath(); g.arc(x, y, 7, 0, 2 * Math.PI); g.stroke(); g.setLineDash([]); }
      if (state.selected === t.id) { g.strokeStyle = "#ffffff"; g.lineWidth = 2; g.strokeRect(x - 12, y - 12, 24, 24); g.lineWidth = 1; }
      g.fillStyle = "#dbe4f3"; g.font = "11px sans-serif";
      const cat = !t.reportable ? "static clutter" : t.category === "unknown" ? "unknown" : `${t.category.replace("_", " ")} ${t.confidence}%`;
      g.fillText(`T${t.id} ${cat}${t.rf_link ? " RF" : ""}`, x + 12, y - 2);
      g.fillStyle = "#8190ab";
      g.fillText(`${fmt(t.speed_mps)} m/s · ${fmt(t.height_m != null ? t.height_m : t.up_m, 0)} m`, x + 12, y + 11);
    }
  }
  drawTiles(g, f) {
    const tl = f.geometry.tiles, site = f.geometry.site, z = tl.zoom;
    const R = 6378137, lat0 = site.latitude_deg, lon0 = site.longitude_deg, k = Math.PI / 180;
    const toEn = (lat, lon) => [(lon - lon0) * k * R * Math.cos(lat0 * k), (lat - lat0) * k * R];
    const tileX = (lon) => ((lon + 180) / 360) * 2 ** z;
    const tileY = (lat) => ((1 - Math.log(Math.tan(lat * k) + 1 / Math.cos(lat * k)) / Math.PI) / 2) * 2 ** z;
    const lonOf = (x) => (x / 2 ** z) * 360 - 180;
    const latOf = (y) => Math.atan(Math.sinh(Math.PI * (1 - (2 * y) / 2 ** z))) / k;
    const [e0, n0] = this.toWorld(0, this.h), [e1, n1] = this.toWorld(this.w, 0);
    const lonA = lon0 + e0 / (k * R * Math.cos(lat0 * k)), lonB = lon0 + e1 / (k * R * Math.cos(lat0 * k));
    const latA = lat0 + n0 / (k * R), latB = lat0 + n1 / (k * R);
    const x0 = Math.floor(tileX(lonA)), x1 = Math.floor(tileX(lonB));
    const y0 = Math.floor(tileY(latB)), y1 = Math.floor(tileY(latA));
    if ((x1 - x0 + 1) * (y1 - y0 + 1) > 64) return;  // zoomed far out: tiles would be too many to be useful
    g.globalAlpha = 0.55;
    for (let x = x0; x <= x1; x++) for (let y = y0; y <= y1; y++) {
      const url = tl.url.replace("{z}", z).replace("{x}", x).replace("{y}", y);
      let img = this.tiles.get(url);
      if (!img) { img = new Image(); img.onload = () => this.draw(); img.src = url; this.tiles.set(url, img); }
      if (!img.complete || !img.naturalWidth) continue;
      const [ea, na] = toEn(latOf(y), lonOf(x)), [eb, nb] = toEn(latOf(y + 1), lonOf(x + 1));
      const [sa, ta] = this.toScreen(ea, na), [sb, tb] = this.toScreen(eb, nb);
      g.drawImage(img, sa, ta, sb - sa, tb - ta);
    }
    g.globalAlpha = 1;
  }
}

function flag(id) { const e = $(id); return e ? e.checked : true; }
function visibleTracks(f) {
  const tent = flag("show-tentative");
  return f.tracks.filter((t) => t.status !== "ended" && (tent || t.status !== "tentative"));
}
function sensorState(name) {
  const s = state.frame && state.frame.health.sensors && state.frame.health.sensors[name];
  return s ? s.state : "down";
}

// ---------------------------------------------------------------- header, details
function renderBar(f) {
  const h = f.health;
  $("tower").textContent = `tower ${f.tower.id}`;
  $("show-tiles").parentElement.hidden = !f.geometry.tiles;  // no tile source configured: nothing to toggle
  const sensors = $("sensors"); sensors.replaceChildren();
  for (const [name, s] of Object.entries(h.sensors || {})) {
    sensors.append(el("span", { class: `badge ${s.state}`, data: { sensor: name, state: s.state },
      title: s.state === "ok" ? `${fmt(s.rate_hz)} readings/s` : (s.last_error || s.state) }, `${name} ${s.state}`));
  }
  const links = $("links"); links.replaceChildren();
  for (const [name, c] of Object.entries(h.centrals || {})) {
    const st = c.link_up ? "up" : "down";
    links.append(el("span", { class: `badge ${st}`, data: { central: name, state: st },
      title: `last ACK ${ago(c.last_ack_age_s)} ago` }, `→ ${name} ${st}`));
  }
  const tracks = f.tracks.filter((t) => t.status === "confirmed" || t.status === "coasting").length;
  $("summary").textContent = `${tracks} tracks · ${f.rf.tracks.filter((t) => t.drone_link).length} drone links · config ${f.tower.config_digest.slice(0, 12)}`;
}

function renderDetails() {
  const box = $("details"), f = state.frame;
  const t = f && f.tracks.find((x) => x.id === state.selected);
  if (!t) { box.replaceChildren(el("p", { class: "muted" }, state.selected ? "Track ended." : "Click a track for its details.")); return; }
  const rows = [
    ["status", t.status], ["category", `${t.category} (${t.confidence}%)`], ["threat", t.threat],
    ["range", `${fmt(t.range_m)} m`], ["azimuth", `${fmt(t.azimuth_deg)}°`], ["elevation", `${fmt(t.elevation_deg)}°`],
    ["east / north", `${fmt(t.en[0])} / ${fmt(t.en[1])} m`], ["height above ground", `${fmt(t.height_m)} m`],
    ["speed", `${fmt(t.speed_mps)} m/s, heading ${fmt(t.heading_deg, 0)}°`], ["climb", `${fmt(t.climb_mps)} m/s`],
    ["position σ", `${fmt(t.sigma_m)} m`], ["age", ago(t.age_s)], ["last plot", `${fmt(t.since_update_s, 2)} s ago`],
    ["updates", t.hits], ["reported", t.reportable ? "yes" : "no (static clutter)"],
    ["RF link", t.rf_link ? `${fmt(t.rf_link.freq_mhz, 1)} MHz, ${fmt(t.rf_link.bw_mhz, 1)} MHz wide, ${fmt(t.rf_link.power_dbm)} dBm` : "none"],
    ["seen by", t.radar ? `${t.radar.name}, bearing ${fmt(t.radar.bearing_deg)}° (${fmt(t.radar.off_boresight_deg)}° off boresight)` : "–"],
  ];
  box.replaceChildren(el("h3", {}, `Track ${t.id}`), table(["", ""], rows.map(([k, v]) => [td(k), td(v)])));
}

function renderLegend() {
  const items = Object.entries(CATEGORY_COLOURS).map(([k, c]) =>
    el("span", {}, el("i", { style: `background:${c}` }), k.replace("_", " ")));
  items.push(el("span", {}, "threat ring: ", ...["low", "medium", "high"].map((k) =>
    el("span", { style: `color:${THREAT_COLOURS[k]}` }, k + " "))));
  $("legend").replaceChildren(...items);
}

// ---------------------------------------------------------------- RF
const WATERFALL_SPAN_DB = 45;  // colour scale: from just under the noise floor to this far above it
function dbColour(db, lo) {
  const v = Math.max(0, Math.min(1, (db - lo) / WATERFALL_SPAN_DB));
  const r = Math.round(255 * Math.min(1, Math.max(0, 1.5 * v - 0.2)));
  const g = Math.round(255 * Math.min(1, Math.max(0, 2 * v - 0.6)));
  const b = Math.round(255 * Math.min(1, Math.max(0.15, v < 0.5 ? 0.3 + v : 1.3 - v)));
  return [r, g, b];
}
function renderRf(f) {
  const host = $("rf-bands");
  if (!f.rf.bands.length) { host.replaceChildren(el("p", { class: "muted" }, "No spectrum yet (no RF sensor, or it sends nothing).")); }
  for (const b of f.rf.bands) {
    const key = `${b.sensor}/${b.band}`;
    let card = host.querySelector(`[data-band="${CSS.escape(key)}"]`);
    if (!card) {
      card = el("div", { class: "band", data: { band: key } }, el("h3"), el("canvas", { class: "spectrum", height: "180" }),
                el("canvas", { class: "waterfall", height: "120" }));
      host.querySelectorAll("p.muted").forEach((p) => p.remove());
      host.append(card);
    }
    host.append(card);  // keeps the cards in the view's order (sensor, frequency)
    const links = f.rf.tracks.filter((t) => t.sensor === b.sensor && t.band === b.band && t.status !== "ended");
    links.sort((x, y) => y.drone_link - x.drone_link);
    card.querySelector("h3").textContent = `${b.sensor} · band ${b.band} · ${fmt(b.start_mhz, 1)}–${fmt(b.stop_mhz, 1)} MHz · ` +
      `sweep ${b.sweeps}, ${fmt(b.age_s, 1)} s ago · ${b.emitters.length} emitters · ${links.filter((t) => t.drone_link).length} drone links`;
    drawSpectrum(card.querySelector("canvas.spectrum"), b, links);
    drawWaterfall(card.querySelector("canvas.waterfall"), key, b);
  }
  const rows = f.rf.tracks.map((t) => [td(t.id), td(t.status), td(t.kind, t.drone_link ? "problem" : ""), td(`${t.confidence}%`),
    td(`${t.sensor}/${t.band}`), td(fmt(t.centre_mhz, 2), "num"), td(fmt(t.bandwidth_mhz, 2), "num"),
    td(fmt(t.power_dbm), "num"), td(fmt(t.snr_db), "num"), td(t.hopping ? `${t.channels} ch` : "–"), td(ago(t.seen_s))]);
  $("rf-tracks").replaceChildren(...table(["id", "status", "kind", "conf.", "band", "MHz", "width MHz", "dBm", "SNR dB", "hopping", "seen for"], rows).childNodes);
}
function sizeCanvas(c) {
  const dpr = window.devicePixelRatio || 1, w = c.clientWidth, h = Number(c.getAttribute("height"));
  if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
  const g = c.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0); return [g, w, h];
}
function drawSpectrum(c, b, links) {
  const [g, w, h] = sizeCanvas(c);
  const pad = { l: 40, r: 8, t: 8, b: 18 };
  const all = b.power_dbm.concat(b.threshold_dbm).filter((v) => v > -199);
  const lo = Math.floor((Math.min(...all, -110) - 5) / 10) * 10, hi = Math.ceil((Math.max(...all, -60) + 5) / 10) * 10;
  const X = (mhz) => pad.l + ((mhz - b.start_mhz) / (b.stop_mhz - b.start_mhz || 1)) * (w - pad.l - pad.r);
  const Y = (db) => pad.t + ((hi - db) / (hi - lo)) * (h - pad.t - pad.b);
  g.fillStyle = "#0b1220"; g.fillRect(0, 0, w, h);
  g.strokeStyle = "#23304d"; g.fillStyle = "#5b6b88"; g.font = "10px sans-serif";
  for (let db = lo; db <= hi; db += 10) { g.beginPath(); g.moveTo(pad.l, Y(db)); g.lineTo(w - pad.r, Y(db)); g.stroke(); g.fillText(`${db}`, 4, Y(db) + 3); }
  g.fillText(`${fmt(b.start_mhz, 1)} MHz`, pad.l, h - 4); g.textAlign = "right"; g.fillText(`${fmt(b.stop_mhz, 1)} MHz`, w - pad.r, h - 4); g.textAlign = "left";
  for (const e of b.emitters) { g.fillStyle = "rgba(250,204,21,0.18)"; g.fillRect(X(e.low_mhz), pad.t, Math.max(2, X(e.high_mhz) - X(e.low_mhz)), h - pad.t - pad.b); }
  const n = b.power_dbm.length, step = (b.stop_mhz - b.start_mhz) / Math.max(1, n - 1);
  const line = (arr, col, width, dash) => {
    g.strokeStyle = col; g.lineWidth = width; g.setLineDash(dash || []); g.beginPath();
    arr.forEach((v, i) => { const x = X(b.start_mhz + i * step), y = Y(Math.max(lo, v)); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke(); g.setLineDash([]); g.lineWidth = 1;
  };
  line(b.floor_dbm, "#64748b", 1.5); line(b.threshold_dbm, "#f59e0b", 1, [4, 3]); line(b.power_dbm, "#38bdf8", 1.2);
  links.forEach((t, k) => {
    const lane = (k % 3) * 12, x0 = X(t.centre_mhz - t.bandwidth_mhz / 2), x1 = X(t.centre_mhz + t.bandwidth_mhz / 2);
    g.strokeStyle = t.drone_link ? "#ef4444" : "#a3a3a3"; g.lineWidth = 2;
    g.beginPath(); g.moveTo(x0, pad.t + 4 + lane); g.lineTo(x1, pad.t + 4 + lane); g.stroke(); g.lineWidth = 1;
    if (t.drone_link) {  // other RF tracks get their bar only (the table below names them)
      g.fillStyle = g.strokeStyle;
      g.fillText(`▲ ${t.kind} ${fmt(t.centre_mhz, 1)} MHz`, Math.max(pad.l, x0), pad.t + 15 + lane);
    }
  });
}
function drawWaterfall(c, key, b) {
  const [g, w, h] = sizeCanvas(c);
  const rowH = 2, rows = (state.waterfall[key] || []).slice(-Math.floor(h / rowH)).reverse();  // newest on top
  const floor = b.floor_dbm.filter((v) => v > -199).sort((x, y) => x - y);
  const lo = (floor.length ? floor[Math.floor(floor.length / 2)] : -110) - 3;
  g.fillStyle = "#0b1220"; g.fillRect(0, 0, w, h);
  if (!rows.length) return;
  const n = rows[0][4].length;
  const off = document.createElement("canvas"); off.width = n; off.height = rows.length;
  const og = off.getContext("2d"), img = og.createImageData(n, rows.length);
  rows.forEach((r, y) => {
    const p = r[4];
    for (let i = 0; i < n; i++) {
      const [R, G, B] = dbColour(i < p.length ? p[i] : -200, lo), o = 4 * (y * n + i);
      img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
    }
  });
  og.putImageData(img, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(off, 40, 0, w - 48, rows.length * rowH);
  g.fillStyle = "#5b6b88"; g.font = "10px sans-serif"; g.fillText("now", 4, 10); g.fillText(`${rows.length} sweeps`, 2, h - 4);
}

// ---------------------------------------------------------------- health
function renderHealth(f) {
  const h = f.health, cards = [];
  const problems = [];
  const sensors = Object.entries(h.sensors || {});
  sensors.forEach(([n, s]) => { if (s.state !== "ok") problems.push(`sensor ${n} is ${s.state}: ${s.last_error || "no detail"}`); });
  Object.entries(h.centrals || {}).forEach(([n, c]) => { if (!c.link_up) problems.push(`link to central ${n} is down (${c.state})`); });
  if (h.readings_dropped) problems.push(`the processing loop fell behind: ${h.readings_dropped} readings dropped`);
  cards.push(el("div", { class: "card", style: "flex-basis:100%" }, el("h3", {}, problems.length ? "Problems" : "All good"),
    ...(problems.length ? [el("ul", {}, ...problems.map((p) => el("li", { class: "problem" }, p)))] : [el("p", { class: "muted" }, "Every sensor talks and every link is up.")])));
  cards.push(el("div", { class: "card", style: "flex-basis:100%" }, el("h3", {}, "Sensors"),
    table(["sensor", "state", "why", "driver", "port", "rate /s", "frames", "bad", "resyncs", "dropped B", "reconnects", "bytes in"],
      sensors.map(([n, s]) => [td(n), td(s.state, `state ${s.state}`), td(s.state === "ok" ? "" : s.last_error || "no detail"), td(s.driver), td(s.port),
        td(fmt(s.rate_hz), "num"), td(s.frames, "num"), td(s.bad_frames, "num"), td(s.resyncs, "num"), td(s.dropped_bytes, "num"),
        td(s.reconnects, "num"), td(s.bytes_in, "num")]),
      (i) => sensors[i][1].state)));
  const centrals = Object.entries(h.centrals || {});
  cards.push(el("div", { class: "card" }, el("h3", {}, "Links"),
    table(["central", "endpoint", "state", "last ACK", "in flight", "backlog", "resent"],
      centrals.map(([n, c]) => [td(n), td(c.endpoint), td(c.link_up ? `up (${c.state})` : `DOWN (${c.state})`, `state ${c.link_up ? "up" : "down"}`),
        td(c.last_ack_age_s == null ? "no ACK yet" : `${ago(c.last_ack_age_s)} ago`), td(c.in_flight, "num"),
        td(c.backlog != null ? c.backlog : c.pending != null ? c.pending : "–", "num"), td(c.resent_msgs, "num")]))));
  const ob = h.outbox || {};
  cards.push(el("div", { class: "card" }, el("h3", {}, "Outbox"), table(["", ""], [
    [td("records waiting"), td(ob.pending, "num")], [td("oldest record"), td(ob.oldest_age_s != null ? `${ago(ob.oldest_age_s)} old (seq ${ob.oldest_seq})` : "none held")],
    [td("size"), td(ob.bytes != null ? `${fmt(ob.bytes / 1024, 0)} KiB` : "–", "num")], [td("next seq"), td(ob.next_seq, "num")],
    [td("dropped in all"), td(ob.dropped_total, "num")], [td("write failures"), td(ob.write_failures != null ? ob.write_failures : "–", "num")]])));
  const p = h.process || {};
  cards.push(el("div", { class: "card" }, el("h3", {}, "Daemon"), table(["", ""], [
    [td("version"), td(h.software_version)], [td("up"), td(ago(h.uptime_s))], [td("pid"), td(p.pid)],
    [td("CPU"), td(p.cpu_percent == null ? "measuring…" : `${fmt(p.cpu_percent)} % of one core`)],
    [td("memory"), td(`${fmt(p.rss_mib)} MiB (peak ${fmt(p.rss_peak_mib)})`)], [td("load average"), td((p.load_average || []).join(" "))],
    [td("tracks"), td(h.tracks_active)], [td("readings dropped"), td(h.readings_dropped)],
    [td("configuration"), td(h.config_path)], [td("sha256"), td(String(h.config_digest || "").slice(0, 16) + "…")],
    [td("open consoles"), td(h.console ? h.console.clients : "–")]])));
  cards.push(el("div", { class: "card", style: "flex-basis:100%" }, el("h3", {}, "Last events"),
    el("ul", { class: "events" }, ...(h.events || []).map((e) => el("li", { class: `sev-${e.severity}` },
      `${new Date(e.time_us / 1000).toISOString().slice(11, 19)} UTC  ${e.code}: ${e.message}`)))));
  $("health-body").replaceChildren(el("div", { class: "cards" }, ...cards));
}

// ---------------------------------------------------------------- alignment
function renderAlign(f) {
  const parts = [el("h3", {}, "Radar alignment"),
    el("p", { class: "muted" }, "Each radar's configured boresight (mount.boresight_azimuth_deg) is the solid line; dashed lines join each radar to the tracks it sees, with their bearing from it and (in brackets) off its boresight. Compare with a target you can see: if a drone due east (90°) shows at 75°, the boresight in the configuration is 15° too small.")];
  for (const r of f.geometry.radars || []) {
    const mine = visibleTracks(f).filter((t) => t.radar && t.radar.name === r.name);
    parts.push(el("h3", {}, `${r.name}: boresight ${fmt(r.boresight_deg)}°, tilt ${fmt(r.tilt_deg)}°`),
      mine.length ? table(["track", "bearing", "off boresight", "range"], mine.map((t) => [td(`T${t.id}`), td(`${fmt(t.radar.bearing_deg)}°`, "num"),
        td(`${fmt(t.radar.off_boresight_deg)}°`, "num"), td(`${fmt(t.range_m, 0)} m`, "num")]))
        : el("p", { class: "muted" }, "no tracks from this radar now"));
  }
  $("align-body").replaceChildren(...parts);
}

// ---------------------------------------------------------------- wiring
const ppi = new Ppi($("ppi"), { alignment: false });
const ppiAlign = new Ppi($("ppi-align"), { alignment: true });
state.ppi = ppi;
let drawPending = false;
function drawAll() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    const f = state.frame;
    if (state.tab === "ppi") ppi.draw();
    if (!f) return;
    renderBar(f);
    if (state.tab === "rf") renderRf(f);
    if (state.tab === "health") renderHealth(f);
    if (state.tab === "align") { ppiAlign.draw(); renderAlign(f); }
    if (state.tab === "ppi") renderDetails();
  });
}
function selectTab(name) {
  if (!$("tab-" + name)) name = "ppi";
  state.tab = name;
  document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("active", s.id === "tab-" + name));
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.tab === name));
  drawAll();
}
state.selectTab = selectTab;
window.addEventListener("hashchange", () => selectTab(location.hash.slice(1)));
window.addEventListener("resize", drawAll);
$("zoom-in").onclick = () => ppi.zoomAt(1.5, ppi.w / 2, ppi.h / 2);
$("zoom-out").onclick = () => ppi.zoomAt(1 / 1.5, ppi.w / 2, ppi.h / 2);
$("zoom-reset").onclick = () => ppi.reset();
document.querySelectorAll(".tools input").forEach((i) => { i.onchange = drawAll; });

function setLive() {
  const b = $("live");
  const age = (performance.now() - state.lastFrameAt) / 1000;
  let cls, text;
  if (!state.frame) { cls = "stale"; text = "connecting"; }
  else if (!state.streamOpen) { cls = "lost"; text = `no stream: reconnecting (${ago(age)})`; }
  else if (age > STALE_AFTER_S) { cls = "lost"; text = `no update for ${ago(age)}`; }
  else { cls = "live"; text = "live"; }
  b.className = `badge ${cls}`; b.textContent = text; b.dataset.state = cls;
}
setInterval(setLive, 500);

function connect() {
  const es = new EventSource("/api/stream");
  es.onopen = () => { state.streamOpen = true; setLive(); };
  es.onerror = () => { state.streamOpen = es.readyState === EventSource.OPEN; setLive(); };
  es.addEventListener("state", (ev) => {
    const f = JSON.parse(ev.data), now = performance.now();
    // Each update carries the plots read since the one before: keep them plots_s, ageing.
    const life = (f.geometry.plots_s || 3) * 1000;
    state.plotBuf = (state.plotBuf || []).filter((p) => now - p.at < life);
    for (const p of f.plots) state.plotBuf.push({ ...p, at: now - p.age_s * 1000 });
    f.plots = state.plotBuf.map((p) => ({ ...p, age_s: (now - p.at) / 1000 }));
    state.frame = f; state.frames += 1; state.lastFrameAt = now; state.streamOpen = true;
    drawAll(); setLive();
  });
  es.addEventListener("rows", (ev) => {
    const rows = JSON.parse(ev.data);
    for (const [key, list] of Object.entries(rows)) {
      const buf = state.waterfall[key] || (state.waterfall[key] = []);
      for (const r of list) if (!buf.length || r[0] > buf[buf.length - 1][0] || r[0] < buf[buf.length - 1][0] - 1000) buf.push(r);
      if (buf.length > 400) buf.splice(0, buf.length - 400);
      state.rowsReceived += list.length;
    }
  });
}
renderLegend();
selectTab(location.hash.slice(1) || "ppi");
connect();
