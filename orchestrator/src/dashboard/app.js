// slotpack's operator page: pools, tenants, a live event feed and a
// tenant's log that follows. Plain script, no framework, no build step.
//
// The token lives in this tab's sessionStorage only (never a cookie, never
// a query string) and leaves the page only as an Authorization header on
// fetch() calls to this origin. Tenant pages cannot read it: they are
// served on an origin of their own, or sandboxed on the path proxy.
'use strict';

(() => {
  const TOKEN_KEY = 'slotpack.token';
  const REFRESH_MS = 5000;
  const EVENT_REFRESH_DEBOUNCE_MS = 250;
  const EVENTS_POLL_MS = 3000;
  const LOG_POLL_MS = 2000;
  const MAX_EVENTS = 200;
  const EVENTS_BACKLOG = 50;
  const MAX_LOG_CHARS = 512 * 1024;
  const ACTIONS = ['restart', 'stop', 'start', 'delete'];

  const $ = (id) => document.getElementById(id);
  /**
   * Names split into runs of digits and of the rest, compared in natural
   * order: bot-2 before bot-10 (no Intl: cheap on a cold page).
   */
  function byParts(x, y) {
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      if (x[i] === y[i]) continue;
      const dx = x[i].charCodeAt(0) <= 57 && x[i].charCodeAt(0) >= 48;
      const dy = y[i].charCodeAt(0) <= 57 && y[i].charCodeAt(0) >= 48;
      if (dx && dy && Number(x[i]) !== Number(y[i])) return Number(x[i]) - Number(y[i]);
      return x[i] < y[i] ? -1 : 1;
    }
    return x.length - y.length;
  }

  /** Everything of one login; replaced whole on log-out. */
  const fresh = () => ({
    token: null,
    role: null, // 'admin' | 'owner' once /api/pool/status answered
    tenants: [],
    pools: null, // the last pool status (admin), null when not shown
    pending: new Set(), // tenants with an action in flight
    selected: null, // tenant whose log is shown
    lastEventId: null,
    seen: new Set(), // event seqs in the feed
    session: null, // AbortController of every request of this login
    log: null, // AbortController of the log being followed
    timer: null,
    debounce: null,
    refreshing: false,
    refreshQueued: false,
    loaded: false,
  });
  let st = fresh();

  // ---------------------------------------------------------------- API

  /** An answer that was not a success, with the API's code and message. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.code = code;
    }
  }

  const authHeaders = (extra) =>
    Object.assign({ Authorization: 'Bearer ' + st.token }, extra || {});

  /** fetch() with the token; cookies never go along. */
  async function request(method, path, opts) {
    const o = opts || {};
    try {
      return await fetch(path, {
        method,
        headers: authHeaders(o.headers),
        cache: 'no-store',
        credentials: 'omit',
        signal: o.signal || (st.session && st.session.signal),
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'unreachable', 'the orchestrator did not answer (' + e.message + ')');
    }
  }

  /** The JSON of a good answer; an ApiError from the error envelope otherwise. */
  async function readAnswer(res) {
    const text = await res.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (res.ok && !(body && body.success === false)) return body;
    const err = body && typeof body.error === 'object' && body.error ? body.error : {};
    const e = new ApiError(
      res.status,
      typeof err.code === 'string' ? err.code : 'http_' + res.status,
      typeof err.message === 'string' ? err.message : (text.slice(0, 300) || res.statusText || 'error'),
    );
    if (res.status === 401) refused(e);
    throw e;
  }

  async function api(method, path, opts) {
    return readAnswer(await request(method, path, opts));
  }

  const describe = (e) =>
    e instanceof ApiError ? (e.status ? e.status + ' ' : '') + e.code + ': ' + e.message : String(e && e.message || e);

  const aborted = (e) => e && e.name === 'AbortError';

  /** Wait `ms`, or less if `signal` aborts. */
  const sleep = (ms, signal) =>
    new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    });

  // ------------------------------------------------------- log in / out

  /** The token of a `#token=...` fragment, if the address has one. */
  function tokenInFragment() {
    const h = location.hash;
    if (!h || h.length < 2) return null;
    const t = new URLSearchParams(h.slice(1)).get('token');
    return t && t.trim() ? t.trim() : null;
  }

  /**
   * The fragment cleared from the address and this history entry (right
   * after the first request is on its way: it is not free either).
   */
  function clearFragment() {
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  }

  function boot() {
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('token').value.trim();
      $('token').value = '';
      if (t) logIn(t);
    });
    $('logout').addEventListener('click', () => logOut(''));
    $('error-close').addEventListener('click', hideError);
    $('filter').addEventListener('input', renderTenants);
    window.addEventListener('hashchange', () => {
      const t = tokenInFragment();
      clearFragment();
      if (t) { logOut(''); logIn(t); }
    });
    // Leaving the page ends its streams at once: a page kept in the
    // back/forward cache would otherwise hold its connections (a browser
    // has 6 per host) and its server-side stream slots.
    window.addEventListener('pagehide', () => {
      if (st.session) st.session.abort();
      if (st.log) st.log.abort();
      clearInterval(st.timer);
    });
    window.addEventListener('pageshow', (e) => {
      const saved = sessionStorage.getItem(TOKEN_KEY);
      if (e.persisted && saved) logIn(saved);
    });
    const t = tokenInFragment() || sessionStorage.getItem(TOKEN_KEY);
    if (t) logIn(t); else showLogin('');
    clearFragment();
  }

  function showLogin(message) {
    $('console').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message;
    $('whoami').textContent = '';
    document.body.dataset.view = 'login';
    $('token').focus();
  }

  function logIn(token) {
    st = fresh();
    st.token = token;
    st.session = new AbortController();
    $('login').hidden = true;
    $('console').hidden = false;
    $('logout').hidden = false;
    document.body.dataset.view = 'console';
    firstLoad(st.session.signal);
    // Saved once the first request is on its way (the first use of the
    // storage costs a few milliseconds).
    sessionStorage.setItem(TOKEN_KEY, token);
    st.timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }

  function logOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (st.session) st.session.abort();
    if (st.log) st.log.abort();
    clearInterval(st.timer);
    clearTimeout(st.debounce);
    st = fresh();
    $('tenant-rows').replaceChildren();
    $('pool-rows').replaceChildren();
    $('events').replaceChildren();
    $('log').textContent = '';
    $('log-tenant').textContent = '';
    $('log-status').textContent = '';
    $('tenants-summary').textContent = '';
    $('notice').textContent = '';
    $('pools-section').hidden = true;
    hideError();
    delete document.body.dataset.role;
    const d = $('confirm');
    if (d.open) d.close();
    showLogin(message);
  }

  /** A 401: the token is unknown or was revoked. */
  function refused(e) {
    if (!st.token) return;
    logOut('The orchestrator refused the token (' + e.message + '). Log in again.');
  }

  // -------------------------------------------------------------- loads

  async function firstLoad(signal) {
    const tenants = loadTenants(signal).then(() => {
      if (signal.aborted || !st.loaded) return;
      // Marked once the table is laid out and painted: a frame, then a task.
      requestAnimationFrame(() => setTimeout(() => {
        if (signal.aborted) return;
        performance.mark('slotpack:painted');
        document.body.dataset.rows = String($('tenant-rows').children.length);
        document.body.dataset.loadedMs = performance.now().toFixed(1);
      }, 0));
    });
    // The tenant table first and alone (one request); the pools (which
    // asks every agent) and the event feed right after it.
    await tenants;
    if (signal.aborted) return;
    await loadPools(signal);
    if (signal.aborted) return;
    followEvents(signal);
  }

  async function loadTenants(signal) {
    try {
      const t0 = performance.now();
      const body = await api('GET', '/api/tenants', { signal });
      if (signal.aborted) return;
      if (!st.loaded) {
        document.body.dataset.apiMs = (performance.now() - t0).toFixed(1);
        performance.mark('slotpack:tenants-answered');
      }
      st.tenants = Array.isArray(body && body.tenants) ? body.tenants.filter((t) => t && typeof t.id === 'string') : [];
      const first = !st.loaded;
      st.loaded = true;
      const r0 = performance.now();
      renderTenants();
      if (first) document.body.dataset.renderMs = (performance.now() - r0).toFixed(1);
      if (st.pools) renderPools();
      renderWho();
    } catch (e) {
      if (!aborted(e) && !signal.aborted) showError('tenants: ' + describe(e));
    }
  }

  async function loadPools(signal) {
    if (st.role === 'owner') return;
    try {
      const body = await api('GET', '/api/pool/status', { signal });
      if (signal.aborted) return;
      st.role = 'admin';
      st.pools = body || {};
      renderPools();
    } catch (e) {
      if (aborted(e) || signal.aborted) return;
      if (e.status === 403) {
        // An owner's token: the pools are the admin's business.
        st.role = 'owner';
        st.pools = null;
        $('pools-section').hidden = true;
      } else {
        $('pools-note').textContent = 'pool status: ' + describe(e);
      }
    }
    renderWho();
  }

  /** Tenants and pools again; never two at once, one more queued at most. */
  async function refresh() {
    if (!st.token || !st.session) return;
    if (st.refreshing) { st.refreshQueued = true; return; }
    st.refreshing = true;
    const signal = st.session.signal;
    try {
      await Promise.all([loadTenants(signal), loadPools(signal)]);
    } finally {
      if (!signal.aborted) {
        st.refreshing = false;
        if (st.refreshQueued) { st.refreshQueued = false; refresh(); }
      }
    }
  }

  function refreshSoon() {
    clearTimeout(st.debounce);
    st.debounce = setTimeout(refresh, EVENT_REFRESH_DEBOUNCE_MS);
  }

  // ------------------------------------------------------------- render

  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('data-')) e.setAttribute(k, v);
        else e[k] = v;
      }
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  };

  const str = (v, dflt) => (typeof v === 'string' && v ? v : (typeof v === 'number' ? String(v) : dflt));
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

  function fmtBytes(b) {
    if (num(b) === null) return '—';
    if (b < 1024) return b + ' B';
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = b / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
  }

  const fmtMb = (mb) => (num(mb) === null ? '—' : fmtBytes(mb * 1024 * 1024));
  const fmtMillis = (m) => (num(m) === null ? '—' : m + 'm');
  const fmtPercent = (p) => (p < 10 ? p.toFixed(1) : p.toFixed(0)) + '%';

  function fmtAge(since) {
    const t = Date.parse(since);
    if (Number.isNaN(t)) return '—';
    let s = Math.max(0, Math.floor((Date.now() - t) / 1000));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + s + 's';
    return s + 's';
  }

  const stateClass = (s) => {
    switch (s) {
      case 'running': return 'ok';
      case 'starting': case 'stopping': case 'backoff': case 'cooldown': return 'warn';
      case 'stopped': return 'idle';
      default: return 'bad';
    }
  };

  /**
   * The empty row every tenant's row is cloned from (a native deep clone
   * and a few text writes per row: cheap for a cold script, where building
   * each element anew is not).
   */
  let skeleton = null;
  const CELLS = ['id', 'state', 'healthy', 'restarts', 'placement', 'port', 'uptime',
    'cpu', 'memory', 'disk', 'level', 'message', 'actions'];
  const CELL_CLASS = { restarts: 'num', port: 'num', uptime: 'num', placement: 'mono',
    cpu: 'use', memory: 'use', disk: 'use', message: 'message', actions: 'actions' };

  function rowSkeleton() {
    if (skeleton) return skeleton;
    const tr = el('div', { role: 'row', class: 'trow' });
    for (const f of CELLS) {
      const c = el('div', { role: 'cell', 'data-field': f, class: CELL_CLASS[f] });
      if (f === 'id') c.append(el('span', { class: 'mono' }), el('span', { class: 'owner' }));
      else if (f === 'state') c.append(el('span', { class: 'badge' }), el('span', { class: 'muted small' }));
      else if (f === 'healthy' || f === 'level') c.append(el('span', { class: 'badge' }));
      else if (CELL_CLASS[f] === 'use') c.append(el('span'), el('span', { class: 'meter' }, el('span', { class: 'fill' })));
      else if (f === 'actions') {
        const b = el('span', { class: 'buttons' },
          el('button', { type: 'button', 'data-action': 'logs', text: 'log', title: 'follow its log' }));
        for (const a of ACTIONS) b.append(el('button', { type: 'button', 'data-action': a, class: a === 'delete' ? 'danger' : '', text: a }));
        c.append(b);
      }
      tr.append(c);
    }
    skeleton = tr;
    return tr;
  }

  /** Fill a use cell: value, percent of the limit and a bar. */
  function fillUse(cell, use, value, limit) {
    const text = cell.firstChild;
    const meter = cell.lastChild;
    if (!use || typeof use !== 'object') {
      text.textContent = '—';
      cell.title = 'not measured yet';
      meter.remove();
      return;
    }
    const p = num(use.percent);
    if (p === null) {
      text.textContent = value;
      cell.title = value + ' (no limit set)';
      meter.remove();
      return;
    }
    text.textContent = value + ' · ' + fmtPercent(p);
    cell.title = value + ' of ' + limit;
    const fill = meter.firstChild;
    fill.className = 'fill ' + (p >= 95 ? 'bad' : p >= 80 ? 'warn' : 'ok');
    fill.style.width = Math.min(100, Math.max(0, p)).toFixed(1) + '%';
  }

  function tenantRow(t) {
    const res = t.resources && typeof t.resources === 'object' ? t.resources : {};
    const pl = t.placement && typeof t.placement === 'object' ? t.placement : {};
    const u = t.usage && typeof t.usage === 'object' ? t.usage : null;
    const state = str(t.state, 'unknown');
    const desired = str(t.desired, '');
    const level = u && typeof u.level === 'string' ? u.level : null;
    const busy = st.pending.has(t.id);
    const tr = rowSkeleton().cloneNode(true);
    tr.setAttribute('data-tenant', t.id);
    tr.setAttribute('data-state', state);
    tr.setAttribute('data-desired', desired);
    tr.setAttribute('data-healthy', String(t.healthy === true));
    if (level) tr.setAttribute('data-level', level);
    if (t.id === st.selected) tr.classList.add('selected');
    if (busy) tr.classList.add('busy');
    // Cells by walking siblings (cheap on a cold page, unlike iterators).
    const id = tr.firstChild;
    const stateCell = id.nextSibling;
    const health = stateCell.nextSibling;
    const restarts = health.nextSibling;
    const place = restarts.nextSibling;
    const port = place.nextSibling;
    const uptime = port.nextSibling;
    const cpu = uptime.nextSibling;
    const mem = cpu.nextSibling;
    const disk = mem.nextSibling;
    const lv = disk.nextSibling;
    const message = lv.nextSibling;
    const actions = message.nextSibling;

    id.firstChild.textContent = t.id;
    if (typeof t.owner === 'string' && t.owner) id.lastChild.textContent = t.owner;
    else id.lastChild.remove();

    stateCell.firstChild.textContent = state;
    stateCell.firstChild.className = 'badge ' + stateClass(state);
    if (desired && desired !== state && !(desired === 'running' && state === 'starting')) {
      stateCell.lastChild.textContent = ' → ' + desired;
    } else {
      stateCell.lastChild.remove();
    }

    const ok = t.healthy === true;
    health.firstChild.textContent = ok ? 'healthy' : 'unhealthy';
    health.firstChild.className = 'badge ' + (ok ? 'ok' : (desired === 'stopped' ? 'idle' : 'bad'));
    restarts.textContent = str(num(t.restarts), '—');
    place.textContent = pl.poolId !== undefined ? str(pl.poolId, '?') + ' / ' + str(num(pl.slot), '?') : '—';
    port.textContent = str(num(pl.port), '—');
    uptime.textContent = typeof t.startedAt === 'string' && state === 'running' ? fmtAge(t.startedAt) : '—';

    const cpuLimit = num(res.cpuMillis);
    fillUse(cpu, u && u.cpu, fmtMillis(u && u.cpu && u.cpu.millis), cpuLimit ? fmtMillis(cpuLimit) : 'no limit');
    fillUse(mem, u && u.memory, fmtBytes(u && u.memory && u.memory.bytes), fmtMb(num(res.memoryMb)));
    fillUse(disk, u && u.disk, fmtBytes(u && u.disk && u.disk.bytes), fmtMb(num(res.diskMb)));

    if (level) {
      lv.firstChild.textContent = level;
      lv.firstChild.className = 'badge level-' + level;
    } else {
      lv.firstChild.textContent = '—';
      lv.firstChild.className = 'muted';
    }
    const msg = str(t.message, '');
    message.textContent = msg;
    if (msg) message.title = msg;

    // The skeleton's buttons: log, restart, stop, start, delete.
    if (busy) {
      for (let b = actions.firstChild.firstChild.nextSibling; b; b = b.nextSibling) b.disabled = true;
    } else {
      const stop = actions.firstChild.firstChild.nextSibling.nextSibling;
      stop.disabled = desired === 'stopped' && state === 'stopped';
      stop.nextSibling.disabled = desired === 'running' && state === 'running';
    }
    // One listener per row (not per table), so a click on a row that a
    // refresh has just replaced still acts on its tenant. The rows are a
    // grid, not a <table>: off-screen ones skip layout and paint
    // (content-visibility), which a table's rows cannot.
    tr.addEventListener('click', onRowClick);
    return tr;
  }

  function onRowClick(e) {
    const b = e.target.closest('button[data-action]');
    if (!b || b.disabled) return;
    const id = e.currentTarget.dataset.tenant;
    act(id, b.dataset.action);
  }

  /** The tenants by name, natural order; the order is kept between renders. */
  let sortedFor = null;
  let sortedList = [];
  function sortedTenants() {
    if (sortedFor !== st.tenants) {
      const keyed = st.tenants.map((t) => [t.id.match(/\d+|\D+/g) || [], t]);
      keyed.sort((x, y) => byParts(x[0], y[0]) || (x[1].id < y[1].id ? -1 : 1));
      sortedList = keyed.map((k) => k[1]);
      sortedFor = st.tenants;
    }
    return sortedList;
  }

  function renderTenants() {
    const q = $('filter').value.trim().toLowerCase();
    const list = sortedTenants();
    const frag = document.createDocumentFragment();
    let shown = 0;
    const count = { running: 0, healthy: 0, warning: 0, critical: 0 };
    for (const t of list) {
      if (t.state === 'running') count.running++;
      if (t.healthy === true) count.healthy++;
      const lv = t.usage && t.usage.level;
      if (lv === 'warning') count.warning++;
      if (lv === 'critical') count.critical++;
      if (q && ![t.id, t.owner, t.state, t.placement && t.placement.poolId].some((v) => typeof v === 'string' && v.toLowerCase().includes(q))) continue;
      frag.append(tenantRow(t));
      shown++;
    }
    $('tenant-rows').replaceChildren(frag);
    $('no-tenants').hidden = shown > 0;
    $('tenants-summary').textContent = list.length + ' · ' + count.running + ' running · '
      + count.healthy + ' healthy' + (count.warning ? ' · ' + count.warning + ' warning' : '')
      + (count.critical ? ' · ' + count.critical + ' critical' : '')
      + (q ? ' · ' + shown + ' shown' : '');
  }

  function renderPools() {
    const p = st.pools;
    const section = $('pools-section');
    if (!p) { section.hidden = true; return; }
    section.hidden = false;
    const pools = Array.isArray(p.pools) ? p.pools : [];
    // Which tenant holds which slot, from the tenants' placements.
    const slots = new Map();
    for (const t of st.tenants) {
      const pl = t.placement;
      if (!pl || typeof pl.poolId !== 'string' || num(pl.slot) === null) continue;
      if (!slots.has(pl.poolId)) slots.set(pl.poolId, new Map());
      slots.get(pl.poolId).set(pl.slot, t);
    }
    const frag = document.createDocumentFragment();
    for (const pool of pools) {
      if (!pool || typeof pool.id !== 'string') continue;
      const cap = num(pool.capacity) || 0;
      const used = num(pool.botsCount) || 0;
      const held = slots.get(pool.id) || new Map();
      const map = el('span', { class: 'slots' });
      let unplaced = Math.max(0, used - held.size);
      for (let i = 0; i < cap; i++) {
        const t = held.get(i);
        let cls = 'slot';
        let title = 'slot ' + i + ': free';
        if (t) {
          cls += ' used ' + stateClass(str(t.state, 'unknown'));
          title = 'slot ' + i + ': ' + t.id + ' (' + str(t.state, 'unknown') + ')';
        } else if (unplaced > 0 && held.size === 0) {
          // Tenants this token cannot see (or not listed yet).
          cls += ' used';
          title = 'slot ' + i + ': used';
          unplaced--;
        }
        map.append(el('span', { class: cls, title, 'data-slot': String(i) }));
      }
      const image = str(pool.image, 'default image');
      const imageCell = el('td', { class: 'mono small', 'data-field': 'image', text: image });
      if (typeof pool.rollingTo === 'string' && pool.rollingTo) {
        imageCell.append(el('span', { class: 'badge warn', text: '→ ' + pool.rollingTo }));
      }
      const status = str(pool.status, 'unknown');
      frag.append(el('tr', { 'data-pool': pool.id, 'data-status': status },
        el('td', { class: 'mono', 'data-field': 'id', text: pool.id, title: str(pool.containerName, '') }),
        el('td', { 'data-field': 'status' }, el('span', { class: 'badge ' + (status === 'running' ? 'ok' : status === 'starting' ? 'warn' : 'bad'), text: status })),
        el('td', { 'data-field': 'class', text: str(pool.class, 'default') }),
        el('td', { 'data-field': 'node', text: str(pool.node, '—') }),
        imageCell,
        el('td', { 'data-field': 'slots' }, map),
        el('td', { class: 'num', 'data-field': 'used', text: used + ' / ' + Math.max(0, cap - used) }),
        el('td', { class: 'num', 'data-field': 'memory', text: fmtMb(num(pool.memoryUsedMb)) + ' / ' + fmtMb(num(pool.memoryMb)) }),
      ));
    }
    $('pool-rows').replaceChildren(frag);
    const h = p.health && typeof p.health === 'object' ? p.health : {};
    const c = (x) => (x && typeof x === 'object' ? (num(x.healthy) ?? '?') + '/' + (num(x.total) ?? '?') : '?');
    $('pools-summary').textContent = pools.length + ' · ' + str(h.status, 'unknown')
      + ' · pools healthy ' + c(h.pools) + ' · tenants healthy ' + c(h.bots);
    const orphans = Array.isArray(p.orphans) ? p.orphans : [];
    $('pools-note').textContent = orphans.length ? 'orphaned pools (no row; removed only when named in a cleanup): ' + orphans.join(', ') : '';
  }

  function renderWho() {
    if (!st.role) return;
    document.body.dataset.role = st.role;
    let text = st.role === 'admin' ? 'admin token' : 'owner token';
    if (st.role === 'owner') {
      const owners = [...new Set(st.tenants.map((t) => t.owner).filter((o) => typeof o === 'string'))];
      if (owners.length === 1) text += ' · ' + owners[0];
    }
    $('whoami').textContent = text;
  }

  let noticeTimer = null;
  function notice(text) {
    $('notice').textContent = text;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { $('notice').textContent = ''; }, 4000);
  }

  function showError(text, code) {
    $('error-text').textContent = text;
    $('error').dataset.code = code || '';
    $('error').hidden = false;
  }

  function hideError() {
    $('error').hidden = true;
    $('error-text').textContent = '';
  }

  // ------------------------------------------------------------ actions

  /** The in-page confirmation; resolves true on "confirm". */
  function confirmDialog(text, okLabel, tenant) {
    const d = $('confirm');
    const ok = $('confirm-ok');
    const cancel = $('confirm-cancel');
    $('confirm-text').textContent = text;
    ok.textContent = okLabel;
    d.dataset.tenant = tenant;
    return new Promise((resolve) => {
      const done = (v) => {
        ok.onclick = null;
        cancel.onclick = null;
        d.oncancel = null;
        if (d.open) d.close();
        resolve(v);
      };
      ok.onclick = () => done(true);
      cancel.onclick = () => done(false);
      d.oncancel = (e) => { e.preventDefault(); done(false); };
      d.showModal();
      cancel.focus();
    });
  }

  async function act(id, action) {
    if (action === 'logs') { openLog(id); return; }
    if (!ACTIONS.includes(action) || st.pending.has(id)) return;
    if (action === 'delete') {
      const yes = await confirmDialog(
        'Delete tenant ' + id + '? It is stopped, its slot is freed, and its home and volumes are removed.',
        'Delete ' + id, id);
      if (!yes) return;
    }
    const session = st.session;
    st.pending.add(id);
    renderTenants();
    const path = '/api/tenants/' + encodeURIComponent(id) + (action === 'delete' ? '' : '/' + action);
    try {
      const body = await api(action === 'delete' ? 'DELETE' : 'POST', path);
      if (session !== st.session) return;
      if (action === 'delete') {
        st.tenants = st.tenants.filter((t) => t.id !== id);
        if (st.selected === id) closeLog(id + ' was deleted');
      } else if (body && body.tenant && body.tenant.id === id) {
        st.tenants = st.tenants.map((t) => (t.id === id ? body.tenant : t));
      }
      notice({ restart: 'restarted ', stop: 'stopped ', start: 'started ', delete: 'deleted ' }[action] + id);
    } catch (e) {
      if (aborted(e) || session !== st.session) return;
      showError(action + ' ' + id + ': ' + describe(e), e.code);
    } finally {
      if (session === st.session) {
        st.pending.delete(id);
        renderTenants();
        refreshSoon();
      }
    }
  }

  // --------------------------------------------------------------- logs

  function setLogStatus(text) { $('log-status').textContent = text; }

  function openLog(id) {
    if (st.log) st.log.abort();
    const ctl = new AbortController();
    st.log = ctl;
    st.session.signal.addEventListener('abort', () => ctl.abort(), { once: true });
    st.selected = id;
    for (const tr of $('tenant-rows').children) tr.classList.toggle('selected', tr.dataset.tenant === id);
    $('log-tenant').textContent = id;
    $('log-section').dataset.tenant = id;
    $('log').textContent = '';
    logChars = 0;
    followLog(id, ctl.signal);
  }

  function closeLog(why) {
    if (st.log) st.log.abort();
    st.log = null;
    st.selected = null;
    delete $('log-section').dataset.tenant;
    setLogStatus(why);
  }

  let logChars = 0;
  /** Append to the log (or replace it), following its end if it was there. */
  function writeLog(text, replace, toEnd) {
    const pre = $('log');
    const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    if (replace) {
      pre.textContent = text;
      logChars = text.length;
    } else {
      pre.append(text);
      logChars += text.length;
    }
    if (logChars > MAX_LOG_CHARS) {
      const all = pre.textContent;
      const keep = all.slice(all.length - MAX_LOG_CHARS / 2);
      pre.textContent = keep.slice(keep.indexOf('\n') + 1);
      logChars = pre.textContent.length;
    }
    if (atEnd || toEnd) pre.scrollTop = pre.scrollHeight;
  }

  /** Follow the log as it grows; poll its tail on a server without `follow`. */
  async function followLog(id, signal) {
    const base = '/api/tenants/' + encodeURIComponent(id) + '/logs';
    let delay = 1000;
    while (!signal.aborted) {
      setLogStatus('connecting…');
      try {
        const res = await request('GET', base + '?follow=true&tail=200', { signal });
        if (res.status === 400) {
          await res.text();
          return pollLog(base, signal);
        }
        if (!res.ok || !res.body) {
          const e = await readAnswer(res).then(() => new ApiError(res.status, 'no_body', 'no stream'), (x) => x);
          if (signal.aborted) return;
          setLogStatus(describe(e));
          if (res.status === 401 || res.status === 403 || res.status === 404) return;
        } else {
          setLogStatus('following');
          delay = 1000;
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          // A new connection starts with the tail again: it replaces what is shown.
          let first = true;
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            writeLog(value, first, first);
            first = false;
          }
          if (signal.aborted) return;
          setLogStatus('the stream ended; reconnecting');
        }
      } catch (e) {
        if (aborted(e) || signal.aborted) return;
        setLogStatus('disconnected: ' + describe(e));
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 15000);
    }
  }

  async function pollLog(base, signal) {
    let last = null;
    while (!signal.aborted) {
      try {
        const res = await request('GET', base + '?tail=200', { signal });
        if (res.ok) {
          const text = await res.text();
          if (signal.aborted) return;
          if (last !== null && text.startsWith(last)) writeLog(text.slice(last.length), false);
          else if (text !== last) writeLog(text, true, last === null);
          last = text;
          setLogStatus('polling every ' + LOG_POLL_MS / 1000 + ' s (this server does not stream logs)');
        } else {
          const e = await readAnswer(res).catch((x) => x);
          if (signal.aborted) return;
          setLogStatus(describe(e));
          if (res.status === 401 || res.status === 403 || res.status === 404) return;
        }
      } catch (e) {
        if (aborted(e) || signal.aborted) return;
        setLogStatus('disconnected: ' + describe(e));
      }
      await sleep(LOG_POLL_MS, signal);
    }
  }

  // ------------------------------------------------------------- events

  /**
   * A server-sent events parser (the WHATWG event-stream format): feed it
   * text as it arrives, in chunks split anywhere; it calls `onEvent` with
   * `{id, type, data}` at each blank line.
   */
  class SseParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buf = '';
      this.data = [];
      this.type = '';
      this.lastId = null;
      this.retry = null;
      this.comments = 0;
    }

    feed(text) {
      this.buf += text;
      const re = /\r\n|\r|\n/g;
      let pos = 0;
      let m;
      while ((m = re.exec(this.buf)) !== null) {
        // A CR at the very end may be the first half of a CRLF.
        if (m[0] === '\r' && re.lastIndex === this.buf.length) break;
        this.line(this.buf.slice(pos, m.index));
        pos = re.lastIndex;
      }
      this.buf = this.buf.slice(pos);
    }

    line(l) {
      if (l === '') { this.dispatch(); return; }
      if (l[0] === ':') { this.comments++; return; }
      const c = l.indexOf(':');
      const field = c < 0 ? l : l.slice(0, c);
      let value = c < 0 ? '' : l.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') this.data.push(value);
      else if (field === 'id') { if (!value.includes('\0')) this.lastId = value; }
      else if (field === 'event') this.type = value;
      else if (field === 'retry') { if (/^\d+$/.test(value)) this.retry = Number(value); }
    }

    dispatch() {
      if (this.data.length) {
        this.onEvent({ id: this.lastId, type: this.type || 'message', data: this.data.join('\n') });
      }
      this.data = [];
      this.type = '';
    }
  }
  // For tests of the parser in a browser.
  window.SlotpackSse = SseParser;

  function setEventsStatus(text, mode) {
    $('events-status').textContent = text;
    $('events-section').dataset.mode = mode || '';
  }

  const pad2 = (n) => (n < 10 ? '0' : '') + n;
  /** Local HH:MM:SS (by hand: toLocaleTimeString is slow on a cold page). */
  const fmtTime = (at) => {
    const t = Date.parse(at);
    if (Number.isNaN(t)) return str(at, '');
    const d = new Date(t);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  };

  /** Add events (oldest first) to the top of the feed; true if one was new. */
  function addEvents(list) {
    const ol = $('events');
    let added = false;
    for (const ev of list) {
      if (!ev || typeof ev !== 'object') continue;
      const seq = num(ev.seq);
      if (seq !== null) {
        if (st.seen.has(seq)) continue;
        st.seen.add(seq);
        if (st.lastEventId === null || seq > Number(st.lastEventId)) st.lastEventId = String(seq);
      }
      const kind = str(ev.kind, 'event');
      const bad = /fail|problem|memory|unreachable|crash|fatal/.test(kind);
      const li = el('li', {
        'data-seq': seq === null ? undefined : String(seq),
        'data-kind': kind,
        'data-tenant': typeof ev.tenant === 'string' ? ev.tenant : undefined,
        class: bad ? 'ev-bad' : '',
      },
      el('time', { text: fmtTime(ev.at), title: str(ev.at, '') }),
      el('span', { class: 'ev-kind', text: kind }),
      typeof ev.tenant === 'string' ? el('span', { class: 'mono ev-tenant', text: ev.tenant }) : null,
      typeof ev.pool === 'string' ? el('span', { class: 'mono muted', text: ev.pool }) : null,
      el('span', { class: 'ev-detail', text: str(ev.detail, '') }));
      ol.prepend(li);
      added = true;
    }
    while (ol.children.length > MAX_EVENTS) ol.lastElementChild.remove();
    return added;
  }

  function onSse(msg) {
    let ev;
    try {
      ev = JSON.parse(msg.data);
    } catch (_) {
      return;
    }
    if (msg.id !== null && msg.id !== undefined) st.lastEventId = msg.id;
    if (addEvents([ev])) refreshSoon();
  }

  /**
   * `GET /api/events/stream` read with fetch() (EventSource cannot send an
   * Authorization header): first with the latest events (`backlog`), then,
   * reconnecting, from `Last-Event-ID` on.
   */
  async function followEvents(signal) {
    let delay = 1000;
    while (!signal.aborted) {
      setEventsStatus('connecting…', 'connecting');
      try {
        const headers = { Accept: 'text/event-stream' };
        if (st.lastEventId !== null) headers['Last-Event-ID'] = st.lastEventId;
        const path = '/api/events/stream' + (st.lastEventId === null ? '?backlog=' + EVENTS_BACKLOG : '');
        const res = await request('GET', path, { signal, headers });
        if (res.status === 404 || res.status === 405) {
          await res.text();
          return pollEvents(signal);
        }
        if (!res.ok || !res.body) {
          const e = await readAnswer(res).then(() => new ApiError(res.status, 'no_body', 'no stream'), (x) => x);
          if (signal.aborted) return;
          setEventsStatus(describe(e), 'error');
          if (res.status === 403) return;
          // Too many streams of this token (other tabs): as the server says.
          const after = Number(res.headers.get('Retry-After'));
          if (after > 0) delay = Math.max(delay, after * 1000);
        } else {
          setEventsStatus('live', 'live');
          delay = 1000;
          const parser = new SseParser(onSse);
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            parser.feed(value);
          }
          if (parser.retry !== null) delay = parser.retry;
          if (signal.aborted) return;
        }
      } catch (e) {
        if (aborted(e) || signal.aborted) return;
        setEventsStatus('disconnected', 'error');
      }
      setEventsStatus('reconnecting…', 'connecting');
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 30000);
    }
  }

  /** On a server without the stream: the event log's latest, polled. */
  async function pollEvents(signal) {
    while (!signal.aborted) {
      try {
        const body = await api('GET', '/api/events?limit=100', { signal });
        if (signal.aborted) return;
        if (body && Array.isArray(body.events) && addEvents(body.events)) refreshSoon();
        setEventsStatus('polled every ' + EVENTS_POLL_MS / 1000 + ' s', 'polling');
      } catch (e) {
        if (aborted(e) || signal.aborted) return;
        setEventsStatus(describe(e), 'error');
        if (e.status === 403 || e.status === 401) return;
      }
      await sleep(EVENTS_POLL_MS, signal);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
