/* wrap_crowd_source.js of the mock provider: the globals mephisto-task's front end calls to learn who
 * the worker is and to tell the provider about a submission. A mock worker is named by the page URL's
 * worker_id and assignment_id; without them the page is a preview. */
function getWorkerName() {
  return new URLSearchParams(window.location.search).get("worker_id");
}

function getAssignmentId() {
  return new URLSearchParams(window.location.search).get("assignment_id");
}

function getWorkerRegistrationInfo() {
  return { worker_name: getWorkerName(), provider_type: "mock" };
}

function getAgentRegistration() {
  var worker = getWorkerName();
  var assignment = getAssignmentId();
  return {
    worker_name: worker,
    worker_id: worker,
    agent_registration_id: assignment + "-" + worker,
    assignment_id: assignment,
    provider_type: "mock",
  };
}

function handleSubmitToProvider(task_data) {
  // The mock marketplace has nothing to be told.
  return true;
}
