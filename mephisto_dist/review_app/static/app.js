// The review app's only script: a run's (or a bulk decision's) live part refreshes itself, until a
// finished batch says so, and a bulk decision asks first.
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
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) { event.preventDefault(); }
  });
})();
