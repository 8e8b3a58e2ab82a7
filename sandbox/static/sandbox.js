// The sandbox page: shows what the server renders, reports what the user does.
// Every action goes to /sandbox/<action> as JSON; the server turns it into what Slack
// would send the bot. /sandbox/state answers when something changed (long poll).
"use strict";

const RELEASES = "C0RELEASES";
const page = {
  user: localStorage.getItem("pipebot-sandbox-user") || "",
  since: -1,
  thread: "",
  pane: "channel",
  shown: {},
  poll: null,
  usersListed: false,
  // The newest refusal the user dismissed (its time): older ones stay hidden.
  problemsSeen: Number(localStorage.getItem("pipebot-sandbox-problems-seen") || 0),
  problemsShown: 0,
};

const $ = (id) => document.getElementById(id);

const SCROLLERS = ["timeline", "thread", "home", "dms"];

// Changes the page's layout (a bar shown or hidden above the panes) without moving any
// pane that was scrolled to its end away from it: its last message stays in sight.
function keepingEnds(change) {
  const atEnd = SCROLLERS.map($).filter(
    (el) => el && el.scrollHeight - el.scrollTop - el.clientHeight < 40
  );
  change();
  atEnd.forEach((el) => { el.scrollTop = el.scrollHeight; });
}

function toast(text) {
  const box = $("toast");
  keepingEnds(() => {
    box.textContent = text;
    box.hidden = false;
  });
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => keepingEnds(() => { box.hidden = true; }), 6000);
}

async function act(action, data) {
  let answer;
  try {
    const response = await fetch("/sandbox/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ user: page.user }, data)),
    });
    answer = await response.json();
  } catch (error) {
    answer = { ok: false, error: "the sandbox is not answering" };
  }
  if (!answer.ok && answer.error) toast(answer.error);
  if (answer.note) toast(answer.note);
  return answer;
}

function setHtml(id, html) {
  if (page.shown[id] === html) return false;
  page.shown[id] = html;
  const element = $(id);
  const atBottom = element.scrollHeight - element.scrollTop - element.clientHeight < 40;
  element.innerHTML = html;
  if (atBottom || id === "thread") element.scrollTop = element.scrollHeight;
  return true;
}

function showModal(modal) {
  const layer = $("modal-layer");
  if (!modal) {
    layer.hidden = true;
    layer.innerHTML = "";
    page.shown.modal = "";
    return;
  }
  if (page.shown.modal === modal.html) return;
  const old = layer.querySelector("form.modal");
  const typed = {};
  if (old && old.dataset.view === modal.id) {
    old.querySelectorAll("[data-block][data-action]").forEach((field) => {
      if ("value" in field) typed[field.dataset.block + "/" + field.dataset.action] = field.value;
    });
  }
  layer.innerHTML = modal.html;
  layer.hidden = false;
  page.shown.modal = modal.html;
  layer.querySelectorAll("form.modal [data-block][data-action]").forEach((field) => {
    const key = field.dataset.block + "/" + field.dataset.action;
    if (key in typed) field.value = typed[key];
  });
  const first = layer.querySelector(".has-error .sk-input") || layer.querySelector(".sk-input");
  if (first && !old) first.focus();
}

function showProblems(problems) {
  const box = $("problems");
  const fresh = problems.filter((p) => p.at > page.problemsSeen);
  if (!fresh.length) {
    if (!box.hidden) keepingEnds(() => { box.hidden = true; });
    return;
  }
  page.problemsShown = Math.max(...fresh.map((p) => p.at));
  keepingEnds(() => {
    box.hidden = false;
    box.replaceChildren();
    const list = document.createElement("div");
    list.className = "list";
    const title = document.createElement("b");
    title.textContent = "Slack refused these calls from pipebot:";
    list.append(title);
    fresh.forEach((p) => {
      const line = document.createElement("div");
      line.textContent = `${p.method}: ${p.error} (${p.detail})`;
      list.append(line);
    });
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "link dismiss";
    dismiss.id = "dismiss-problems";
    dismiss.textContent = "Dismiss";
    dismiss.title = "Hide these until Slack refuses another call";
    box.append(list, dismiss);
  });
}

function dismissProblems() {
  page.problemsSeen = page.problemsShown;
  localStorage.setItem("pipebot-sandbox-problems-seen", String(page.problemsSeen));
  keepingEnds(() => { $("problems").hidden = true; });
}

function showArchived(channel) {
  const archived = Boolean(channel.archived);
  $("channel-title").textContent = `# ${channel.name}` + (archived ? " (archived)" : "");
  $("archive").hidden = archived;
  $("composer").hidden = archived;
  $("archived").hidden = !archived;
}

function apply(state) {
  page.since = state.version;
  if (!page.usersListed) {
    const select = $("user");
    state.users.forEach((u) => {
      const option = document.createElement("option");
      option.value = u.id;
      option.textContent = `${u.name} · ${u.title}`;
      select.append(option);
    });
    page.usersListed = true;
  }
  page.user = state.user;
  $("user").value = state.user;
  document.body.classList.toggle("starting", !state.ready);
  $("push").hidden = !state.can_push;
  showArchived(state.channel);
  setHtml("timeline", state.channel.html || '<p class="empty">No messages yet.</p>');
  setHtml("home", state.home);
  setHtml("dms", state.dms || '<p class="empty">No messages.</p>');
  if (state.thread && state.thread.ts === page.thread) {
    setHtml("thread", state.thread.html || '<p class="empty">This message is gone.</p>');
  }
  showModal(state.modal);
  showProblems(state.problems);
}

async function loop() {
  for (;;) {
    const controller = new AbortController();
    page.poll = controller;
    const query = new URLSearchParams({ user: page.user, since: page.since, thread: page.thread });
    try {
      const response = await fetch("/sandbox/state?" + query, { signal: controller.signal });
      if (!response.ok) throw new Error(String(response.status));
      apply(await response.json());
    } catch (error) {
      if (!controller.signal.aborted) await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

function refresh() {
  page.since = -1;
  if (page.poll) page.poll.abort();
}

function openThread(ts) {
  page.thread = ts;
  page.shown.thread = null;
  $("thread").innerHTML = "";
  $("thread-pane").hidden = false;
  refresh();
}

function showPane(name) {
  page.pane = name;
  $("channel-pane").hidden = name !== "channel";
  $("home-pane").hidden = name !== "home";
  $("nav-channel").classList.toggle("active", name === "channel");
  $("nav-home").classList.toggle("active", name === "home");
  if (name === "home") act("home", {});
}

function confirmFirst(element) {
  const raw = element.dataset.confirm;
  if (!raw) return Promise.resolve(true);
  const spec = JSON.parse(raw);
  const dialog = $("confirm");
  $("confirm-title").textContent = spec.title;
  $("confirm-text").textContent = spec.text;
  $("confirm-ok").textContent = spec.confirm;
  $("confirm-deny").textContent = spec.deny;
  $("confirm-ok").className = "sk-button " + (spec.style === "danger" ? "danger" : "primary");
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

function where(element) {
  const message = element.closest("[data-ts]");
  if (message) return { channel: message.dataset.channel, ts: message.dataset.ts };
  const view = element.closest("[data-view]");
  if (view) return { view: view.dataset.view };
  return null;
}

async function click(element, selected) {
  const target = where(element);
  if (!target) return;
  if (!(await confirmFirst(element))) return;
  if (element.dataset.url) window.open(element.dataset.url, "_blank", "noopener");
  await act("click", Object.assign(target, {
    block: element.dataset.block,
    action: element.dataset.action,
    selected: selected || "",
  }));
}

// Escape closes the open modal, as in Slack (Slack tells the bot, as the Close button
// does). A confirmation dialog on top closes first, by itself.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || $("confirm").open) return;
  const form = $("modal-layer").hidden ? null : $("modal-layer").querySelector("form.modal");
  if (!form) return;
  event.preventDefault();
  act("close", { view: form.dataset.view });
});

document.addEventListener("click", (event) => {
  const element = event.target.closest("button, a");
  if (!element) return;
  if (element.id === "dismiss-problems") { dismissProblems(); return; }
  if (element.dataset.thread) { openThread(element.dataset.thread); return; }
  if (element.dataset.dismiss) { act("dismiss", { ts: element.dataset.dismiss }); return; }
  if ("close" in element.dataset) {
    const form = element.closest("form.modal");
    if (form) act("close", { view: form.dataset.view });
    return;
  }
  if (element.matches("button[data-action]")) { click(element); }
});

document.addEventListener("change", (event) => {
  const element = event.target;
  if (element.matches("select.sk-select[data-action]") && !element.closest("form.modal")) {
    click(element, element.value);
  }
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.matches("form.modal")) return;
  event.preventDefault();
  const inputs = {};
  form.querySelectorAll(".sk-input[data-block][data-action]").forEach((field) => {
    inputs[field.dataset.block] = inputs[field.dataset.block] || {};
    inputs[field.dataset.block][field.dataset.action] = field.value;
  });
  act("submit", { view: form.dataset.view, inputs });
});

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value;
    if (!text.trim()) return;
    $("message").value = "";
    act("message", { channel: RELEASES, text });
  });
  $("thread-composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("reply").value;
    if (!text.trim() || !page.thread) return;
    $("reply").value = "";
    act("message", { channel: RELEASES, text, thread_ts: page.thread });
  });
  $("close-thread").addEventListener("click", () => {
    page.thread = "";
    $("thread-pane").hidden = true;
    refresh();
  });
  $("user").addEventListener("change", () => {
    page.user = $("user").value;
    localStorage.setItem("pipebot-sandbox-user", page.user);
    refresh();
    if (page.pane === "home") act("home", {});
  });
  $("nav-channel").addEventListener("click", () => showPane("channel"));
  $("nav-home").addEventListener("click", () => showPane("home"));
  $("push").addEventListener("click", () => act("push", {}));
  $("archive").addEventListener("click", () => act("archive", { channel: RELEASES }));
  $("unarchive").addEventListener("click", () => act("unarchive", { channel: RELEASES }));
  loop();
});
