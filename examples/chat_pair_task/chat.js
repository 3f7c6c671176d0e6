// The chat page of examples/chat_pair_task, hand-written (no build step): what mephisto-task's live hooks
// do, in plain JavaScript. It asks the router for an agent (POST /request_agent with the provider's
// getAgentRegistration(), from wrap_crowd_source.js), opens the live socket at "/" (alive, a heartbeat every
// 6 s, mephisto_bound_live_update for each message), shows what the TaskRunner sends
// (client_bound_live_update) and the status it is told (update_status), and submits with POST /submit_task
// once the runner says task_done (or the partner left: Mephisto lets the worker submit as is).
(function () {
  "use strict";
  var HEARTBEAT_MS = 6000;
  var RECONNECT_MS = 2000;
  var STATUS_TEXT = {
    "waiting": "Waiting for a partner to join...",
    "in task": "",
    "partner disconnect": "Your partner has disconnected. We won't penalize you for them leaving, " +
      "so please submit this task as is.",
    "disconnect": "You have disconnected from our server during the task.",
    "timeout": "You took too long to respond, and have timed out. The task is no longer available.",
    "expired": "This task is no longer available to be completed. Please return it and try a different task.",
    "returned": "You returned this task.",
    "completed": "Submitted, thank you.",
  };
  var ENDED = ["disconnect", "timeout", "expired", "returned"];

  var app = document.getElementById("app");
  var agentId = null;
  var socket = null;
  var seen = {};
  var canSubmit = false;
  var submitted = false;
  var ended = false;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function uuid() {
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
    });
  }

  function postJson(path, body) {
    return fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) { throw new Error(data.error || ("the server answered " + response.status)); }
        return data;
      });
    });
  }

  // The page's parts, built once the agent is known.
  var view = {};

  function build(taskConfig, taskData) {
    app.textContent = "";
    app.appendChild(el("h1", {}, taskConfig.task_title || "Chat"));
    app.appendChild(el("p", { id: "topic" }, "Topic: " + (taskData.topic || "anything")));
    view.status = app.appendChild(el("p", { id: "status", class: "status" }));
    view.log = app.appendChild(el("div", { id: "messages", class: "messages" }));
    var form = app.appendChild(el("form", { id: "compose" }));
    view.input = form.appendChild(el("input", { id: "message", type: "text", autocomplete: "off",
                                                placeholder: "Write a message" }));
    view.send = form.appendChild(el("button", { id: "send", type: "submit" }, "Send"));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      sendMessage(view.input.value);
    });
    view.done = app.appendChild(el("div", { id: "done-area", hidden: "" }));
    view.done.appendChild(el("label", { for: "rating" }, "How was the conversation (1-5)? "));
    view.rating = view.done.appendChild(el("input", { id: "rating", type: "number", min: "1", max: "5",
                                                       value: "5" }));
    view.submit = view.done.appendChild(el("button", { id: "submit", type: "button" }, "Submit"));
    view.submit.addEventListener("click", submit);
    setComposing(false);
  }

  function setComposing(on) {
    view.input.disabled = !on;
    view.send.disabled = !on;
  }

  function showStatus(status) {
    var text = STATUS_TEXT.hasOwnProperty(status) ? STATUS_TEXT[status] : "";
    view.status.textContent = text;
    view.status.setAttribute("data-status", status);
    if (status === "in task") { setComposing(!canSubmit); }
    if (status === "partner disconnect") { offerSubmit(); }
    if (ENDED.indexOf(status) >= 0) {
      ended = true;
      setComposing(false);
      view.done.hidden = true;
    }
  }

  function addMessage(who, text) {
    var line = view.log.appendChild(el("p", { class: "message " + who }));
    line.appendChild(el("b", {}, who === "mine" ? "You: " : who === "partner" ? "Partner: " : ""));
    line.appendChild(document.createTextNode(text));
    view.log.scrollTop = view.log.scrollHeight;
  }

  function offerSubmit() {
    if (ended || submitted) { return; }
    canSubmit = true;
    setComposing(false);
    view.done.hidden = false;
  }

  function onLiveUpdate(data) {
    if (data.update_id) {
      if (seen[data.update_id]) { return; }  // a resend after a reconnect
      seen[data.update_id] = true;
    }
    var taskData = data.task_data || {};
    if (typeof data.text === "string" && data.text !== "") {
      // The runner's own lines carry task_data; a partner's relayed message carries its speaker.
      addMessage(data.speaker !== undefined ? "partner" : "system", data.text);
    }
    if (taskData.task_done) { offerSubmit(); }
  }

  function send(packet) {
    packet.client_timestamp = Date.now() / 1000;
    if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(packet)); }
  }

  function sendMessage(text) {
    text = (text || "").trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) { return; }
    send({ packet_type: "mephisto_bound_live_update", subject_id: agentId,
           data: { text: text, id: agentId, episode_done: false, update_id: uuid() } });
    addMessage("mine", text);
    view.input.value = "";
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + "/");
    var beat = null;
    socket.onopen = function () {
      send({ packet_type: "alive", subject_id: agentId, data: { update_id: uuid() } });
      beat = setInterval(function () { send({ packet_type: "heartbeat", subject_id: agentId }); }, HEARTBEAT_MS);
    };
    socket.onmessage = function (event) {
      var packet = JSON.parse(event.data);
      var data = packet.data || {};
      if (packet.packet_type === "update_status") { showStatus(data.status); }
      else if (packet.packet_type === "client_bound_live_update") { onLiveUpdate(data); }
    };
    socket.onclose = function () {
      clearInterval(beat);
      if (!submitted && !ended) { setTimeout(connect, RECONNECT_MS); }
    };
  }

  function submit() {
    view.submit.disabled = true;
    var finalData = { rating: Number(view.rating.value) };
    postJson("/submit_task", { USED_AGENT_ID: agentId, final_data: finalData }).then(function () {
      submitted = true;
      if (typeof handleSubmitToProvider === "function") { handleSubmitToProvider(finalData); }
      if (socket) { socket.close(); }
      app.textContent = "";
      app.appendChild(el("h1", { id: "thanks" }, STATUS_TEXT.completed));
    }).catch(function (error) {
      view.submit.disabled = false;
      view.status.textContent = "Not submitted: " + error.message;
    });
  }

  function start() {
    var registration = getAgentRegistration();
    fetch("/task_config.json").then(function (r) { return r.json(); }).then(function (taskConfig) {
      if (!registration.worker_name || !registration.assignment_id) {
        app.textContent = "";
        app.appendChild(el("h1", { id: "preview" }, taskConfig.task_title || "Chat"));
        app.appendChild(el("p", {}, taskConfig.task_description || ""));
        return null;
      }
      return postJson("/request_agent", { provider_data: registration, client_timestamp: Date.now() / 1000 })
        .then(function (answer) {
          var details = answer.data || {};
          if (!details.agent_id) {
            app.textContent = "";
            app.appendChild(el("h1", { id: "blocked" }, details.failure_reason || "No task is available for you."));
            return;
          }
          agentId = details.agent_id;
          var init = details.init_task_data || {};
          build(taskConfig, init.task_data || {});
          connect();
        });
    }).catch(function (error) {
      app.textContent = "";
      app.appendChild(el("h1", { id: "error" }, "This task could not start: " + error.message));
    });
  }

  var style = document.createElement("style");
  style.textContent = "body{font-family:sans-serif;max-width:40em;margin:2em auto}" +
    ".messages{border:1px solid #ccc;height:16em;overflow-y:auto;padding:.5em;margin:.5em 0}" +
    ".message{margin:.2em 0}.message.system{color:#666;font-style:italic}.status{color:#a40}" +
    "#compose input{width:75%}#done-area{margin-top:1em}";
  document.head.appendChild(style);
  start();
})();
