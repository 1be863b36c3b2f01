// edgegw console: reads and changes the appliance through the admin API
// with the session cookie. Every change carries the session's CSRF token.
// All data is inserted as text, never as HTML.
"use strict";
(() => {
  const POLL_MS = 2000;
  const PAGE = 50;
  const $ = (id) => document.getElementById(id);
  let session = null;
  let lastStatus = null;
  const dev = { q: "", status: "", offset: 0, total: 0, confirm: "" };

  // el builds an element; children are nodes or text.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const k of kids) e.append(k instanceof Node ? k : String(k ?? ""));
    return e;
  }
  function rows(tbody, list, render, empty) {
    const t = typeof tbody === "string" ? document.querySelector("#" + tbody + " tbody") : tbody;
    t.replaceChildren(...(list.length ? list.map(render) : [el("tr", {}, el("td", { colSpan: 20, class: "muted" }, empty))]));
    applySort(t.closest("table"));
  }

  // Sorting: a click (or Enter or Space) on a header sorts its table by
  // that column, again reverses it. The order is kept per table across
  // the page's refreshes: every render sorts again. A cell's data-sort,
  // when set, is its value (numbers behind units); else its text, numbers
  // compared as numbers.
  const sorts = new Map(); // table key → {col, dir}
  function tableKey(table) { return table.id || (table.dataset.tunnel ? "wg:" + table.dataset.tunnel : ""); }
  function cellValue(tr, col) {
    const td = tr.cells[col];
    if (!td) return "";
    return td.dataset.sort !== undefined ? td.dataset.sort : td.textContent.trim();
  }
  function applySort(table) {
    if (!table || !table.tHead) return;
    const st = sorts.get(tableKey(table));
    for (const [i, th] of [...table.tHead.rows[0].cells].entries()) {
      if (!th.textContent.trim()) continue;
      th.tabIndex = 0;
      th.classList.add("sortable");
      th.setAttribute("aria-sort", st && st.col === i ? (st.dir > 0 ? "ascending" : "descending") : "none");
    }
    if (!st) return;
    const body = table.tBodies[0];
    const trs = [...body.rows];
    if (trs.length < 2 || trs.some((tr) => tr.cells.length === 1 && tr.cells[0].colSpan > 1)) return;
    const cmp = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
    trs.sort((a, b) => {
      const x = cellValue(a, st.col), y = cellValue(b, st.col);
      const nx = Number(x), ny = Number(y);
      const r = x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny) ? nx - ny : cmp.compare(x, y);
      return r * st.dir;
    });
    body.append(...trs);
  }
  function sortBy(th) {
    const table = th.closest("table");
    if (!table || !th.classList.contains("sortable")) return;
    const key = tableKey(table), col = th.cellIndex;
    const st = sorts.get(key);
    sorts.set(key, { col, dir: st && st.col === col ? -st.dir : 1 });
    applySort(table);
  }
  document.addEventListener("click", (e) => {
    const th = e.target.closest && e.target.closest("thead th");
    if (th) sortBy(th);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    const th = e.target.closest && e.target.closest("thead th");
    if (th) { e.preventDefault(); sortBy(th); }
  });

  // Theme: the viewer's choice, kept in localStorage, over the system's
  // (prefers-color-scheme) when there is none.
  const THEME_KEY = "edgegw-theme";
  function effectiveTheme() {
    return document.documentElement.dataset.theme ||
      (window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  }
  function setTheme(t) {
    if (t) document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
    const b = $("theme");
    if (b) {
      const next = effectiveTheme() === "dark" ? "light" : "dark";
      b.textContent = next === "dark" ? "Dark theme" : "Light theme";
      b.setAttribute("aria-label", "Switch to the " + next + " theme");
    }
  }
  function storedTheme() {
    try { const t = localStorage.getItem(THEME_KEY); return t === "dark" || t === "light" ? t : ""; } catch (e) { return ""; }
  }
  setTheme(storedTheme());
  function row(...cells) { return el("tr", {}, ...cells.map((c) => (c instanceof Node && c.tagName === "TD") ? c : el("td", {}, c))); }
  // A tunnel is "up" (no health checks) or in its health state.
  function healthy(s) { return s === "up" || s === "healthy"; }
  function state(s, good) { return el("span", { class: "state " + (good ? "ok" : "bad") }, s); }

  function when(t) {
    if (!t || t.startsWith("0001-")) return "never";
    return new Date(t).toLocaleString();
  }
  function ago(t) {
    if (!t || t.startsWith("0001-")) return "never";
    const s = Math.max(0, Math.round((Date.now() - new Date(t)) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function duration(sec) {
    sec = Math.floor(sec);
    const d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    return (d ? d + " d " : "") + (d || h ? h + " h " : "") + (d || h || m ? m + " min " : "") + s + " s";
  }
  function plural(n, what) { return n + " " + what + (n === 1 ? "" : "s"); }
  function bytes(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    n = Number(n || 0);
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  // bytesCell is a table cell of bytes that sorts by the number, not
  // by its text ("2.0 KiB" after "10 B").
  function bytesCell(n) { return el("td", { "data-sort": String(Number(n || 0)) }, bytes(n)); }

  // api calls the admin API; a refusal throws an Error carrying the
  // answer's body (err.body) and status (err.status).
  async function api(method, path, json) {
    const opts = { method, credentials: "same-origin", headers: {} };
    if (method !== "GET") opts.headers["X-CSRF-Token"] = session.csrf;
    if (json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(json);
    }
    const r = await fetch(path, opts);
    if (r.status === 404 && path.startsWith("/api/v1/devices")) {
      throw new Error("this gateway has no device registry (no identity section in its configuration)");
    }
    if (r.status === 401) {
      location.assign("/console/login");
      throw new Error("The session ended: log in again.");
    }
    const text = await r.text();
    let body = null;
    try { body = JSON.parse(text); } catch (e) { body = null; }
    if (!r.ok) {
      const err = new Error((body && body.error && body.error.message) || (r.status + " " + r.statusText));
      err.body = body;
      err.status = r.status;
      throw err;
    }
    return { body, headers: r.headers };
  }
  function banner(msg) {
    $("banner").hidden = !msg;
    $("banner").textContent = msg || "";
  }

  // Overview and Tunnels both show the status; one poll feeds both.
  function renderOverview(s) {
    $("appliance").textContent = s.appliance || "";
    $("version").textContent = s.version || "unknown";
    $("uptime").textContent = duration(s.uptime_seconds || 0);
    $("started").textContent = when(s.started_at);
    $("devices-count").textContent = String(s.devices ?? 0);
    $("ready").replaceChildren(state(s.ready ? "ready" : "not ready", s.ready));
    $("not-ready").replaceChildren(...(s.not_ready || []).map((r) => el("li", {}, r)));
    const c = s.config || {};
    $("reload-at").textContent = when(c.last_reload);
    $("reload-result").replaceChildren(c.last_reload && !c.last_reload.startsWith("0001-")
      ? state(c.last_reload_successful ? "applied" : "refused", c.last_reload_successful) : "no reload since start");
    $("reload-error").textContent = c.last_reload_error || "";
    $("config-file").textContent = c.file || "";
    const subs = [];
    for (const t of s.tunnels || []) {
      let detail = "";
      if (t.wireguard) detail = plural((t.wireguard.peers || []).length, "peer") + ", port " + t.wireguard.listen_port;
      else if (t.site && t.site.health) detail = "health " + t.site.health.state;
      subs.push(["tunnel", t.name, t.state, healthy(t.state), detail, t.kind]);
    }
    if (s.access) subs.push(["access", s.access.listen, s.access.ready ? "ready" : "not ready", s.access.ready, s.access.error || ""]);
    if (s.dns) {
      for (const u of s.dns.upstreams || []) subs.push(["dns upstream", u.upstream, u.healthy ? "healthy" : "failing", u.healthy, u.last_error || ""]);
      subs.push(["dns", (s.dns.listening || []).join(" "), "serving", true, (s.dns.cache_entries || 0) + " cached answers"]);
    }
    for (const j of s.logpush || []) subs.push(["logpush", j.name, j.state, !j.error_message, j.error_message || (j.records_sent + " records sent")]);
    rows("subsystems", subs, (r) => row(r[0] + (r[5] ? " (" + r[5] + ")" : ""), r[1], el("td", {}, state(r[2], r[3])), r[4]), "no subsystems");
  }

  function renderTunnels(s) {
    const wg = (s.tunnels || []).filter((t) => t.wireguard);
    $("wireguard").replaceChildren(...wg.map((t) => {
      const peers = t.wireguard.peers || [];
      const online = peers.filter((p) => p.last_handshake && !p.last_handshake.startsWith("0001-") && Date.now() - new Date(p.last_handshake) < 180000);
      const table = el("table", { class: "wg-peers", "data-tunnel": t.name },
        el("thead", {}, row("Peer", "User", "Endpoint", "Allowed IPs", "Last handshake", "Rx", "Tx", "Online")), el("tbody"));
      rows(table.tBodies[0], peers, (p) => row(p.name || p.public_key.slice(0, 12) + "…", p.email || "", p.endpoint || "",
        (p.allowed_ips || []).join(", "), ago(p.last_handshake), bytesCell(p.rx_bytes), bytesCell(p.tx_bytes),
        el("td", {}, state(online.includes(p) ? "online" : "offline", online.includes(p)))), "no peers");
      return el("div", { class: "wg" },
        el("h3", {}, "WireGuard " + t.name + " (" + t.wireguard.interface + ", port " + t.wireguard.listen_port + "): " + online.length + " of " + plural(peers.length, "peer") + " online"),
        table);
    }));
    const site = (s.tunnels || []).filter((t) => t.site);
    rows("site-tunnels", site, (t) => {
      const h = t.site.health;
      return row(t.name, t.site.kind, el("td", {}, state(t.state, healthy(t.state))), t.site.local || "", t.site.remote || "",
        h ? el("td", {}, state(h.state, healthy(h.state))) : "checks off",
        h && h.last_rtt_ns ? (h.last_rtt_ns / 1e6).toFixed(2) + " ms" : "",
        h ? h.probes_sent + " / " + h.probes_failed : "", bytesCell(t.site.rx_bytes), bytesCell(t.site.tx_bytes));
    }, "no site tunnels");
    rows("routes", s.routes || [], (r) => row(r), "no site routes");
  }

  function renderDNS(s) {
    const d = s.dns;
    $("dns-off").hidden = !!d;
    $("dns-on").hidden = !d;
    if (!d) return;
    $("dns-listening").textContent = (d.listening || []).join(" ") || "none";
    $("dns-dot").textContent = (d.dot_listening || []).join(" ") || "off";
    $("dns-policies").textContent = String(d.policies || 0);
    $("dns-cache").textContent = plural(d.cache_entries || 0, "answer") + ", " + bytes(d.cache_bytes);
    rows("dns-upstreams", d.upstreams || [], (u) => row(u.upstream, el("td", {}, state(u.healthy ? "healthy" : "failing", u.healthy)),
      String(u.consecutive_failures || 0), u.last_error || ""), "no upstreams");
    rows("dns-lists", d.lists || [], (l) => row(l.name, l.file || "", String(l.entries || 0), when(l.loaded_at),
      el("td", { class: l.error ? "error" : "" }, l.error || "")), "no lists");
  }

  function renderLogpush(s) {
    rows("logpush-jobs", s.logpush || [], (j) => row(j.name, j.dataset, j.destination_conf,
      el("td", {}, state(j.state, j.state === "running" && !j.error_message)),
      String(j.records_sent || 0), j.last_complete ? ago(j.last_complete) : "never",
      (j.spooled_batches || 0) + (j.spooled_batches === 1 ? " batch, " : " batches, ") + bytes(j.spooled_bytes) + " of " + bytes(j.spool_limit),
      String(j.dropped || 0), el("td", { class: j.error_message ? "error" : "" }, j.error_message || "")), "no Logpush jobs");
  }

  // Firewall: the rules in order with their counters; each rule's rate
  // and sparkline come from the plots' history (/api/v1/series, sampled
  // every 10 s), the last hour.
  function sparkline(points, window) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", "120");
    svg.setAttribute("height", "20");
    svg.setAttribute("viewBox", "0 0 120 20");
    svg.setAttribute("role", "img");
    const now = Date.now() / 1000, t0 = now - window;
    const pts = points.filter((p) => p[1] !== null && p[0] >= t0);
    const max = Math.max(1, ...pts.map((p) => p[1]));
    svg.setAttribute("aria-label", "packets per second over the last hour, at most " + max.toFixed(1));
    svg.dataset.samples = String(pts.length);
    if (pts.length > 1) {
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", pts.map((p) => ((p[0] - t0) / window * 120).toFixed(1) + "," + (19 - p[1] / max * 18).toFixed(1)).join(" "));
      line.setAttribute("class", "spark");
      svg.append(line);
    } else if (pts.length === 1) { // one rate so far: a dot, not nothing
      const dot = document.createElementNS(ns, "circle");
      dot.setAttribute("cx", ((pts[0][0] - t0) / window * 120).toFixed(1));
      dot.setAttribute("cy", (19 - pts[0][1] / max * 18).toFixed(1));
      dot.setAttribute("r", "2");
      dot.setAttribute("class", "spark-dot");
      svg.append(dot);
    }
    return svg;
  }
  const fw = { hit: "" }; // the rule the last tested packet met
  async function loadFirewall() {
    let res, hist = null;
    try {
      [res, hist] = await Promise.all([api("GET", "/api/v1/firewall"),
        series(["firewall.packets_per_second:"], "1h").catch(() => null)]);
    } catch (e) {
      $("firewall-message").textContent = "Firewall: " + e.message;
      return;
    }
    $("firewall-message").textContent = hist ? "" : "The rules' history is not available: rates are not shown.";
    const rules = res.body.rules || [];
    rows("firewall-rules", rules, (r, i) => {
      const p = hist ? pts(hist.m, "firewall.packets_per_second:" + r.id) : [];
      let last = null;
      for (const q of p) if (q[1] !== null) last = q[1];
      const tr = row(String(i + 1), r.id, el("td", {}, state(r.action, r.action !== "block")), el("td", { class: "expr" }, r.expression),
        String(r.packets), el("td", { "data-sort": String(r.bytes) }, bytes(r.bytes)),
        el("td", { "data-sort": String(last ?? -1) }, last === null ? "" : last.toFixed(1)),
        el("td", {}, sparkline(p, hist ? hist.window : 3600)));
      tr.dataset.rule = r.id;
      if (r.id === fw.hit) tr.classList.add("hit");
      return tr;
    }, "no rules: the firewall forwards what the routes allow");
    rows("firewall-lists", res.body.lists || [], (l) => row(l.name, String(l.entries)), "no lists");
  }
  // testPacket asks which rule a packet meets: the evaluator of
  // `edgegw firewall test`, on the running rules. Viewers may ask.
  async function testPacket(e) {
    e.preventDefault();
    const packet = $("fw-packet").value.trim();
    $("fw-test-error").textContent = "";
    $("fw-test-result").hidden = true;
    if (!packet) { $("fw-test-error").textContent = "Describe a packet, e.g. ip.src == 10.0.0.9 and tcp.dstport == 22."; return; }
    try {
      const { body } = await api("POST", "/api/v1/firewall/test", { packet });
      if (body.error) { $("fw-test-error").textContent = "Packet: " + body.error; return; }
      $("fw-test-packet").textContent = body.packet;
      $("fw-test-rule").textContent = body.rule
        ? body.rule.id + " (rule " + body.rule.position + (body.rule.description ? ", " + body.rule.description : "") + ")"
        : "none matched (the default allows)";
      $("fw-test-verdict").replaceChildren(state(body.verdict + (body.rule && body.rule.rate ? " " + body.rule.rate : ""), body.verdict !== "block"));
      $("fw-test-result").hidden = false;
      fw.hit = body.rule ? body.rule.id : "";
      for (const tr of document.querySelectorAll("#firewall-rules tr[data-rule]")) tr.classList.toggle("hit", tr.dataset.rule === fw.hit);
    } catch (err) {
      $("fw-test-error").textContent = "Packet: " + err.message;
    }
  }

  // DNS: the most asked and most blocked names, and per user, over the
  // resolver's recent window (bounded counters in the resolver).
  const dnsView = { user: null };
  function countCell(n, err) {
    return el("td", { "data-sort": String(n) }, String(n) + (err ? " (±" + err + ")" : ""));
  }
  function userName(u) { return u === "" ? "(no identity)" : u; }
  async function loadDNSTop() {
    const p = new URLSearchParams({ n: 10 });
    if (dnsView.user !== null) p.set("user", dnsView.user === "" ? "-" : dnsView.user);
    let res;
    try {
      res = await api("GET", "/api/v1/dns/top?" + p);
    } catch (e) {
      $("dns-top-message").textContent = "Top names: " + e.message;
      return;
    }
    const t = res.body;
    $("dns-top-message").textContent = "";
    $("dns-top-window").textContent = "since " + when(t.since) + ": " + t.queries + (t.queries === 1 ? " query" : " queries") + ", " + t.blocked + " blocked";
    const entry = (e) => { const tr = row(e.name, countCell(e.count, e.error)); tr.dataset.name = e.name; return tr; };
    if (dnsView.user === null) {
      rows("dns-top-domains", t.domains || [], entry, "no queries yet");
      rows("dns-top-blocked", t.blocked_domains || [], entry, "nothing blocked");
      rows("dns-users", t.users || [], (u) => {
        const tr = row(el("td", {}, el("button", { type: "button", class: "link", "data-dns-user": u.user, onclick: () => { dnsView.user = u.user; loadDNSTop(); } }, userName(u.user))),
          countCell(u.queries), countCell(u.blocked), (u.domains || []).slice(0, 3).map((d) => d.name).join(", "));
        tr.dataset.user = u.user;
        return tr;
      }, "no queries yet");
    }
    $("dns-all").hidden = dnsView.user !== null;
    $("dns-user").hidden = dnsView.user === null;
    if (dnsView.user !== null) {
      const u = (t.users || [])[0] || { user: dnsView.user, queries: 0, blocked: 0, domains: [] };
      $("dns-user-name").textContent = userName(u.user);
      $("dns-user-queries").textContent = String(u.queries);
      $("dns-user-blocked").textContent = String(u.blocked);
      rows("dns-user-domains", u.domains || [], entry, "no queries in this window");
    }
  }

  // Config: the file as on disk (redacted), edited here, checked and
  // applied through the API; problems shown at their lines.
  const cfg = { loaded: false, confirm: "" };
  async function loadConfig() {
    let res;
    try {
      res = await api("GET", "/api/v1/config");
    } catch (e) {
      $("config-message").textContent = "Configuration: " + e.message;
      return;
    }
    $("config-message").textContent = "";
    $("config-source").textContent = res.body.file || "built-in default";
    $("config-yaml").textContent = res.body.yaml || "";
    $("config-editor").hidden = !res.body.editable;
    $("config-edit").readOnly = session.role !== "admin";
    if (!res.body.editable) return;
    if (!cfg.loaded) await loadSource();
    loadHistory();
  }
  async function loadSource() {
    try {
      const { body } = await api("GET", "/api/v1/config/source");
      $("config-path").textContent = body.file;
      $("config-edit").value = body.yaml;
      cfg.loaded = true;
    } catch (e) {
      $("config-message").textContent = "Configuration file: " + e.message;
    }
  }
  // showCheck shows a check's or an apply's answer: the problems at their
  // lines, and the diff.
  function showCheck(text, c) {
    const probs = c.problems || [];
    const byLine = new Map();
    for (const p of probs) {
      if (!p.line) continue;
      if (!byLine.has(p.line)) byLine.set(p.line, []);
      byLine.get(p.line).push(p);
    }
    $("config-problems").replaceChildren(...probs.map((p) => {
      const li = el("li", {}, (p.line ? "line " + p.line + ", column " + p.column + ": " : "") + (p.field ? p.field + ": " : "") + p.message);
      if (p.line) li.dataset.line = String(p.line);
      return li;
    }));
    const ann = $("config-annotated");
    ann.hidden = byLine.size === 0;
    ann.replaceChildren();
    if (byLine.size) {
      const lines = text.split("\n");
      const kids = [];
      lines.forEach((t, i) => {
        const n = i + 1;
        // Only the lines around a problem: the whole file is above.
        let near = false;
        for (const l of byLine.keys()) if (Math.abs(l - n) <= 2) near = true;
        if (!near) return;
        const d = el("div", { class: "l" + (byLine.has(n) ? " bad" : "") }, el("span", { class: "n" }, String(n)), el("span", {}, t));
        d.dataset.line = String(n);
        kids.push(d);
        for (const p of byLine.get(n) || []) {
          kids.push(el("div", { class: "msg" }, " ".repeat(Math.max(0, p.column - 1)) + "^ " + (p.field ? p.field + ": " : "") + p.message));
        }
      });
      ann.replaceChildren(...kids);
      // Put the cursor on the first problem.
      const first = Math.min(...byLine.keys());
      const ta = $("config-edit");
      const at = text.split("\n").slice(0, first - 1).join("\n").length + (first > 1 ? 1 : 0);
      ta.setSelectionRange(at, at);
    }
    const diff = c.diff || [];
    $("config-diff").replaceChildren(...(c.changed ? diff.map((d) => {
      if (d.op === "…") return el("div", { class: "l gap" }, el("span", { class: "n" }, "…"), el("span", {}, ""));
      const cls = d.op === "+" ? "add" : d.op === "-" ? "del" : "";
      return el("div", { class: "l " + cls }, el("span", { class: "n" }, String(d.op === "-" ? d.old : d.new)), el("span", {}, d.op + " " + d.text));
    }) : [el("span", { class: "muted" }, "No change against the running file.")]));
  }
  async function configCall(path, what) {
    const text = $("config-edit").value;
    $("config-result").textContent = what + "…";
    try {
      const { body } = await api("POST", path, { yaml: text });
      showCheck(text, body);
      return body;
    } catch (e) {
      if (e.body && e.body.problems) {
        showCheck(text, e.body);
        $("config-result").textContent = e.body.error
          ? "Refused by the reload; the previous configuration keeps running: " + e.body.error
          : "Refused: " + plural(e.body.problems.length, "problem") + "; nothing changed.";
        $("config-result").className = "error";
      } else {
        $("config-result").textContent = what + ": " + e.message;
        $("config-result").className = "error";
      }
      return null;
    }
  }
  async function checkConfig() {
    const c = await configCall("/api/v1/config/check", "Checking");
    if (!c) return;
    $("config-result").className = c.valid ? "" : "error";
    $("config-result").textContent = c.valid
      ? (c.changed ? "Valid. Apply it to make it run." : "Valid, and the same as the running file.")
      : plural(c.problems.length, "problem") + ": the file would be refused.";
  }
  function applied(c) {
    $("config-result").className = "";
    $("config-result").textContent = "Applied at " + new Date().toLocaleTimeString() +
      (c.history ? " (history #" + c.history.id + ")" : "") + ".";
    cfg.loaded = false;
    loadConfig();
  }
  // applyConfig checks first (a refusal is shown, not sent to the
  // reload); the server checks again, under the reload lock.
  async function applyConfig() {
    const chk = await configCall("/api/v1/config/check", "Checking");
    if (!chk) return;
    if (!chk.valid) {
      $("config-result").className = "error";
      $("config-result").textContent = "Not applied: " + plural(chk.problems.length, "problem") + "; nothing changed.";
      return;
    }
    const c = await configCall("/api/v1/config/apply", "Applying");
    if (c) applied(c);
  }
  async function loadHistory() {
    let res;
    try {
      res = await api("GET", "/api/v1/config/history");
    } catch (e) {
      $("config-message").textContent = "History: " + e.message;
      return;
    }
    const admin = session.role === "admin";
    rows("config-history", res.body || [], (h) => {
      let what = h.action === "base" ? "the file that ran before the first change seen here" : h.action === "rollback" ? "rollback to #" + h.from : h.action === "reload" ? "edited on disk, reloaded" : "applied";
      let act = "";
      if (admin) {
        act = cfg.confirm === h.id
          ? el("span", { class: "confirm" }, "Roll back to #" + h.id + "? ",
            el("button", { class: "danger", "data-confirm-rollback": h.id, onclick: () => rollback(h) }, "Roll back"), " ",
            el("button", { onclick: () => { cfg.confirm = ""; loadHistory(); } }, "Cancel"))
          : el("button", { "data-rollback": h.id, onclick: () => { cfg.confirm = h.id; loadHistory(); } }, "Roll back…");
      }
      const tr = row("#" + h.id + " " + when(h.when), h.actor || "", what, el("td", { class: "expr" }, h.sha256.slice(0, 12)), bytesCell(h.bytes), el("td", {}, act));
      tr.dataset.history = h.id;
      return tr;
    }, "nothing applied here yet");
  }
  async function rollback(h) {
    cfg.confirm = "";
    $("config-result").textContent = "Rolling back to #" + h.id + "…";
    try {
      const { body } = await api("POST", "/api/v1/config/history/" + encodeURIComponent(h.id) + "/rollback");
      showCheck("", body);
      applied(body);
    } catch (e) {
      $("config-result").className = "error";
      $("config-result").textContent = "Roll back to #" + h.id + ": " + ((e.body && e.body.error) || (e.body && e.body.problems && e.body.problems.length && e.body.problems[0].message) || e.message);
      loadHistory();
    }
  }

  async function loadAudit() {
    let res;
    try {
      res = await api("GET", "/api/v1/audit?limit=200");
    } catch (e) {
      banner("Audit: " + e.message);
      return;
    }
    rows("audit", res.body || [], (a) => {
      const tr = row(when(a.when), a.actor.id + (a.actor.role ? " (" + a.actor.role + ")" : ""),
        a.actor.interface + (a.actor.ip ? " from " + a.actor.ip : ""), a.action,
        a.resource_type + (a.resource_id ? " " + a.resource_id : ""),
        el("td", {}, state(a.result ? "success" : "failure", a.result)), a.description + (a.error ? ": " + a.error : ""));
      tr.dataset.audit = a.id;
      return tr;
    }, "no audited actions since start");
  }


  // Plots: server-side history (/api/v1/series) drawn as SVG here, with
  // units on the y axis and times in the viewer's zone on the x axis.
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function unitText(v, unit) {
    if (unit === "bit/s") {
      const u = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
      let i = 0;
      while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
      return (v >= 100 || v === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + u[i];
    }
    return (v >= 100 || v === 0 ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2)) + " " + unit;
  }
  function clock(t, span) {
    const d = new Date(t * 1000);
    if (span > 2 * 86400) return d.toLocaleDateString([], { weekday: "short" }) + " " + d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  // chart draws lines [{label, points: [[t, v|null]]}] over window
  // seconds up to now; a gap in the data is a gap in the line.
  function chart(title, unit, lines, window) {
    const W = 560, H = 170, L = 72, R = 8, T = 18, B = 22;
    const now = Date.now() / 1000, t0 = now - window;
    let max = 0;
    for (const l of lines) for (const p of l.points) if (p[1] !== null) max = Math.max(max, p[1]);
    max = max > 0 ? max * 1.1 : 1;
    if (unit === "%") max = Math.min(max, 100); // a share never passes 100 %
    const x = (t) => L + (t - t0) / window * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const g = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img", "aria-label": title + ", in " + unit });
    for (const f of [0, 0.5, 1]) {
      g.append(svg("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), class: "axis" }));
      g.append(svg("text", { x: L - 4, y: y(max * f) + 4, "text-anchor": "end" }, unitText(max * f, unit)));
    }
    for (const f of [0, 0.5, 1]) {
      g.append(svg("text", { x: L + f * (W - L - R), y: H - 6, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" }, clock(t0 + f * window, window)));
    }
    let samples = 0;
    lines.forEach((l, i) => {
      let seg = [];
      const flush = () => {
        if (seg.length === 1) g.append(svg("circle", { cx: seg[0][0], cy: seg[0][1], r: 1.5, class: "s" + i }));
        if (seg.length > 1) g.append(svg("polyline", { points: seg.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "), class: "line s" + i }));
        seg = [];
      };
      for (const p of l.points) {
        if (p[1] === null || p[0] < t0) { flush(); continue; }
        seg.push([x(p[0]), y(p[1])]);
        samples++;
      }
      flush();
      g.append(svg("text", { x: L + 6 + i * 120, y: 12, class: "legend s" + i }, "● " + l.label));
    });
    const fig = el("figure", { class: "chart" }, el("figcaption", {}, title), g);
    fig.dataset.samples = String(samples);
    fig.dataset.title = title;
    return fig;
  }
  async function series(names, window) {
    const { body } = await api("GET", "/api/v1/series?name=" + encodeURIComponent(names.join(",")) + "&window=" + window);
    const m = new Map();
    for (const s of body.series || []) m.set(s.name, s);
    return { m, window: body.window };
  }
  // pts is a series' points, [t, v|null], from its start, step and values.
  function pts(m, name) {
    const s = m.get(name);
    return s ? s.values.map((v, i) => [s.start + i * s.step, v]) : [];
  }
  async function loadOverviewCharts() {
    try {
      const { m, window } = await series(["throughput."], "1h");
      $("chart-throughput").replaceChildren(chart("Throughput in and out", "bit/s",
        [{ label: "in", points: pts(m, "throughput.in_bps") }, { label: "out", points: pts(m, "throughput.out_bps") }], window));
    } catch (e) {
      $("chart-throughput").textContent = "Throughput: " + e.message;
    }
  }
  async function loadTunnelCharts() {
    try {
      const { m, window } = await series(["tunnel."], $("tunnel-window").value);
      const names = new Set();
      for (const k of m.keys()) names.add(k.slice(k.indexOf(":") + 1));
      const figs = [];
      for (const n of [...names].sort()) {
        const rtt = chart(n + ": round trip", "ms", [{ label: "RTT", points: pts(m, "tunnel.rtt_ms:" + n) }], window);
        rtt.dataset.tunnel = n;
        const loss = chart(n + ": probe loss", "%", [{ label: "loss", points: pts(m, "tunnel.loss_percent:" + n) }], window);
        loss.dataset.tunnel = n;
        figs.push(rtt, loss);
      }
      $("tunnel-charts").replaceChildren(...(figs.length ? figs : [el("p", { class: "muted" }, "No tunnel health checks yet.")]));
    } catch (e) {
      $("tunnel-charts").textContent = "Tunnel quality: " + e.message;
    }
  }
  async function loadDNSCharts() {
    try {
      const { m, window } = await series(["dns."], "1h");
      $("dns-charts").replaceChildren(
        chart("Queries per second", "/s", [{ label: "queries", points: pts(m, "dns.queries_per_second") }], window),
        chart("Cache hit rate", "%", [{ label: "hits", points: pts(m, "dns.cache_hit_percent") }], window));
    } catch (e) {
      $("dns-charts").textContent = "DNS history: " + e.message;
    }
  }

  // Flows: the top talkers, ports and protocols from the flow analytics
  // store over the chosen range, with the total as a series.
  const PROTOCOLS = { 1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 58: "ICMPv6", 132: "SCTP" };
  async function loadFlows() {
    const span = Number($("flows-window").value);
    const from = Math.floor(Date.now() / 1000) - span;
    const q = (extra) => api("GET", "/api/v1/flows?from=" + from + "&" + extra);
    let talkers, ports, protos, total;
    try {
      [talkers, ports, protos, total] = await Promise.all([
        q("group_by=src&top=10"), q("group_by=dst_port&top=10"), q("group_by=protocol&top=10"),
        q("step=" + (span > 3600 ? "10m" : "1m"))]);
    } catch (e) {
      $("flows-message").textContent = e.status === 404
        ? "Flow analytics is not running: configure netflow.analytics."
        : "Flows: " + e.message;
      return;
    }
    $("flows-message").textContent = "";
    const render = (id, res, key) => rows(id, res.body.groups || [], (g) => {
      const tr = row(key(g.key || {}), el("td", { "data-sort": String(g.bits_per_second) }, unitText(g.bits_per_second, "bit/s")), g.packets_per_second.toFixed(2), bytesCell(g.bytes));
      tr.dataset.key = key(g.key || {});
      return tr;
    }, "no flows in this range");
    render("flows-talkers", talkers, (k) => k.src || "");
    render("flows-ports", ports, (k) => String(k.dst_port ?? ""));
    render("flows-protocols", protos, (k) => PROTOCOLS[k.protocol] || String(k.protocol ?? ""));
    const g = (total.body.groups || [])[0];
    const points = g && g.series ? g.series.map((p) => [new Date(p.time) / 1000, p.bits_per_second]) : [];
    $("chart-flows").replaceChildren(chart("Sampled traffic", "bit/s", [{ label: "all flows", points }], span));
  }

  // render shows one status on every page that reads it.
  function render(body) {
    lastStatus = body;
    renderOverview(body);
    renderTunnels(body);
    renderDNS(body);
    renderLogpush(body);
    banner("");
    const u = $("updated");
    u.dateTime = new Date().toISOString();
    u.textContent = new Date().toLocaleTimeString();
    u.dataset.polls = String(Number(u.dataset.polls) + 1);
  }

  async function pollStatus() {
    try {
      const { body } = await api("GET", "/api/v1/status");
      render(body);
    } catch (e) {
      banner("Status: " + e.message);
    }
  }

  // live follows the status as server-sent events. The server checks the
  // session before every event and ends the stream when it ended; the
  // browser then reconnects, is refused, and the page goes to the login.
  function live() {
    const es = new EventSource("/api/v1/status/events");
    es.addEventListener("status", (ev) => {
      try { render(JSON.parse(ev.data)); } catch (e) { banner("Status: " + e.message); }
    });
    es.onerror = async () => {
      if (es.readyState !== EventSource.CLOSED) return; // reconnecting by itself
      const r = await fetch("/console/session", { credentials: "same-origin" });
      if (r.status === 401) { location.assign("/console/login"); return; }
      banner("Status: the live stream stopped; reconnecting.");
      setTimeout(live, POLL_MS);
    };
  }

  async function loadDevices() {
    const p = new URLSearchParams({ limit: PAGE, offset: dev.offset });
    if (dev.q) p.set("q", dev.q);
    if (dev.status) p.set("status", dev.status);
    let res;
    try {
      res = await api("GET", "/api/v1/devices?" + p);
    } catch (e) {
      $("device-message").textContent = "Devices: " + e.message;
      return;
    }
    dev.total = Number(res.headers.get("X-Total-Count") || 0);
    const list = res.body || [];
    $("device-range").textContent = list.length ? (dev.offset + 1) + "–" + (dev.offset + list.length) + " of " + dev.total : "0 of " + dev.total;
    $("device-prev").disabled = dev.offset === 0;
    $("device-next").disabled = dev.offset + list.length >= dev.total;
    const admin = session.role === "admin";
    // postureText sums up a device's posture report for its status cell's
    // tooltip: what firewall, DNS and Access posture rules see of it.
    const postureText = (p) => {
      if (!p) return "no current posture report";
      const yn = (v, yes, no) => v === "true" ? yes : v === "false" ? no : yes + " unknown";
      return [(p.os || "OS unknown") + (p.os_version ? " " + p.os_version : ""),
        yn(p.disk_encrypted, "disk encrypted", "disk not encrypted"), yn(p.firewall, "firewall on", "firewall off"),
        p.client_version ? "client " + p.client_version : "client version unknown",
        p.compliant === "true" ? "compliant" : p.compliant === "false" ? "not compliant" : "no posture rules"].join(", ");
    };
    rows("devices", list, (d) => {
      let action = "";
      if (admin && d.status !== "revoked") {
        action = dev.confirm === d.id
          ? el("span", { class: "confirm" }, "Revoke " + d.name + "? ",
            el("button", { class: "danger", "data-confirm": d.id, onclick: () => revoke(d) }, "Revoke"), " ",
            el("button", { onclick: () => { dev.confirm = ""; loadDevices(); } }, "Cancel"))
          : el("button", { "data-revoke": d.id, onclick: () => { dev.confirm = d.id; loadDevices(); } }, "Revoke…");
      }
      const tr = row(d.name, d.email, (d.groups || []).join(", "), d.address, el("td", { "data-sort": d.last_seen || "" }, ago(d.last_seen)),
        el("td", { title: postureText(d.posture) }, d.quarantined && d.status === "active" ? state("quarantined", false) : state(d.status, d.status === "active")), el("td", {}, action));
      if (d.quarantined) tr.dataset.quarantined = "true";
      tr.dataset.device = d.id;
      return tr;
    }, "no devices match");
  }

  // enrollLink shows the enrollment page's link and its QR code (made by
  // the gateway) for a user to enroll a device with.
  async function enrollLink(e) {
    e.preventDefault();
    const user = $("enroll-user").value.trim();
    $("enroll-message").textContent = "";
    $("enroll-result").hidden = true;
    try {
      const { body } = await api("GET", "/api/v1/enroll/link" + (user ? "?user=" + encodeURIComponent(user) : ""));
      $("enroll-for").textContent = body.user || "the user";
      $("enroll-url").textContent = body.url;
      $("enroll-url").href = body.url;
      $("enroll-command").textContent = body.command;
      $("enroll-qr").src = body.qr;
      $("enroll-result").hidden = false;
    } catch (err) {
      $("enroll-message").textContent = "Enrollment link: " + err.message;
    }
  }

  async function revoke(d) {
    dev.confirm = "";
    try {
      await api("POST", "/api/v1/devices/" + encodeURIComponent(d.id) + "/revoke");
      $("device-message").textContent = "Revoked " + d.name + " (" + d.email + ").";
    } catch (e) {
      $("device-message").textContent = "Revoke " + d.name + ": " + e.message;
    }
    loadDevices();
  }

  function show() {
    const page = (location.hash || "#overview").slice(1);
    for (const p of ["overview", "tunnels", "devices", "firewall", "dns", "flows", "logpush", "config", "audit"]) {
      $("page-" + p).hidden = p !== page;
      $("nav-" + p).classList.toggle("active", p === page);
    }
    if (page === "devices") loadDevices();
    if (page === "audit") loadAudit();
    if (page === "firewall") loadFirewall();
    if (page === "dns" && lastStatus && lastStatus.dns) loadDNSTop();
    if (page === "config") loadConfig();
    if (page === "flows") loadFlows();
    charts(page);
  }
  // charts loads the page's plots (the history moves every 10 s).
  function charts(page) {
    if (page === "overview") loadOverviewCharts();
    if (page === "tunnels") loadTunnelCharts();
    if (page === "dns" && lastStatus && lastStatus.dns) loadDNSCharts();
  }

  async function start() {
    const r = await fetch("/console/session", { credentials: "same-origin" });
    if (!r.ok) { location.assign("/console/login"); return; }
    session = await r.json();
    $("who").textContent = session.name;
    $("role").textContent = session.role;
    $("logout-csrf").value = session.csrf;
    document.body.dataset.role = session.role;
    $("device-search").addEventListener("submit", (e) => {
      e.preventDefault();
      dev.q = $("device-q").value.trim();
      dev.status = $("device-status").value;
      dev.offset = 0;
      loadDevices();
    });
    $("tunnel-window").addEventListener("change", loadTunnelCharts);
    $("fw-test-form").addEventListener("submit", testPacket);
    $("enroll-form").addEventListener("submit", enrollLink);
    $("dns-user-close").addEventListener("click", () => { dnsView.user = null; loadDNSTop(); });
    $("theme").addEventListener("click", () => {
      const t = effectiveTheme() === "dark" ? "light" : "dark";
      try { localStorage.setItem(THEME_KEY, t); } catch (e) { /* private mode: this page only */ }
      setTheme(t);
    });
    setTheme(storedTheme());
    $("flows-window").addEventListener("change", loadFlows);
    $("config-check").addEventListener("click", checkConfig);
    $("config-apply").addEventListener("click", applyConfig);
    $("config-reset").addEventListener("click", async () => { cfg.loaded = false; await loadSource(); $("config-result").textContent = ""; });
    $("config-upload").addEventListener("change", async () => {
      const f = $("config-upload").files[0];
      if (f) { $("config-edit").value = await f.text(); $("config-result").textContent = "Loaded " + f.name + ": check it, then apply."; }
    });
    $("device-prev").addEventListener("click", () => { dev.offset = Math.max(0, dev.offset - PAGE); loadDevices(); });
    $("device-next").addEventListener("click", () => { dev.offset += PAGE; loadDevices(); });
    window.addEventListener("hashchange", show);
    show();
    if (window.EventSource) live();
    else { pollStatus(); setInterval(pollStatus, POLL_MS); }
    setInterval(() => {
      // The device list refreshes, unless a revoke is being confirmed.
      if (location.hash === "#devices" && !dev.confirm) loadDevices();
      if (location.hash === "#audit") loadAudit();
      if (location.hash === "#firewall") loadFirewall();
      if (location.hash === "#dns" && lastStatus && lastStatus.dns) loadDNSTop();
    }, POLL_MS);
    setInterval(() => {
      const page = (location.hash || "#overview").slice(1);
      charts(page);
      if (page === "flows") loadFlows();
    }, 10000);
  }
  // The helpers network.js (the Routing, Egress and HA views) builds on.
  window.edgegw = { el, rows, row, state, api, when, ago, duration, bytes, bytesCell, plural, status: () => lastStatus };
  start();
})();
