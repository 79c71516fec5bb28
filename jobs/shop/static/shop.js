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
  class HttpError extends Error {
    constructor(url, response, body) {
      super(`${url}: HTTP ${response.status}`);
      this.status = response.status;
      this.body = body;
    }
  }
  async function fetchJSON(url, init = {}, timeoutMs = null) {
    // The page's one way to call a server: a timeout and JSON. Only a GET's 404 means
    // "absent" (null): the CDN's answer for a key it does not hold. Any other status
    // outside 2xx is an HttpError carrying the server's JSON body when it has one.
    const abort = new AbortController();
    const limit = timeoutMs ?? (config ? config.timeout_ms : 5000);
    const timer = setTimeout(() => abort.abort(), limit);
    try {
      const response = await fetch(url, { ...init, signal: abort.signal });
      if (response.status === 404 && (init.method || "GET") === "GET") return null;
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new HttpError(url, response, body);
      }
      return await response.json();
    } finally {
      clearTimeout(timer);
    }
  }
  function postJSON(url, body, timeoutMs = null, keepalive = false) {
    return fetchJSON(
      url,
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        keepalive,
      },
      timeoutMs,
    );
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
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE); // oldest go
    shop.eventsQueued = queue.length;
    return flush();
  }
  let flushing = null;
  let retryTimer = null;
  let retryMs = 1000;
  let inFlight = [];
  // Browsers refuse keepalive requests whose bodies in flight pass 64 KiB: a batch stays
  // well under it (and under the collector's own body limit, which a 413 halves).
  let maxBatchBytes = 48000;
  function flush() {
    // One flush at a time, so batches leave (and come back) in order; a send during a
    // flush is picked up by the same loop.
    if (!flushing) flushing = drain().finally(() => (flushing = null));
    return flushing;
  }
  function takeBatch() {
    // The oldest events, at most what one request may carry (count and bytes), taken out
    // of the queue while in flight: a trim of the queue meanwhile cannot touch them.
    const limit = Math.min(maxBatchBytes, config.collector_max_body_bytes - 2);
    let bytes = 2;
    let n = 0;
    while (n < queue.length && n < config.collector_max_events) {
      const size = JSON.stringify(queue[n]).length + 1;
      if (n > 0 && bytes + size > limit) break;
      bytes += size;
      n += 1;
    }
    return queue.splice(0, n);
  }
  function retryLater() {
    if (retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = null;
      flush();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  }
  async function drain() {
    while (queue.length) {
      const batch = takeBatch();
      inFlight = batch;
      try {
        // keepalive: a batch in flight survives the page being closed or left.
        await postJSON(`${config.collector}/events`, batch, config.collector_timeout_ms, true);
        shop.eventsSent += batch.length;
        retryMs = 1000;
      } catch (error) {
        const index = error instanceof HttpError && error.body ? error.body.index : null;
        if (
          error instanceof HttpError &&
          error.status === 422 &&
          Number.isInteger(index) &&
          index >= 0 &&
          index < batch.length
        ) {
          // All or nothing: the collector names the bad event (this page's bug). Only
          // that one is dropped; the rest go again at once.
          batch.splice(index, 1);
          queue.unshift(...batch);
          shop.eventsDropped = (shop.eventsDropped || 0) + 1;
          failed("collector", error);
          continue;
        }
        queue.unshift(...batch);
        failed("collector", error);
        if (error instanceof HttpError && error.status === 413 && maxBatchBytes > 1000) {
          maxBatchBytes = Math.floor(maxBatchBytes / 2); // smaller batches, at once
          continue;
        }
        // An outage (no answer, 5xx, 503 with Retry-After, an answer the page cannot
        // read): the events stay queued, oldest first, and go again later.
        if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
        retryLater();
        break;
      } finally {
        inFlight = [];
        shop.eventsQueued = queue.length;
        document.body.dataset.eventsSent = String(shop.eventsSent);
      }
    }
    saveQueue();
  }
  function saveQueue() {
    // A reload or a closed tab must not lose what an outage kept: the queue outlives
    // the page in sessionStorage and is sent by the next page of the session.
    try {
      // A batch in flight is saved too: a keepalive request may not arrive, and a copy
      // that does is absorbed (silver keeps one row per event_id).
      sessionStorage.setItem("recflow.queue", JSON.stringify([...inFlight, ...queue]));
    } catch (_) {
      // Storage full or disabled: the queue lives in memory only.
    }
  }
  function restoreQueue() {
    try {
      const saved = JSON.parse(sessionStorage.getItem("recflow.queue") || "[]");
      if (Array.isArray(saved)) queue.push(...saved.slice(-MAX_QUEUE));
    } catch (_) {
      // A damaged saved queue is dropped: its events cannot be trusted to be whole.
    }
  }

  // -- rendering ------------------------------------------------------------------------
  function priceText(price) {
    return typeof price === "number" ? `$${price.toFixed(2)}` : "";
  }
  function fill(li) {
    // A card's text from the catalog (item id only until the catalog has arrived).
    const card = cards[li.dataset.itemId] || {};
    const [title, category, price, stock] = li.children;
    title.textContent = card.title || li.dataset.itemId;
    category.textContent = card.category || "";
    price.textContent = priceText(card.price);
    stock.className = card.in_stock === false ? "stock out" : "stock";
    stock.textContent = card.in_stock === false ? "out of stock" : card.title ? "in stock" : "";
  }
  function cardOf(item, position, attribution) {
    const li = document.createElement("li");
    li.className = "card";
    li.tabIndex = 0;
    li.dataset.itemId = item.item_id;
    li.dataset.position = String(position);
    for (const name of ["title", "category", "price", "stock"]) {
      const part = document.createElement("span");
      part.className = name;
      li.append(part);
    }
    fill(li);
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
      shop.timings.firstRow = performance.now(); // from the navigation's start
      shop.timings.firstRowSource = attribution.label;
    }
    if (rowId === "personal" && attribution.rec_source === "service") {
      shop.timings.serviceRow ??= performance.now();
    }
    const { label: _unused, ...fields } = attribution;
    return send(
      items.map((item, i) => event("impression", item.item_id, { ...fields, position: i + 1 })),
    );
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
  function loadCatalog() {
    // The cards arrive on their own time: the row is drawn first with item ids and
    // filled in when (if) the catalog comes. It has a longer timeout than a list.
    if (!pointer.catalog) return Promise.resolve();
    return fetchJSON(cdnUrl(pointer.catalog), {}, config.catalog_timeout_ms)
      .then((body) => {
        if (!body || !body.items || typeof body.items !== "object" || Array.isArray(body.items)) {
          throw new Error("catalog.json missing or damaged");
        }
        cards = body.items;
        document.querySelectorAll(".card").forEach(fill);
        if (document.querySelector("#similar .seed").dataset.itemId) {
          const seed = document.querySelector("#similar .seed");
          seed.textContent = (cards[seed.dataset.itemId] || {}).title || seed.dataset.itemId;
        }
      })
      .catch((error) => failed("cdn", error)); // the cards keep their item ids
  }
  async function fromCdn() {
    // The user's list named by latest.json (404 or failing: popular.json).
    let list = null;
    if (config.user) {
      const key = config.user.key;
      try {
        list = await fetchJSON(
          cdnUrl(pointer.users.replace("{kk}", key.slice(0, 2)).replace("{key}", key)),
        );
      } catch (error) {
        failed("cdn", error); // slow or failing: popular.json rather than nothing
      }
    }
    const version = pointer.model ? `model v${pointer.model.version}` : "";
    if (list && Array.isArray(list.items)) {
      await render("personal", list.items, `from the CDN · ${version}`, cdnAttribution("cdn"),
        "Recommended for you");
    } else {
      const popular = await fetchJSON(cdnUrl(pointer.popular));
      if (!popular || !Array.isArray(popular.items)) throw new Error("popular.json missing");
      const why = config.user ? "no personal list yet" : "anonymous visitor";
      await render("personal", popular.items, `from the CDN · popular (${why}) · ${version}`,
        cdnAttribution("cdn:popular"), "Popular");
    }
  }
  let asked = 0; // the newest /recommend asked: an older answer arriving later is dropped
  async function fromService() {
    const request = { user_id: visitor, k: config.k };
    if (config.user) request.user_key = config.user.key;
    if (session.recent.length) request.recent_item_ids = session.recent;
    const mine = ++asked;
    const answer = await postJSON(`${config.service}/recommend`, request);
    if (!answer || !Array.isArray(answer.items) || !answer.items.length) {
      throw new Error("no answer"); // an empty list: the next source may have one
    }
    if (mine !== asked) return null;
    const label = `from the service · ${SERVICE_SOURCES[answer.source] || answer.source} · model v${answer.model_version}`;
    const heading = answer.source === "popular" ? "Popular" : "Recommended for you";
    return render("personal", answer.items, label, serviceAttribution(answer), heading);
  }
  let seeded = 0;
  async function similar(itemId) {
    const mine = ++seeded;
    try {
      const answer = await postJSON(`${config.service}/similar`, { item_id: itemId, k: config.k });
      if (mine !== seeded) return; // a later click asked since
      if (!answer || !Array.isArray(answer.items) || !answer.items.length) {
        document.getElementById("similar").hidden = true;
        return;
      }
      const seed = document.querySelector("#similar .seed");
      seed.dataset.itemId = itemId;
      seed.textContent = (cards[itemId] || {}).title || itemId;
      await render("similar", answer.items, `from the service · model v${answer.model_version}`,
        serviceAttribution(answer, "service:similar"));
    } catch (error) {
      if (mine !== seeded) return; // a later click's row is shown: leave it
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
    const sent = send([event("click", itemId, fields), event("view", itemId)]);
    session.recent = [itemId, ...session.recent.filter((i) => i !== itemId)].slice(0, MAX_RECENT);
    saveSession();
    return track(Promise.all([sent, refresh(), similar(itemId)]));
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
      saveQueue(); // the last shopper's unsent events still go, with the next page
      sessionStorage.removeItem("recflow.session"); // a new shopper, a new session
      location.assign(next);
    });
  }
  async function start() {
    try {
      config = await fetchJSON(`/config.json${location.search}`);
    } catch (error) {
      if (!(error instanceof HttpError && error.status === 400)) throw error;
      // A ?user= the backend refuses: the visitor is shown the shop as anyone is.
      console.warn(`recflow shop: ${error.message}; continuing as an anonymous visitor`);
      config = await fetchJSON("/config.json");
    }
    visitor = visitorId();
    signIn();
    restoreQueue(); // sent after the first row: what the last page could not send
    addEventListener("pagehide", saveQueue);
    let catalog = null;
    try {
      pointer = await fetchJSON(cdnUrl(config.latest));
      if (!pointer) throw new Error("nothing published yet");
      catalog = track(loadCatalog()); // in parallel with the row
    } catch (error) {
      failed("cdn", error); // no CDN at all (down, slow, nothing published)
      pointer = null;
    }
    // The row, from the first source that answers. A session with clicks asks the
    // service first: the CDN's list would be replaced a moment later, and impressions
    // of a list nobody had time to see would count against the CDN's click-through.
    const sources = [];
    if (session.recent.length) sources.push(["service", fromService]);
    if (pointer) sources.push(["cdn", fromCdn]);
    if (!session.recent.length) sources.push(["service", fromService]);
    let shown = false;
    for (const [kind, source] of sources) {
      try {
        await source();
        shown = true;
        break;
      } catch (error) {
        failed(kind, error);
      }
    }
    if (!shown) document.querySelector("#personal .empty").hidden = false;
    if (queue.length) track(flush());
    await catalog;
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
