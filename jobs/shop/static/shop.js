// recflow's storefront page: the client contract of the published JSON, from a browser.
//
// 1. /config.json (the shop's backend): where the CDN, the service and the collector are,
//    and the signed-in user's key (only a backend holding the publish secret can make it).
// 2. The CDN: recs/latest.json, then the user's object (users template, {kk} and {key}),
//    a 404 falls back to popular.json; the publish's catalog.json gives the cards.
// 3. A click: view and click events to the collector, then /recommend with the session's
//    items (the service answers session-aware, or by fold-in for an anonymous visitor)
//    and /similar for "Because you viewed". A service that fails or is slow changes
//    nothing the shopper sees: the list stays, the error is counted (/client-errors).
// 4. Every rendered row posts impressions with the attribution fields (rec_source,
//    publish_id or request_id, model_version, position), so its CTR can be measured.
//
// window.recflowShop exposes the page's state for the browser tests and the benchmark.
"use strict";

(() => {
  const shop = (window.recflowShop = {
    ready: false,
    busy: 0,
    errors: { cdn: 0, service: 0, similar: 0, collector: 0 },
    eventsSent: 0,
    eventsQueued: 0,
    timings: {},
    rows: {},
  });
  const SERVICE_SOURCES = {
    als: "personal",
    als_session: "session-aware",
    fold_in: "fold-in",
    popular: "popular",
  };
  const MAX_QUEUE = 500; // events kept for a collector that is down; the oldest go first
  const MAX_RECENT = 20; // the session's items sent to the service
  let config = null;
  let pointer = null;
  let cards = {};
  let visitor = null;
  const session = loadSession();
  const queue = [];

  // -- small helpers -----------------------------------------------------------------
  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function randomId(n = 16) {
    return hex(crypto.getRandomValues(new Uint8Array(n)));
  }
  function loadSession() {
    try {
      const saved = JSON.parse(sessionStorage.getItem("recflow.session") || "null");
      if (saved && typeof saved.id === "string" && Array.isArray(saved.recent)) return saved;
    } catch (_) {
      // A damaged or unavailable sessionStorage starts a new session: nothing is lost
      // but the previous clicks' context, which the service also has from Feast.
    }
    return { id: randomId(8), recent: [] };
  }
  function saveSession() {
    try {
      sessionStorage.setItem("recflow.session", JSON.stringify(session));
    } catch (_) {
      // Storage full or disabled (private mode): the session lives in memory only.
    }
  }
  function visitorId() {
    if (config.user) return config.user.id;
    try {
      let id = localStorage.getItem("recflow.visitor");
      if (!id) localStorage.setItem("recflow.visitor", (id = `anon-${randomId(8)}`));
      return id;
    } catch (_) {
      return `anon-${session.id}`; // no storage: one visitor per session
    }
  }
  function track(promise) {
    shop.busy += 1;
    document.body.dataset.busy = String(shop.busy);
    return promise.finally(() => {
      shop.busy -= 1;
      document.body.dataset.busy = String(shop.busy);
    });
  }
  async function fetchJSON(url, init = {}) {
    // The page's one way to call a server: a timeout, JSON, and a 404 told apart.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), config ? config.timeout_ms : 5000);
    try {
      const response = await fetch(url, { ...init, signal: abort.signal });
      if (response.status === 404) return null;
      if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
      return await response.json();
    } finally {
      clearTimeout(timer);
    }
  }
  function postJSON(url, body) {
    return fetchJSON(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  }
  function failed(kind, error) {
    // Counted, never shown to the shopper; the backend turns it into a metric.
    shop.errors[kind] = (shop.errors[kind] || 0) + 1;
    document.body.dataset[`errors${kind[0].toUpperCase()}${kind.slice(1)}`] = shop.errors[kind];
    console.info(`recflow shop: ${kind} failed (${error && error.name}); kept what is shown`);
    fetch("/client-errors", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ kind }),
      keepalive: true,
    }).catch(() => {
      // The shop's own backend is gone too: the count stays in shop.errors.
    });
  }
  const cdnUrl = (key) => `${config.cdn}/${key}`;

  // -- events to the collector ----------------------------------------------------------
  function event(type, itemId, extra = {}) {
    const body = {
      event_id: randomId(16),
      ts: new Date().toISOString(),
      user_id: visitor,
      item_id: itemId,
      event_type: type,
      session_id: session.id,
    };
    for (const [name, value] of Object.entries(extra)) {
      if (value !== undefined && value !== null && value !== "") body[name] = value;
    }
    return body;
  }
  function send(events) {
    queue.push(...events);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    shop.eventsQueued = queue.length;
    return flush();
  }
  async function flush() {
    if (!queue.length) return;
    const batch = queue.splice(0, queue.length);
    try {
      await postJSON(`${config.collector}/events`, batch);
      shop.eventsSent += batch.length;
    } catch (error) {
      // A 422 is this page's bug (the collector named the field); anything else is an
      // outage: the batch goes back to be sent with the next one.
      if (!(error instanceof Error && / HTTP 422$/.test(error.message))) {
        queue.unshift(...batch.slice(0, MAX_QUEUE - queue.length));
      }
      failed("collector", error);
    }
    shop.eventsQueued = queue.length;
    document.body.dataset.eventsSent = String(shop.eventsSent);
  }

  // -- rendering ------------------------------------------------------------------------
  function priceText(price) {
    return typeof price === "number" ? `$${price.toFixed(2)}` : "";
  }
  function cardOf(item, position, attribution) {
    const card = cards[item.item_id] || {};
    const li = document.createElement("li");
    li.className = "card";
    li.tabIndex = 0;
    li.dataset.itemId = item.item_id;
    li.dataset.position = String(position);
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = card.title || item.item_id;
    const category = document.createElement("span");
    category.className = "category";
    category.textContent = card.category || "";
    const price = document.createElement("span");
    price.className = "price";
    price.textContent = priceText(card.price);
    const stock = document.createElement("span");
    stock.className = card.in_stock === false ? "stock out" : "stock";
    stock.textContent = card.in_stock === false ? "out of stock" : card.title ? "in stock" : "";
    li.append(title, category, price, stock);
    const open = () => clicked(item.item_id, { ...attribution, position });
    li.addEventListener("click", open);
    li.addEventListener("keydown", (e) => {
      if (e.key === "Enter") open();
    });
    return li;
  }
  function render(rowId, list, label, attribution, heading) {
    // One row: its cards, the line saying who answered, and the row's impressions.
    const row = document.getElementById(rowId);
    const items = list.slice(0, config.k);
    if (heading) row.querySelector("h2").firstChild.textContent = heading;
    row.querySelector(".about").textContent = label;
    row.querySelector(".cards").replaceChildren(
      ...items.map((item, i) => cardOf(item, i + 1, attribution)),
    );
    const empty = row.querySelector(".empty");
    if (empty) empty.hidden = items.length > 0;
    row.hidden = false;
    row.dataset.source = attribution.label;
    row.dataset.modelVersion = attribution.model_version || "";
    row.dataset.items = items.map((i) => i.item_id).join(" ");
    shop.rows[rowId] = { source: attribution.label, items: items.map((i) => i.item_id) };
    if (rowId === "personal" && shop.timings.firstRow === undefined) {
      shop.timings.firstRow = performance.now();
      shop.timings.firstRowSource = attribution.label;
    }
    const { label: _unused, ...fields } = attribution;
    return send(items.map((item, i) => event("impression", item.item_id, { ...fields, position: i + 1 })));
  }
  function cdnAttribution(label) {
    return {
      label,
      rec_source: "cdn",
      publish_id: pointer.publish_id,
      model_version: pointer.model && pointer.model.version,
    };
  }
  function serviceAttribution(answer, label = `service:${answer.source}`) {
    return {
      label,
      rec_source: "service",
      request_id: answer.request_id,
      model_version: answer.model_version,
    };
  }

  // -- the rows -------------------------------------------------------------------------
  async function fromCdn() {
    // latest.json, then the user's list (404: popular.json) and the catalog in parallel.
    pointer = await fetchJSON(cdnUrl(config.latest));
    if (!pointer) throw new Error("nothing published yet");
    const personal = config.user
      ? fetchJSON(
          cdnUrl(
            pointer.users
              .replace("{kk}", config.user.key.slice(0, 2))
              .replace("{key}", config.user.key),
          ),
        )
      : Promise.resolve(null);
    const catalog = pointer.catalog
      ? fetchJSON(cdnUrl(pointer.catalog)).catch((error) => {
          failed("cdn", error); // cards show item ids
          return null;
        })
      : Promise.resolve(null);
    let [list, catalogBody] = await Promise.all([personal, catalog]);
    if (catalogBody && catalogBody.items) cards = catalogBody.items;
    const version = pointer.model ? `model v${pointer.model.version}` : "";
    if (list) {
      return render("personal", list.items, `from the CDN · ${version}`, cdnAttribution("cdn"),
        "Recommended for you");
    }
    const popular = await fetchJSON(cdnUrl(pointer.popular));
    if (!popular) throw new Error("popular.json missing");
    const why = config.user ? "no personal list yet" : "anonymous visitor";
    return render("personal", popular.items, `from the CDN · popular (${why}) · ${version}`,
      cdnAttribution("cdn:popular"), "Popular");
  }
  async function fromService() {
    const request = { user_id: visitor, k: config.k };
    if (config.user) request.user_key = config.user.key;
    if (session.recent.length) request.recent_item_ids = session.recent;
    const answer = await postJSON(`${config.service}/recommend`, request);
    if (!answer || !Array.isArray(answer.items)) throw new Error("no answer");
    const label = `from the service · ${SERVICE_SOURCES[answer.source] || answer.source} · model v${answer.model_version}`;
    const heading = answer.source === "popular" ? "Popular" : "Recommended for you";
    return render("personal", answer.items, label, serviceAttribution(answer), heading);
  }
  async function similar(itemId) {
    try {
      const answer = await postJSON(`${config.service}/similar`, { item_id: itemId, k: config.k });
      if (!answer || !Array.isArray(answer.items) || !answer.items.length) {
        document.getElementById("similar").hidden = true;
        return;
      }
      const seed = cards[itemId] && cards[itemId].title ? cards[itemId].title : itemId;
      document.querySelector("#similar .seed").textContent = seed;
      await render("similar", answer.items, `from the service · model v${answer.model_version}`,
        serviceAttribution(answer, "service:similar"));
    } catch (error) {
      document.getElementById("similar").hidden = true;
      failed("similar", error);
    }
  }
  async function refresh() {
    // The session has news: ask the service; on failure the row keeps what it shows.
    try {
      await fromService();
    } catch (error) {
      failed("service", error);
    }
  }
  function clicked(itemId, attribution) {
    const { label: _unused, ...fields } = attribution;
    send([event("click", itemId, fields), event("view", itemId)]);
    session.recent = [itemId, ...session.recent.filter((i) => i !== itemId)].slice(0, MAX_RECENT);
    saveSession();
    return track(Promise.all([refresh(), similar(itemId)]));
  }

  // -- start ----------------------------------------------------------------------------
  function signIn() {
    const select = document.getElementById("user");
    for (const id of config.demo_users) {
      const option = document.createElement("option");
      option.value = option.textContent = id;
      select.append(option);
    }
    if (config.user && !config.demo_users.includes(config.user.id)) {
      const option = document.createElement("option");
      option.value = option.textContent = config.user.id;
      select.append(option);
    }
    select.value = config.user ? config.user.id : "";
    select.addEventListener("change", () => {
      const next = new URL(location.href);
      if (select.value) next.searchParams.set("user", select.value);
      else next.searchParams.delete("user");
      sessionStorage.removeItem("recflow.session"); // a new shopper, a new session
      location.assign(next);
    });
  }
  async function start() {
    config = await fetchJSON(`/config.json${location.search}`);
    visitor = visitorId();
    signIn();
    try {
      await fromCdn();
    } catch (error) {
      // No CDN answer at all (down, slow, nothing published): the service answers alone.
      failed("cdn", error);
      try {
        await fromService();
      } catch (inner) {
        failed("service", inner);
        document.querySelector("#personal .empty").hidden = false;
      }
      return;
    }
    if (session.recent.length) await refresh(); // a reload keeps the session's context
  }
  track(
    start()
      .catch((error) => console.warn(`recflow shop: could not start (${error})`))
      .finally(() => {
        shop.ready = true;
        document.body.dataset.ready = "1";
      }),
  );
})();
