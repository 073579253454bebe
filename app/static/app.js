// Onboarding page: answer "do you know these artists?", search the catalog, rate artists, see
// recommendations (and why) after every change. Talks only to its own origin through relative
// URLs (POST v1/onboarding/questions, GET v1/items, POST v1/recommend); renders every server
// string with textContent, never as HTML.

const RECOMMEND_COUNT = 20;
const UNCERTAINTY_SAMPLES = 8;
const SEARCH_LIMIT = 10;
const SEARCH_DELAY_MS = 250;
const DEFAULT_RETRY_SECONDS = 5;
const MAX_RETRY_SECONDS = 300;
const STORAGE_KEY = "tanp-rec.taste.v1";
const UNKNOWN_KEY = "tanp-rec.unknown.v1";
const QUESTION_COUNT = 5;
const LIKE = 1;
const NOT_FOR_ME = 0;

const elements = {
  status: document.getElementById("status"),
  questionsHeading: document.getElementById("questions-heading"),
  questionsRound: document.getElementById("questions-round"),
  questionsMessage: document.getElementById("questions-message"),
  questions: document.getElementById("questions"),
  otherQuestions: document.getElementById("other-questions"),
  modelVersion: document.getElementById("model-version"),
  searchForm: document.getElementById("search-form"),
  searchInput: document.getElementById("search-input"),
  searchMessage: document.getElementById("search-message"),
  searchResults: document.getElementById("search-results"),
  tasteHeading: document.getElementById("taste-heading"),
  tasteCount: document.getElementById("taste-count"),
  tasteEmpty: document.getElementById("taste-empty"),
  tasteList: document.getElementById("taste-list"),
  clearTaste: document.getElementById("clear-taste"),
  recsHeading: document.getElementById("recommendations-heading"),
  fallbackNote: document.getElementById("fallback-note"),
  recMessage: document.getElementById("rec-message"),
  recommendations: document.getElementById("recommendations"),
  recMeta: document.getElementById("rec-meta"),
};

// item_id -> {item_id, name, rating}; insertion order is the order the user rated in.
const taste = new Map(loadTaste());
// Artists answered "don't know" (kept, never asked again) and skipped ones (this visit only).
const unknown = new Set(loadUnknown());
const skipped = new Set();
const questions = { controller: null, sequence: 0, retryTimer: 0, items: [], round: 0 };
const search = { timer: 0, controller: null, sequence: 0 };
const recommend = { controller: null, sequence: 0, retryTimer: 0, countdownTimer: 0 };

class NetworkError extends Error {}

// ---------------------------------------------------------------------------------------------
// HTTP

async function callApi(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: { Accept: "application/json" }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new NetworkError(error.message);
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    if (error.name === "AbortError") throw error;
    // A proxy's HTML error page or an empty body: the status code still tells the story.
  }
  return {
    ok: response.ok,
    status: response.status,
    data,
    retryAfter: response.headers.get("Retry-After"),
    requestId: response.headers.get("X-Request-ID"),
  };
}

function formatDetail(detail) {
  if (detail === null || detail === undefined) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // FastAPI's validation errors: [{loc: ["body", "k"], msg: "...", type: "..."}, ...]
    return detail
      .map((entry) => {
        if (entry === null || typeof entry !== "object") return String(entry);
        const where = Array.isArray(entry.loc)
          ? entry.loc.filter((part) => part !== "body").join(" → ")
          : "";
        const message = entry.msg ?? JSON.stringify(entry);
        return where ? `${where}: ${message}` : message;
      })
      .join("; ");
  }
  return JSON.stringify(detail);
}

// Retry-After is either delay-seconds or an HTTP date; wait at least 1 s, at most 5 min.
function retrySeconds(header) {
  const clamp = (seconds) => Math.min(Math.max(seconds, 1), MAX_RETRY_SECONDS);
  const seconds = Number.parseInt(header ?? "", 10);
  if (Number.isFinite(seconds) && seconds >= 0) return clamp(seconds);
  const date = Date.parse(header ?? "");
  if (Number.isFinite(date)) return clamp(Math.ceil((date - Date.now()) / 1000));
  return DEFAULT_RETRY_SECONDS;
}

function describeFailure(result) {
  const detail = formatDetail(result.data?.detail);
  if (result.status === 422) {
    return `The server could not use this request: ${detail || "invalid input"}.`;
  }
  if (result.status === 413) {
    return "Your taste list is too long for the server. Remove a few artists.";
  }
  const suffix = detail ? `: ${detail}` : "";
  const reference = result.requestId ? ` (request ${result.requestId})` : "";
  return `The server answered with an error ${result.status}${suffix}${reference}.`;
}

function announce(text) {
  elements.status.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Taste list (persisted in this browser only)

function loadTaste() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(STORAGE_KEY) ?? "[]");
    if (!Array.isArray(saved)) return [];
    return saved
      .filter((entry) => typeof entry?.item_id === "string")
      .filter((entry) => entry.rating === LIKE || entry.rating === NOT_FOR_ME)
      .map(({ item_id, name, rating }) => [item_id, { item_id, name: name ?? null, rating }]);
  } catch {
    return [];
  }
}

function loadUnknown() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(UNKNOWN_KEY) ?? "[]");
    return Array.isArray(saved) ? saved.filter((id) => typeof id === "string") : [];
  } catch {
    return [];
  }
}

function saveUnknown() {
  try {
    window.localStorage.setItem(UNKNOWN_KEY, JSON.stringify([...unknown]));
  } catch {
    // As for the taste list: the page works without storage.
  }
}

function saveTaste() {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify([...taste.values()]));
  } catch {
    // Private mode or storage disabled: the page still works, it just forgets on reload.
  }
}

function displayName(item) {
  return item.name || `Artist ${item.item_id}`;
}

function ratingLabel(rating) {
  return rating === LIKE ? "like" : "not for me";
}

function setRating(item, rating) {
  const name = displayName(item);
  if (rating === null) {
    taste.delete(item.item_id);
    announce(`Removed ${name} from your taste.`);
  } else {
    taste.set(item.item_id, { item_id: item.item_id, name: item.name ?? null, rating });
    announce(`Marked ${name} as ${ratingLabel(rating)}.`);
  }
  saveTaste();
  renderTaste();
  syncRatingButtons(elements.searchResults);
  syncRatingButtons(elements.recommendations);
  requestRecommendations();
  pruneQuestions();
}

function toggleRating(item, rating) {
  setRating(item, taste.get(item.item_id)?.rating === rating ? null : rating);
}

// ---------------------------------------------------------------------------------------------
// Rendering helpers

function element(tag, { className, text, attributes } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes ?? {})) node.setAttribute(name, value);
  return node;
}

function visuallyHidden(text) {
  return element("span", { className: "visually-hidden", text });
}

// `name` is the accessible name when the visible label alone is ambiguous ("Like" which
// artist?); it starts with the visible label so that speech control finds the button.
function button({ label, name, className, focusKey, onClick }) {
  const node = element("button", {
    className: `button ${className ?? ""}`.trim(),
    attributes: { type: "button" },
  });
  node.append(label);
  if (name) node.setAttribute("aria-label", name);
  if (focusKey) node.dataset.focusKey = focusKey;
  node.addEventListener("click", onClick);
  return node;
}

// Two toggle buttons (aria-pressed) that rate `item`; kept in sync by syncRatingButtons.
function ratingButtons(item, scope) {
  const group = element("div", { className: "rating-buttons", attributes: { role: "group" } });
  group.setAttribute("aria-label", `Rate ${displayName(item)}`);
  for (const [rating, label, className] of [
    [LIKE, "Like", "button-like"],
    [NOT_FOR_ME, "Not for me", "button-dislike"],
  ]) {
    const node = button({
      label,
      name: `${label} ${displayName(item)}`,
      className,
      focusKey: `${scope}:${rating}:${item.item_id}`,
      onClick: () => toggleRating(item, rating),
    });
    node.dataset.rating = String(rating);
    node.dataset.itemId = item.item_id;
    group.append(node);
  }
  return group;
}

function syncRatingButtons(container) {
  for (const node of container.querySelectorAll("button[data-rating]")) {
    const pressed = taste.get(node.dataset.itemId)?.rating === Number(node.dataset.rating);
    node.setAttribute("aria-pressed", String(pressed));
  }
  for (const row of container.querySelectorAll("li[data-item-id]")) {
    const rating = taste.get(row.dataset.itemId)?.rating;
    row.classList.toggle("is-liked", rating === LIKE);
    row.classList.toggle("is-disliked", rating === NOT_FOR_ME);
  }
}

// Re-renders `container` and puts keyboard focus back where it was (same control, or the
// control now at the same position, or `fallback`) so that keyboard users never lose their place.
function renderKeepingFocus(container, fallback, render) {
  const active = document.activeElement;
  const hadFocus = active instanceof HTMLElement && container.contains(active);
  const key = hadFocus ? active.dataset.focusKey : undefined;
  const controlsOf = () => [...container.querySelectorAll("[data-focus-key]")];
  const position = hadFocus ? controlsOf().indexOf(active) : -1;
  render();
  if (!hadFocus) return;
  const controls = controlsOf();
  const same = key ? controls.find((node) => node.dataset.focusKey === key) : undefined;
  const target = same ?? controls[Math.min(Math.max(position, 0), controls.length - 1)] ?? fallback;
  target.focus();
}

// ---------------------------------------------------------------------------------------------
// Search

function setSearchMessage(text, kind = "info") {
  elements.searchMessage.textContent = text;
  elements.searchMessage.hidden = !text;
  elements.searchMessage.dataset.kind = kind;
}

function scheduleSearch(delay = SEARCH_DELAY_MS) {
  window.clearTimeout(search.timer);
  search.timer = window.setTimeout(runSearch, delay);
}

async function runSearch() {
  window.clearTimeout(search.timer);
  const query = elements.searchInput.value.trim();
  search.controller?.abort();
  const sequence = ++search.sequence;
  if (!query) {
    search.controller = null;
    renderSearchResults([]);
    setSearchMessage("");
    return;
  }
  const controller = new AbortController();
  search.controller = controller;
  const params = new URLSearchParams({ q: query, limit: String(SEARCH_LIMIT) });
  let result;
  try {
    result = await callApi(`v1/items?${params}`, { signal: controller.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    if (sequence !== search.sequence) return;
    setSearchMessage(
      "Search failed: the server cannot be reached (network error). " +
        "Check your connection and type again.",
      "error",
    );
    return;
  }
  if (sequence !== search.sequence) return;
  if (!result.ok) {
    renderSearchResults([]);
    if (result.status === 503) {
      const seconds = retrySeconds(result.retryAfter);
      setSearchMessage(
        `Search is unavailable while the model is loading; retrying in ${seconds} s.`,
        "error",
      );
      scheduleSearch(seconds * 1000);
    } else {
      setSearchMessage(`Search failed. ${describeFailure(result)}`, "error");
    }
    return;
  }
  const items = Array.isArray(result.data) ? result.data : (result.data?.items ?? []);
  renderSearchResults(items);
  setSearchMessage(
    items.length
      ? `${items.length} artist${items.length === 1 ? "" : "s"} match “${query}”.`
      : `No artist matches “${query}”.`,
  );
}

function renderSearchResults(items) {
  renderKeepingFocus(elements.searchResults, elements.searchInput, () => {
    const rows = items.map((item) => {
      const row = element("li", { className: "item-row" });
      row.dataset.itemId = item.item_id;
      const label = element("div", { className: "item-label" });
      label.append(element("span", { className: "item-name", text: displayName(item) }));
      if (typeof item.popularity === "number") {
        const listeners = Math.round(item.popularity);
        const fans = `${listeners.toLocaleString()} fan${listeners === 1 ? "" : "s"}`;
        label.append(element("span", { className: "item-detail", text: `${fans} in training data` }));
      }
      row.append(label, ratingButtons(item, "search"));
      return row;
    });
    elements.searchResults.replaceChildren(...rows);
    syncRatingButtons(elements.searchResults);
  });
}

// ---------------------------------------------------------------------------------------------
// Taste list

function renderTaste() {
  const entries = [...taste.values()];
  const liked = entries.filter((entry) => entry.rating === LIKE).length;
  elements.tasteCount.textContent = entries.length
    ? `(${liked} liked, ${entries.length - liked} not for me)`
    : "";
  elements.tasteEmpty.hidden = entries.length > 0;
  elements.clearTaste.hidden = entries.length === 0;
  renderKeepingFocus(elements.tasteList, elements.tasteHeading, () => {
    const rows = entries.map((entry) => {
      const liked = entry.rating === LIKE;
      const row = element("li", {
        className: `item-row taste-row ${liked ? "is-liked" : "is-disliked"}`,
      });
      row.dataset.itemId = entry.item_id;
      const label = element("div", { className: "item-label" });
      label.append(
        element("span", { className: "item-name", text: displayName(entry) }),
        element("span", {
          className: `badge badge-${liked ? "like" : "dislike"}`,
          text: liked ? "Liked" : "Not for me",
        }),
      );
      const flipTo = entry.rating === LIKE ? NOT_FOR_ME : LIKE;
      const flipLabel = flipTo === LIKE ? "Mark like" : "Mark not for me";
      const actions = element("div", { className: "taste-actions" });
      actions.append(
        button({
          label: flipLabel,
          name: `${flipLabel}: ${displayName(entry)}`,
          className: "button-flip",
          focusKey: `taste:flip:${entry.item_id}`,
          onClick: () => setRating(entry, flipTo),
        }),
        button({
          label: "Remove",
          name: `Remove ${displayName(entry)}`,
          className: "button-remove",
          focusKey: `taste:remove:${entry.item_id}`,
          onClick: () => setRating(entry, null),
        }),
      );
      row.append(label, actions);
      return row;
    });
    elements.tasteList.replaceChildren(...rows);
  });
}

// ---------------------------------------------------------------------------------------------
// Questions: "Do you know these artists?" (the next round comes when a round is answered)

function setQuestionsMessage(text, kind = "info") {
  elements.questionsMessage.textContent = text;
  elements.questionsMessage.hidden = !text;
  elements.questionsMessage.dataset.kind = kind;
}

async function requestQuestions() {
  window.clearTimeout(questions.retryTimer);
  questions.controller?.abort();
  const controller = new AbortController();
  questions.controller = controller;
  const sequence = ++questions.sequence;
  const support = [...taste.values()].map(({ item_id, rating }) => ({ item_id, rating }));
  const exclude = [...new Set([...unknown, ...skipped])].filter((id) => !taste.has(id));
  elements.questions.setAttribute("aria-busy", "true");
  let result;
  try {
    result = await callApi("v1/onboarding/questions", {
      method: "POST",
      body: { support, k: QUESTION_COUNT, exclude },
      signal: controller.signal,
    });
  } catch (error) {
    if (error.name === "AbortError" || sequence !== questions.sequence) return;
    elements.questions.setAttribute("aria-busy", "false");
    setQuestionsMessage("Network error: the next questions could not be loaded.", "error");
    elements.otherQuestions.hidden = false;
    return;
  }
  if (sequence !== questions.sequence) return;
  elements.questions.setAttribute("aria-busy", "false");
  if (!result.ok) {
    if (result.status === 503) {
      const seconds = retrySeconds(result.retryAfter);
      setQuestionsMessage(`Questions are unavailable for now; retrying in ${seconds} s.`, "error");
      questions.retryTimer = window.setTimeout(requestQuestions, seconds * 1000);
    } else {
      setQuestionsMessage(`Questions failed. ${describeFailure(result)}`, "error");
    }
    elements.otherQuestions.hidden = false;
    return;
  }
  questions.items = Array.isArray(result.data?.items) ? result.data.items : [];
  questions.round += 1;
  setQuestionsMessage(
    questions.items.length ? "" : "No more artists to ask about: you have seen them all.",
  );
  renderQuestions();
  if (questions.items.length) {
    announce(`Round ${questions.round}: ${questions.items.length} artists to answer about.`);
  }
}

function answerQuestion(item, answer) {
  if (answer === null) {
    unknown.add(item.item_id);
    saveUnknown();
    announce(`Noted: you don't know ${displayName(item)}.`);
    pruneQuestions();
  } else {
    setRating(item, answer);
  }
}

// Drops the questions answered meanwhile (here or elsewhere on the page); the next round is
// asked for once none is left.
function pruneQuestions() {
  const before = questions.items.length;
  questions.items = questions.items.filter(
    (item) => !taste.has(item.item_id) && !unknown.has(item.item_id),
  );
  if (questions.items.length === before) return;
  renderQuestions();
  if (!questions.items.length) requestQuestions();
}

function renderQuestions() {
  elements.questionsRound.textContent = questions.round ? `(round ${questions.round})` : "";
  elements.otherQuestions.hidden = questions.items.length === 0;
  renderKeepingFocus(elements.questions, elements.questionsHeading, () => {
    const rows = questions.items.map((item) => {
      const row = element("li", { className: "item-row question-row" });
      row.dataset.itemId = item.item_id;
      const label = element("div", { className: "item-label" });
      label.append(element("span", { className: "item-name", text: displayName(item) }));
      const group = element("div", { className: "rating-buttons", attributes: { role: "group" } });
      group.setAttribute("aria-label", `Do you know ${displayName(item)}?`);
      for (const [answer, text, className] of [
        [LIKE, "Like", "button-like"],
        [NOT_FOR_ME, "Not for me", "button-dislike"],
        [null, "Don't know", "button-quiet"],
      ]) {
        group.append(
          button({
            label: text,
            name: `${text}: ${displayName(item)}`,
            className: `button-answer ${className}`,
            focusKey: `question:${answer}:${item.item_id}`,
            onClick: () => answerQuestion(item, answer),
          }),
        );
      }
      row.append(label, group);
      return row;
    });
    elements.questions.replaceChildren(...rows);
  });
}

// ---------------------------------------------------------------------------------------------
// Recommendations

function cancelRetry() {
  window.clearTimeout(recommend.retryTimer);
  window.clearInterval(recommend.countdownTimer);
  recommend.retryTimer = 0;
  recommend.countdownTimer = 0;
}

// The message box is an alert region: whatever is put in it is read out once.
function setRecMessage(kind, parts) {
  const hadFocus = elements.recMessage.contains(document.activeElement);
  elements.recMessage.replaceChildren(...parts);
  elements.recMessage.dataset.kind = kind ?? "";
  elements.recMessage.hidden = parts.length === 0;
  if (hadFocus) (elements.recMessage.querySelector("button") ?? elements.recsHeading).focus();
}

function retryNowButton() {
  return button({
    label: "Retry now",
    className: "button-quiet",
    onClick: () => requestRecommendations(),
  });
}

function showUnavailable(seconds, detail) {
  let left = seconds;
  // Screen readers hear the message once; the visible countdown ticks without being re-read.
  const spoken = visuallyHidden(`The model is loading or unavailable. Retrying in ${seconds} seconds.`);
  const visible = element("span", { attributes: { "aria-hidden": "true" } });
  const counter = element("span", { className: "countdown", text: String(left) });
  visible.append("The model is loading / unavailable, retrying in ", counter, " s.");
  const parts = [element("p", { className: "message-title" })];
  parts[0].append(spoken, visible);
  if (detail) {
    parts.push(element("p", { className: "message-detail", text: `Server says: ${detail}` }));
  }
  parts.push(retryNowButton());
  setRecMessage("error", parts);
  recommend.countdownTimer = window.setInterval(() => {
    left = Math.max(left - 1, 0);
    counter.textContent = String(left);
  }, 1000);
  recommend.retryTimer = window.setTimeout(() => requestRecommendations(), seconds * 1000);
}

// "X", "X and Y", "X, Y and Z"
function joinNames(names) {
  if (names.length < 2) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

function markStale(stale) {
  elements.recommendations.classList.toggle("is-stale", stale);
}

async function requestRecommendations() {
  cancelRetry();
  recommend.controller?.abort();
  const controller = new AbortController();
  recommend.controller = controller;
  const sequence = ++recommend.sequence;
  const support = [...taste.values()].map(({ item_id, rating }) => ({ item_id, rating }));
  elements.recommendations.setAttribute("aria-busy", "true");
  markStale(true);
  let result;
  try {
    result = await callApi("v1/recommend", {
      method: "POST",
      body: { support, k: RECOMMEND_COUNT, uncertainty_samples: UNCERTAINTY_SAMPLES },
      signal: controller.signal,
    });
  } catch (error) {
    if (error.name === "AbortError" || sequence !== recommend.sequence) return;
    elements.recommendations.setAttribute("aria-busy", "false");
    setRecMessage("error", [
      element("p", {
        className: "message-title",
        text:
          "Network error: the server cannot be reached. " +
          "Check your connection; the list below may be out of date.",
      }),
      retryNowButton(),
    ]);
    announce("Network error while updating recommendations.");
    return;
  }
  if (sequence !== recommend.sequence) return;
  elements.recommendations.setAttribute("aria-busy", "false");
  if (result.ok) {
    showRecommendations(result.data);
    return;
  }
  if (result.status === 503) {
    const last = elements.modelVersion.dataset.lastVersion;
    elements.modelVersion.textContent = last
      ? `unavailable (last answer from ${last})`
      : "unavailable";
    showUnavailable(retrySeconds(result.retryAfter), formatDetail(result.data?.detail));
    return;
  }
  const parts = [element("p", { className: "message-title", text: describeFailure(result) })];
  if (result.status === 422 && taste.size) {
    parts.push(element("p", { text: "Remove or change the artists it names in your taste list." }));
  } else if (result.status !== 422) {
    parts.push(retryNowButton());
  }
  setRecMessage("error", parts);
  announce("Recommendations could not be updated.");
}

// Enough decimals to tell neighbouring scores apart (3 for a well-spread list, more when the
// model's scores are close together), never more than 6.
function scoreDecimals(range) {
  if (!(range > 0) || !Number.isFinite(range)) return 3;
  return Math.min(Math.max(3, Math.ceil(-Math.log10(range / 20))), 6);
}

function formatSpread(value) {
  if (!Number.isFinite(value)) return "–";
  return value !== 0 && Math.abs(value) < 0.001 ? value.toPrecision(2) : value.toFixed(3);
}

function showRecommendations(data) {
  const items = Array.isArray(data?.items) ? data.items : [];
  elements.modelVersion.textContent = data?.model_version ?? "unknown";
  elements.modelVersion.dataset.lastVersion = data?.model_version ?? "";
  setRecMessage(null, []);
  markStale(false);
  if (data?.fallback === "popularity") {
    elements.fallbackNote.textContent = taste.size
      ? "Showing popular artists: the model could not personalise this list."
      : "You have not rated any artist yet, so these are the most popular artists. " +
        "Like a few to personalise the list.";
    elements.fallbackNote.hidden = false;
  } else {
    elements.fallbackNote.hidden = true;
    elements.fallbackNote.textContent = "";
  }
  const scores = items.map((item) => Number(item.score)).filter(Number.isFinite);
  const high = Math.max(...scores);
  const low = Math.min(...scores);
  const decimals = scoreDecimals(high - low);
  renderKeepingFocus(elements.recommendations, elements.recsHeading, () => {
    const rows = items.map((item) => {
      const row = element("li", { className: "rec-row" });
      row.dataset.itemId = item.item_id;
      const score = Number(item.score);
      // Scaled within this list: the best gets a full bar, the weakest a short stub.
      const fraction = high > low ? (score - low) / (high - low) : 1;
      const head = element("div", { className: "rec-head" });
      head.append(element("span", { className: "item-name", text: displayName(item) }));
      const figures = element("span", { className: "rec-figures" });
      const scoreText = Number.isFinite(score) ? score.toFixed(decimals) : "–";
      figures.append(element("span", { className: "score", text: scoreText }));
      if (typeof item.uncertainty === "number") {
        const spread = element("span", {
          className: "uncertainty",
          text: `± ${formatSpread(item.uncertainty)}`,
        });
        spread.title = `Standard deviation of the score over ${UNCERTAINTY_SAMPLES} samples`;
        figures.append(spread);
      }
      head.append(figures);
      const bar = element("div", { className: "score-bar", attributes: { "aria-hidden": "true" } });
      const fill = element("span", { className: "score-fill" });
      fill.style.width = `${(6 + 94 * fraction).toFixed(1)}%`;
      bar.append(fill);
      const body = element("div", { className: "rec-body" });
      body.append(head, bar);
      const because = Array.isArray(item.because) ? item.because : [];
      if (because.length) {
        const names = because.map((liked) => displayName(liked));
        body.append(
          element("p", { className: "because", text: `Because you liked ${joinNames(names)}` }),
        );
      }
      body.append(ratingButtons(item, "recs"));
      row.append(body);
      return row;
    });
    elements.recommendations.replaceChildren(...rows);
    syncRatingButtons(elements.recommendations);
  });
  const cached = data?.cached ? " · served from cache" : "";
  elements.recMeta.textContent = items.length
    ? `Top ${items.length} from model ${data.model_version}${cached}.`
    : "";
  announce(
    items.length
      ? `Recommendations updated: ${items.length} artists` +
          `${data?.fallback === "popularity" ? ", popular artists" : ""}.`
      : "No recommendations available.",
  );
}

// ---------------------------------------------------------------------------------------------
// Wiring

elements.searchInput.addEventListener("input", () => scheduleSearch());
elements.searchInput.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && elements.searchInput.value) {
    elements.searchInput.value = "";
    scheduleSearch(0);
  }
});
elements.searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  runSearch();
});
elements.otherQuestions.addEventListener("click", () => {
  for (const item of questions.items) skipped.add(item.item_id);
  questions.items = [];
  renderQuestions();
  elements.questionsHeading.focus();
  requestQuestions();
});
elements.clearTaste.addEventListener("click", () => {
  taste.clear();
  unknown.clear();
  skipped.clear();
  saveTaste();
  saveUnknown();
  questions.round = 0;
  requestQuestions();
  renderTaste();
  syncRatingButtons(elements.searchResults);
  syncRatingButtons(elements.recommendations);
  announce("Cleared all ratings.");
  elements.tasteHeading.focus();
  requestRecommendations();
});
window.addEventListener("online", () => {
  if (elements.recMessage.dataset.kind === "error") requestRecommendations();
});

renderTaste();
requestRecommendations();
requestQuestions();
