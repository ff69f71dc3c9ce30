// synthsleep ward view: renders /api/ward snapshots, live from the /api/stream event source.
"use strict";
(function () {
  const bedsEl = document.getElementById("beds");
  const connEl = document.getElementById("conn");
  const clockEl = document.getElementById("clock");
  let snap = null;
  let skew = 0; // server clock - browser clock (s): ages are computed on the server's clock

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const hm = (s) => { s = Math.max(0, Math.floor(s)); return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, "0")}`; };
  const hms = (s) => `${hm(s)}:${String(Math.floor(Math.max(0, s)) % 60).padStart(2, "0")}`;
  const ago = (s) => s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${(s / 3600).toFixed(1)} h ago`;

  // hypnogram: W on top, then REM, N1, N2, N3 (the clinical layout)
  const ROW = {0: 0, 4: 1, 1: 2, 2: 3, 3: 4};
  const LABELS = ["W", "REM", "N1", "N2", "N3"];
  function hypnogram(bed, epochSeconds) {
    const W = 340, H = 90, L = 26, T = 6, rowH = 16;
    const n = Math.max(bed.hypnogram.length, 20);
    const dx = (W - L - 2) / n;
    const y = (code) => T + ROW[code] * rowH + rowH / 2;
    let out = LABELS.map((l, i) => `<text x="2" y="${T + i * rowH + rowH / 2 + 3}">${l}</text>`).join("");
    let path = "", rem = "";
    bed.hypnogram.forEach((code, i) => {
      const x = L + i * dx;
      if (code === null || code < 0) {
        out += `<rect class="unk" x="${x.toFixed(1)}" y="${T}" width="${Math.max(dx, 0.5).toFixed(1)}" height="${5 * rowH}"/>`;
        return;
      }
      path += `${path && bed.hypnogram[i - 1] !== null && bed.hypnogram[i - 1] >= 0 ? "L" : "M"}${x.toFixed(1)},${y(code)}H${(x + dx).toFixed(1)}`;
      if (code === 4) rem += `M${x.toFixed(1)},${y(4)}H${(x + dx).toFixed(1)}`;
    });
    out += `<path class="trace" d="${path}"/>` + (rem ? `<path class="trace rem" d="${rem}"/>` : "");
    const first = bed.first_epoch || 0;
    for (const ev of bed.resp_events) {
      const x = L + (ev.onset / epochSeconds - first) * dx;
      const w = Math.max(ev.duration / epochSeconds * dx, 1.5);
      out += `<rect class="ev-${ev.type}" x="${x.toFixed(1)}" y="${H - 6}" width="${w.toFixed(1)}" height="5"><title>${ev.type} at ${hms(ev.onset)}</title></rect>`;
    }
    return `<svg class="hyp" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="hypnogram">${out}</svg>`;
  }

  function card(bed, s) {
    const now = Date.now() / 1000 + skew;
    const alerting = bed.alerts.length > 0;
    // before its first epoch a bed is "connecting" (no stream found yet) or "waiting" (data coming)
    const stage = bed.stage !== null ? bed.stage : bed.connected === false ? "connecting" : "waiting";
    const conf = bed.confidence === null || bed.confidence === undefined ? "" : `${Math.round(bed.confidence * 100)} %`;
    const age = bed.last_epoch_time === null ? "no epoch yet" : `last epoch ${ago(now - bed.last_epoch_time)}`;
    const stale = bed.last_epoch_time !== null && now - bed.last_epoch_time > 2 * s.epoch_seconds;
    const ahi = bed.ahi === null ? "n/a" : `${bed.ahi.toFixed(1)}/h`;
    const sensors = bed.sensors.map((x) => {
      const cls = !x.ok ? "lost" : x.reason !== "ok" ? "warn" : "ok";
      return `<span class="chip ${cls}" data-modality="${esc(x.modality)}">${esc(x.modality)}${x.reason === "ok" ? "" : ": " + esc(x.reason)}</span>`;
    }).join("");
    const alerts = bed.alerts.map((a) => `<span class="chip alert">${esc(a)}</span>`).join("");
    const recent = bed.resp_events.slice(-4).reverse().map((e) => `${esc(e.type)} ${hms(e.onset)} (${Math.round(e.duration)} s)`).join(" · ");
    return `<section class="bed${alerting ? " alerting" : ""}" data-bed="${esc(bed.bed)}" data-epoch="${bed.epoch === null ? "" : bed.epoch}">
  <h2><span>bed ${esc(bed.bed)}</span><span class="age${stale ? " stale" : ""}" data-t="${bed.last_epoch_time === null ? "" : bed.last_epoch_time}">${age}</span></h2>
  <div class="stage"><span class="stage-name">${esc(stage)}</span><span class="conf">${conf}</span></div>
  <div class="row"><span>epoch <b class="epoch">${bed.epoch === null ? "—" : bed.epoch}</b></span>
    <span>elapsed <b>${bed.elapsed === null ? "—" : hm(bed.elapsed)}</b></span>
    ${bed.epoch_time ? `<span>at <b class="epoch-time">${new Date(bed.epoch_time).toLocaleTimeString()}</b></span>` : ""}
    <span>AHI <b class="ahi">${ahi}</b></span>
    <span>apnea <b>${bed.counts.apnea}</b></span><span>hypopnea <b>${bed.counts.hypopnea}</b></span></div>
  ${hypnogram(bed, s.epoch_seconds)}
  <div class="events">${recent || "no apnea/hypopnea events"}</div>
  <div class="chips">${alerts}${sensors}</div>
</section>`;
  }

  function render() {
    if (!snap) return;
    bedsEl.innerHTML = snap.beds.map((b) => card(b, snap)).join("");
  }

  function tick() { // ages move on between updates
    const now = Date.now() / 1000 + skew;
    clockEl.textContent = new Date(now * 1000).toLocaleTimeString();
    for (const el of document.querySelectorAll(".age[data-t]")) {
      const t = parseFloat(el.dataset.t);
      if (!isNaN(t)) el.textContent = `last epoch ${ago(now - t)}`;
    }
  }

  function accept(data) {
    snap = data;
    skew = data.now - Date.now() / 1000;
    render();
    tick();
  }

  function connect() {
    const es = new EventSource("/api/stream");
    es.onopen = () => { connEl.textContent = "live"; connEl.className = "conn up"; };
    es.onmessage = (m) => accept(JSON.parse(m.data));
    es.onerror = () => { connEl.textContent = "reconnecting…"; connEl.className = "conn down"; };
  }

  fetch("/api/ward").then((r) => r.json()).then(accept).catch(() => {});
  connect();
  setInterval(tick, 1000);
})();
