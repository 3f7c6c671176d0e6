/* wrap_crowd_source.js of the inhouse provider: the globals mephisto-task's front end calls to learn who
 * the annotator is and to tell the provider about a submission. As Mephisto's inhouse provider names them:
 * the page URL's worker_id is the annotator, its id a pseudo assignment id; without them the page is a
 * preview. */
function getWorkerName() {
  return new URLSearchParams(window.location.search).get("worker_id");
}

function getAssignmentId() {
  return new URLSearchParams(window.location.search).get("id");
}

function getWorkerRegistrationInfo() {
  return { worker_name: getWorkerName(), provider_type: "inhouse" };
}

function getAgentRegistration() {
  var worker = getWorkerName();
  var assignment = getAssignmentId();
  return {
    worker_name: worker,
    worker_id: worker,
    agent_registration_id: assignment + "-" + worker,
    assignment_id: assignment,
    provider_type: "inhouse",
  };
}

function handleSubmitToProvider(task_data) {
  // No marketplace to tell: the annotator opens the URL again for the next unit.
  return true;
}
