// The worker-facing page of a static HTML task: asks the router for an agent, fills the task HTML with
// the unit's data, and submits every field of the form (files included) as Mephisto's static task does.
// An agent whose id starts with "onboarding_" gets the onboarding page in the same form first; its
// answers go to /submit_onboarding, whose answer (a unit, or a refusal) continues in the same page.
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.search);
  var statusEl = document.getElementById("shell-status");
  var form = document.getElementById("task-form");
  var content = document.getElementById("task-content");
  var previewEl = document.getElementById("preview-content");
  var submitButton = document.getElementById("submit-button");
  var noticeEl = document.getElementById("shell-notice");

  // Mephisto's inhouse provider names the (pseudo) assignment "id"; Prolific's study URL carries
  // participant_id, study_id and submission_id, and complete_url to return to Prolific with the code.
  var workerName = params.get("worker_id") || params.get("workerId") || params.get("participant_id");
  var assignmentRef = params.get("assignment_id") || params.get("assignmentId") || params.get("id") ||
    params.get("submission_id");
  var hitId = params.get("hitId");
  var turkSubmitTo = params.get("turkSubmitTo");
  var prolificStudy = params.get("study_id");
  var completeUrl = params.get("complete_url");
  var providerType = params.get("provider_type") || (params.get("workerId") ? "mturk" :
    (prolificStudy ? "prolific" : "mock"));
  var isPreview = !workerName || !assignmentRef || assignmentRef === "ASSIGNMENT_ID_NOT_AVAILABLE";
  var CLOSED = "This task has been closed (its server no longer answers), so your work was not recorded. " +
    "You can close this page.";
  var RETRY_FIRST_S = 2;
  var RETRY_MAX_S = 30;
  var agentId = null;
  var onboarding = false;

  function say(text, kind) {
    statusEl.textContent = text;
    statusEl.className = "status" + (kind ? " " + kind : "");
    statusEl.hidden = false;
  }

  function postJson(path, body) {
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }).then(readResponse);
  }

  function readResponse(response) {
    return response.text().then(function (text) {
      var data = null;
      try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { error: text }; }
      if (!response.ok) {
        var failure = new Error((data && data.error) || ("the server answered " + response.status));
        failure.status = response.status;
        throw failure;
      }
      return data;
    });
  }

  function fill(template, values) {
    var html = template;
    Object.keys(values).forEach(function (key) {
      if (key === "html") { return; }
      html = html.split("${" + key + "}").join(String(values[key]));
    });
    return html;
  }

  function runScripts(container) {
    // Scripts inserted with innerHTML do not run; re-create them so the task's own code executes.
    container.querySelectorAll("script").forEach(function (old) {
      var script = document.createElement("script");
      Array.prototype.forEach.call(old.attributes, function (attr) {
        script.setAttribute(attr.name, attr.value);
      });
      script.text = old.text;
      old.parentNode.replaceChild(script, old);
    });
  }

  function showPreview(config) {
    var has = config && config.has_preview;
    if (!has) {
      say("Preview: accept the task to begin.");
      return;
    }
    fetch("/preview.html").then(function (r) { return r.text(); }).then(function (html) {
      statusEl.hidden = true;
      previewEl.innerHTML = html;
      previewEl.hidden = false;
      runScripts(previewEl);
    });
  }

  function startTask(initData) {
    var source = initData.html;
    return fetch("/" + encodeURIComponent(source)).then(function (r) {
      if (!r.ok) { throw new Error("the page " + source + " could not be loaded"); }
      return r.text();
    }).then(function (template) {
      var html = fill(template, initData);
      html = html.split("${mephisto_agent_id}").join(agentId);
      html = html.split("${provider_worker_id}").join(workerName);
      content.innerHTML = html;
      statusEl.hidden = true;
      noticeEl.hidden = !onboarding;
      submitButton.disabled = false;
      form.hidden = false;
      runScripts(content);
      window.mephistoAgentId = agentId;
      window.scrollTo(0, 0);
    });
  }

  // An agent_details packet (from /request_agent or /submit_onboarding): a refusal, or the page to show.
  function follow(packet) {
    var details = packet.data || {};
    if (!details.agent_id) {
      form.hidden = true;
      noticeEl.hidden = true;
      content.innerHTML = "";
      say(details.failure_reason || "There is no work available for you right now.", "error");
      return null;
    }
    agentId = details.agent_id;
    onboarding = agentId.indexOf("onboarding_") === 0;
    return startTask(details.init_task_data || {});
  }

  function collect() {
    var data = new FormData(form);
    var fields = {};
    var upload = new FormData();
    data.forEach(function (value, key) {
      if (value instanceof File) {
        if (value.name) { upload.append(key, value, value.name); }
        return;
      }
      if (Object.prototype.hasOwnProperty.call(fields, key)) {
        fields[key] = [].concat(fields[key], value);
      } else {
        fields[key] = value;
      }
    });
    upload.append("USED_AGENT_ID", agentId);
    upload.append("final_string_data", JSON.stringify(fields));
    return { fields: fields, upload: upload };
  }

  function submitOnboarding() {
    say("Checking your answers…");
    return postJson("/submit_onboarding", { USED_AGENT_ID: agentId, onboarding_data: collect().fields })
      .then(follow)
      .catch(function (error) {
        submitButton.disabled = false;
        say("Your answers could not be sent: " + error.message, "error");
      });
  }

  function finishOnProlific() {
    if (!completeUrl || !/^https?:\/\//.test(completeUrl)) { return; }
    say("Thank you! Your work has been submitted. Taking you back to Prolific…", "done");
    window.location.href = completeUrl;
  }

  function finishOnMturk() {
    if (!turkSubmitTo) { return; }
    var external = document.createElement("form");
    external.method = "POST";
    external.action = turkSubmitTo.replace(/\/$/, "") + "/mturk/externalSubmit";
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = "assignmentId";
    input.value = assignmentRef;
    external.appendChild(input);
    document.body.appendChild(external);
    external.submit();
  }

  // The task is over for this page: the answers stay visible (greyed), nothing can be sent any more.
  function closeForm(text) {
    Array.prototype.forEach.call(form.elements, function (element) { element.disabled = true; });
    submitButton.hidden = true;
    form.classList.add("closed");
    form.setAttribute("aria-disabled", "true");
    say(text, "error");
  }

  // A 503 is a service the server needs that is down for longer than it waits out itself (it says
  // nothing was recorded): the page keeps the answers and sends them again, waiting longer each time.
  function retryLater(attempt) {
    var delayS = Math.min(RETRY_MAX_S, RETRY_FIRST_S * Math.pow(2, attempt));
    var tick = function () {
      if (delayS <= 0) {
        say("Sending your work again…", "retrying");
        sendSubmission(attempt + 1);
        return;
      }
      say("The task server cannot record your work right now. Your answers are kept on this page and " +
        "will be sent again in " + delayS + " s: please keep this page open.", "retrying");
      delayS -= 1;
      window.setTimeout(tick, 1000);
    };
    tick();
  }

  // fetch fails outright (a TypeError) when nothing answers: ask once more whether the server is there;
  // if it is, this was a blip and the answers go again; if not, the run was shut down.
  function checkClosed(attempt) {
    say("Sending your work…", "retrying");
    window.setTimeout(function () {
      fetch("/is_alive", { cache: "no-store" }).then(function (response) {
        if (!response.ok) { throw new Error("not alive"); }
        retryLater(attempt);
      }).catch(function () { closeForm(CLOSED); });
    }, 1000);
  }

  // Each attempt sends the answers as the page holds them then (the submit is recorded at most once).
  function sendSubmission(attempt) {
    fetch("/submit_task", { method: "POST", body: collect().upload }).then(readResponse).then(function () {
      form.hidden = true;
      say("Thank you! Your work has been submitted.", "done");
      finishOnMturk();
      finishOnProlific();
    }).catch(function (error) {
      if (error instanceof TypeError) {
        checkClosed(attempt);
      } else if (error.status === 503 || error.status === 502 || error.status === 504) {
        retryLater(attempt);
      } else if (error.status === 409) {
        form.hidden = true;  // the unit is no longer this worker's: the server says why
        say(error.message, "error");
      } else {
        submitButton.disabled = false;
        say("Your work could not be submitted: " + error.message, "error");
      }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!form.reportValidity()) { return; }
    submitButton.disabled = true;
    if (onboarding) { submitOnboarding(); return; }
    say("Submitting…");
    sendSubmission(0);
  });

  fetch("/task_config.json").then(readResponse).then(function (config) {
    if (config.task_title) { document.title = config.task_title; }
    if (isPreview) { showPreview(config); return null; }
    var providerData = {
      worker_name: workerName,
      assignment_id: assignmentRef,
      agent_registration_id: assignmentRef + "-" + workerName,
      provider_type: providerType,
    };
    if (hitId) { providerData.hit_id = hitId; }
    if (prolificStudy) { providerData.prolific_study_id = prolificStudy; }
    return postJson("/request_agent", { provider_data: providerData, client_timestamp: Date.now() / 1000 })
      .then(follow);
  }).catch(function (error) {
    say("The task could not be loaded: " + error.message, "error");
  });
})();
