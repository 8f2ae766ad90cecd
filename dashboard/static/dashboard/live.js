// Live progress of prefetch jobs: every row or panel with data-job-url that is not finished
// is refreshed from the REST API (same origin, the admin's session) until it is; the job's
// own page (data-reload-when-finished) is then reloaded to show the job as it ended.
(function () {
  "use strict";
  var INTERVAL = 1500;

  function update(element, job) {
    var status = element.querySelector(".job-status");
    if (status) status.textContent = job.status_display;
    var detail = element.querySelector(".job-detail");
    if (detail) detail.textContent = job.progress_text;
    var bar = element.querySelector("progress");
    if (bar && job.progress !== null) bar.value = job.progress;
    element.dataset.status = job.status;
    element.dataset.finished = job.finished ? "true" : "false";
    // The job's own page shows every field of the job: show them as they ended.
    if (job.finished && element.dataset.reloadWhenFinished === "true") window.location.reload();
  }

  function poll() {
    var pending = document.querySelectorAll('[data-job-url][data-finished="false"]');
    if (!pending.length) return;
    var requests = Array.prototype.map.call(pending, function (element) {
      return fetch(element.dataset.jobUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (job) { if (job) update(element, job); })
        .catch(function () { /* try again next time */ });
    });
    Promise.all(requests).then(function () { setTimeout(poll, INTERVAL); });
  }

  document.addEventListener("DOMContentLoaded", function () { setTimeout(poll, INTERVAL); });
})();
