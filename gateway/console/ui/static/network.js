// edgegw console, network pages: Routing (the route table with each
// prefix's active path, and the BGP sessions), Egress (who leaves from
// which address) and the HA pair on the Overview. It runs after app.js
// and uses the helpers app.js exposes as window.edgegw. All data is
// inserted as text, never as HTML.
"use strict";
(() => {
  const g = window.edgegw;
  const { el, rows, row, state, api, when, ago, duration, bytesCell, plural } = g;
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;
  const PAGES = ["routing", "egress"];

  // Routing: GET /api/v1/routes, one row per route and source, the rows
  // each prefix uses now marked active.
  async function loadRoutes() {
    let res;
    try {
      res = await api("GET", "/api/v1/routes");
    } catch (e) {
      $("routing-message").textContent = e.status === 404
        ? "No site-to-site routing here (no GRE or IPsec tunnels configured)."
        : "Routes: " + e.message;
      return;
    }
    $("routing-message").textContent = "";
    const list = (res.body && res.body.routes) || [];
    rows("route-table", list, (r) => {
      let st = r.state || "";
      if (r.steering) st += (st ? ", " : "") + "steered " + r.steering;
      const tr = row(r.prefix, r.via || "unreachable", r.source, String(r.metric),
        r.weight ? String(r.weight) : "", st,
        // A standby row is no fault: it is the next path for its prefix.
        el("td", {}, r.active ? state("active", true) : el("span", { class: "muted" }, "standby")));
      tr.dataset.prefix = r.prefix;
      tr.dataset.source = r.source;
      tr.dataset.active = String(r.active);
      return tr;
    }, "no routes");
  }

  // renderBGP shows the status's bgp section: one row per neighbor.
  function renderBGP(s) {
    const b = s && s.bgp;
    $("bgp-off").hidden = !!b;
    $("bgp-on").hidden = !b;
    if (!b) return;
    $("bgp-speaker").textContent = "AS " + b.asn + (b.router_id ? ", router id " + b.router_id : "");
    rows("bgp-sessions", b.neighbors || [], (n) => {
      const up = n.state === "established";
      const since = n.since && !n.since.startsWith("0001-");
      const tr = row(n.name, n.address, String(n.remote_as), n.tunnel || "WAN",
        el("td", {}, state(n.shutdown ? n.state + " (held down: " + n.shutdown + ")" : n.state, up)),
        since ? (up ? duration((Date.now() - new Date(n.since)) / 1000) : "down since " + when(n.since)) : "",
        String(n.received), String(n.accepted), String(n.advertised), String(n.flaps));
      tr.dataset.neighbor = n.name;
      tr.dataset.state = n.state;
      return tr;
    }, "no neighbors configured");
  }

  // Egress: GET /api/v1/egress, each address with where it geolocates,
  // what chooses it and what it carries now; then each identity.
  async function loadEgress() {
    let res;
    try {
      res = await api("GET", "/api/v1/egress");
    } catch (e) {
      $("egress-message").textContent = e.status === 404
        ? "No egress addresses here (firewall.egress is not configured)."
        : "Egress: " + e.message;
      return;
    }
    const v = res.body || {};
    $("egress-message").textContent = v.flows_error ? "Connection tracking could not be read: " + v.flows_error : "";
    const feed = $("egress-geofeed");
    if (v.geofeed_path) {
      feed.replaceChildren("Geofeed (RFC 8805), served to anyone: ",
        el("a", { href: v.geofeed_path, id: "egress-geofeed-link", rel: "noopener" }, v.geofeed_path));
    } else {
      feed.replaceChildren(el("span", { class: "muted" }, "No geofeed published (firewall.egress.geofeed_path is not set)."));
    }
    rows("egress-addresses", v.addresses || [], (a) => {
      const where = [a.country, a.region, a.city].filter(Boolean).join(" ");
      const tr = row(a.name, a.address, a.interface, where, (a.policies || []).join(", "),
        (a.identities || []).join(", "), String(a.connections_total), String(a.active_connections),
        bytesCell(a.bytes_out), bytesCell(a.bytes_in));
      tr.dataset.egress = a.name;
      return tr;
    }, "no egress addresses");
    rows("egress-policies", v.policies || [], (p) => {
      const tr = row(p.id, el("td", { class: "expr" }, p.expression), p.egress, String(p.connections));
      tr.dataset.policy = p.id;
      return tr;
    }, "no egress policies");
    rows("egress-identities", v.identities || [], (i) => {
      const active = i.active || [];
      const sum = (k) => active.reduce((n, a) => n + (a[k] || 0), 0);
      const through = active.map((a) => a.egress_address + ": " + plural(a.active_connections, "connection")).join(", ");
      const tr = row(i.email, i.source, i.egress ? i.egress + " (" + i.egress_address + ")" : "WAN address (masquerade)",
        i.country || "", i.policy || "", through || "none", bytesCell(sum("bytes_out")), bytesCell(sum("bytes_in")));
      tr.dataset.identity = i.email;
      tr.dataset.egress = i.egress || "";
      return tr;
    }, "no identities");
  }

  // renderHA shows the status's ha section as a card on the Overview,
  // made here so the Overview's markup stays app.js's; no ha: no card.
  function renderHA(s) {
    let card = $("ha-card");
    const h = s && s.ha;
    if (!h) {
      if (card) card.remove();
      return;
    }
    if (!card) {
      card = el("div", { class: "card", id: "ha-card" });
      document.querySelector("#page-overview .cards").append(card);
    }
    const dl = el("dl", {});
    const add = (k, v, id) => dl.append(el("dt", {}, k), el("dd", id ? { id } : {}, v));
    add("Role", state(h.role, h.role === "master" || h.role === "backup"), "ha-role");
    add("Peer", h.peer || "", "ha-peer");
    add("Priority", String(h.priority));
    add("Since", when(h.since) + " (" + ago(h.since) + ")", "ha-since");
    add("Last transition", h.last_transition ? when(h.last_transition) : "none since start", "ha-last");
    add("Reason", h.reason || "", "ha-reason");
    let sb;
    if (h.split_brain) sb = state("split brain now: the peer answers for the virtual addresses", false);
    else if (h.yielded) sb = state("yielded after a split brain: waiting for the sync link", false);
    else sb = state("none", true);
    add("Split brain", sb, "ha-split-brain");
    add("Split brains", String(h.split_brains) + (h.last_split_brain ? ", last " + when(h.last_split_brain) : ""), "ha-split-brains");
    if (h.conntrack_sync_failures) add("Conntrack sync failures", String(h.conntrack_sync_failures));
    // Equal on both nodes when their files agree on what a pair must
    // share: compare it with the peer's console.
    if (h.config_digest) add("Pair config digest", h.config_digest.slice(0, 12), "ha-digest");
    card.replaceChildren(el("h3", {}, "High availability"), dl);
  }

  // renderACME shows access.acme's certificates as a card on the
  // Overview: each name, when it expires and how soon. A name without a
  // certificate yet, or within 14 days of expiry (certmagic renews 30
  // days ahead, so that means renewals are failing), shows as bad: the
  // listeners serve their configured certificate meanwhile.
  function renderACME(s) {
    let card = $("acme-card");
    const certs = s && s.access && s.access.acme;
    if (!certs || !certs.length) {
      if (card) card.remove();
      return;
    }
    if (!card) {
      card = el("div", { class: "card", id: "acme-card" });
      document.querySelector("#page-overview .cards").append(card);
    }
    const dl = el("dl", {});
    for (const c of certs) {
      let v;
      if (!c.expires) {
        v = state("no certificate yet: the configured one is served", false);
      } else {
        const days = Math.floor((Date.parse(c.expires) - Date.now()) / 86400000);
        v = state(when(c.expires) + " (" + plural(days, "day") + " left)", days >= 14);
      }
      const dd = el("dd", {}, v);
      dd.dataset.domain = c.domain;
      dl.append(el("dt", {}, c.domain), dd);
    }
    card.replaceChildren(el("h3", {}, "Certificates (ACME)"), dl);
  }

  // onStatus follows every status app.js shows: app.js counts them on
  // #updated (data-polls), so watching that needs no hook in app.js.
  function onStatus() {
    const s = g.status();
    if (!s) return;
    renderHA(s);
    renderACME(s);
    renderBGP(s);
  }

  function show() {
    const page = (location.hash || "#overview").slice(1);
    for (const p of PAGES) {
      $("page-" + p).hidden = p !== page;
      $("nav-" + p).classList.toggle("active", p === page);
    }
    if (page === "routing") loadRoutes();
    if (page === "egress") loadEgress();
  }

  new MutationObserver(onStatus).observe($("updated"), { attributes: true, attributeFilter: ["data-polls"] });
  window.addEventListener("hashchange", show);
  show();
  onStatus();
  setInterval(() => {
    if (document.hidden) return;
    if (location.hash === "#routing") loadRoutes();
    if (location.hash === "#egress") loadEgress();
  }, POLL_MS);
  // For a test to render a fixture status (the HA pair needs two nodes).
  g.network = { renderHA, renderACME, renderBGP };
})();
