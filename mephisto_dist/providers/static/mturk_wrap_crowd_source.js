/* wrap_crowd_source.js of the mturk and mturk_sandbox providers: the globals mephisto-task's front end
 * calls. MTurk opens the task with assignmentId, hitId, workerId and turkSubmitTo in the URL; in preview
 * the assignmentId is ASSIGNMENT_ID_NOT_AVAILABLE and there is no worker yet. After our own submit the
 * assignment is completed on MTurk by posting it to turkSubmitTo/mturk/externalSubmit. */
var MTURK_PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE";

function mturkParam(name) {
  return new URLSearchParams(window.location.search).get(name);
}

function getWorkerName() {
  return mturkParam("workerId");
}

function getAssignmentId() {
  var assignment = mturkParam("assignmentId");
  return assignment === MTURK_PREVIEW_ASSIGNMENT ? null : assignment;
}

function getWorkerRegistrationInfo() {
  return { worker_name: getWorkerName(), provider_type: "mturk" };
}

function getAgentRegistration() {
  var worker = getWorkerName();
  var assignment = getAssignmentId();
  return {
    worker_name: worker,
    worker_id: worker,
    agent_registration_id: assignment + "-" + worker,
    assignment_id: assignment,
    hit_id: mturkParam("hitId"),
    provider_type: "mturk",
  };
}

function handleSubmitToProvider(task_data) {
  var submitTo = mturkParam("turkSubmitTo");
  var assignment = getAssignmentId();
  if (!submitTo || !assignment) {
    return false;
  }
  var form = document.createElement("form");
  form.method = "POST";
  form.action = submitTo.replace(/\/$/, "") + "/mturk/externalSubmit";
  var field = document.createElement("input");
  field.type = "hidden";
  field.name = "assignmentId";
  field.value = assignment;
  form.appendChild(field);
  document.body.appendChild(form);
  form.submit();
  return true;
}
