/* wrap_crowd_source.js of the prolific provider: the globals mephisto-task's front end calls to learn who
 * the participant is and to hand the submission back to Prolific. Prolific fills the study URL's
 * participant_id, study_id and submission_id (Mephisto's names); once the work is submitted the page
 * sends the participant to complete_url, Prolific's completion page with the study's code. */
function prolificParam(name) {
  return new URLSearchParams(window.location.search).get(name);
}

function getWorkerName() {
  return prolificParam("participant_id");
}

function getAssignmentId() {
  return prolificParam("submission_id");
}

function getWorkerRegistrationInfo() {
  return { worker_name: getWorkerName(), provider_type: "prolific" };
}

function getAgentRegistration() {
  var worker = getWorkerName();
  var submission = getAssignmentId();
  return {
    worker_name: worker,
    worker_id: worker,
    agent_registration_id: submission + "-" + worker,
    assignment_id: submission,
    prolific_study_id: prolificParam("study_id"),
    provider_type: "prolific",
  };
}

function handleSubmitToProvider(task_data) {
  var complete = prolificParam("complete_url");
  if (complete && /^https?:\/\//.test(complete)) {
    window.location.href = complete;
  }
  return true;
}
