// The review app's only script: a run's (or a bulk decision's) live part refreshes itself, until a
// finished batch says so; a task's review bundle gets each unit's data; a bulk decision asks first.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (live && live.dataset.src) {
    let timer = null;
    const refresh = async () => {
      try {
        const answer = await fetch(live.dataset.src, { credentials: "same-origin" });
        if (answer.ok) { live.innerHTML = await answer.text(); live.classList.remove("stale"); }
        else { live.classList.add("stale"); }
      } catch (error) { live.classList.add("stale"); }
      if (live.querySelector("[data-finished=true]")) { clearInterval(timer); }
    };
    timer = setInterval(refresh, live.dataset.every ? Number(live.dataset.every) : 3000);
  }
  // A task's review bundle in its frame, as Mephisto's TaskReview client talks to it: once the frame has
  // loaded, the unit's data as a JSON message {"REVIEW_DATA": {inputs, outputs}}; the bundle answers with
  // its height ({"IFRAME_DATA": {height}}) and may ask to open a file ({"IN_REVIEW_FILE_DATA": ...}).
  const frames = Array.from(document.querySelectorAll("iframe.review-bundle"));
  for (const frame of frames) {
    const send = () => { frame.contentWindow.postMessage(frame.dataset.review, window.location.origin); };
    frame.addEventListener("load", send);
  }
  window.addEventListener("message", (event) => {
    if (event.origin !== window.location.origin || typeof event.data !== "string") { return; }
    const frame = frames.find((f) => f.contentWindow === event.source);
    if (!frame) { return; }
    let data;
    try { data = JSON.parse(event.data); } catch (error) { return; }
    if (data && data.IFRAME_DATA && Number(data.IFRAME_DATA.height) > 0) {
      frame.height = String(Math.ceil(Number(data.IFRAME_DATA.height)));
    } else if (data && data.IN_REVIEW_FILE_DATA) {
      const unit = frame.closest("article.unit").id.slice(1);
      const file = data.IN_REVIEW_FILE_DATA;
      const path = file.fieldname ? "fieldname/" + encodeURIComponent(file.fieldname)
                                  : encodeURIComponent(file.filename || "");
      window.open("/api/units/" + unit + "/static/" + path, "_blank", "noopener");
    }
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) { event.preventDefault(); }
  });
})();
