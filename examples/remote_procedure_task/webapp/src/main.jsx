// A React page on mephisto-task's useMephistoRemoteProcedureTask, in the shape of Mephisto's
// remote_procedure template: the worker writes a sentence, asks the task's Python function (slow on
// purpose, like a model) what it thinks, and submits the sentence with the answer it got.
import React from "react";
import { createRoot } from "react-dom/client";
import { useMephistoRemoteProcedureTask, getBlockedExplanation } from "mephisto-task";

function Task({ taskData, previousRequests, classify, onSubmit, disconnectIssueText }) {
  const [text, setText] = React.useState(taskData.text);
  const [asking, setAsking] = React.useState(false);
  const [answer, setAnswer] = React.useState(null);
  const ask = () => {
    setAsking(true);
    classify({ text })
      .then((response) => setAnswer(response))
      .catch((reason) => setAnswer({ error: reason.reason || "disconnected" }))
      .finally(() => setAsking(false));
  };
  return (
    <div id="task">
      <p id="prompt">{taskData.prompt}</p>
      <p id="calls-before">{previousRequests.length} earlier call(s)</p>
      <textarea id="text" value={text} onChange={(e) => setText(e.target.value)} />
      <button id="ask" disabled={asking} onClick={ask}>{asking ? "Asking..." : "Ask the model"}</button>
      {answer === null ? null : answer.error ? (
        <p id="answer-error">{answer.error}</p>
      ) : (
        <p id="answer">{answer.label} ({answer.score})</p>
      )}
      {disconnectIssueText ? <p id="disconnected">{disconnectIssueText}</p> : null}
      <button id="submit" disabled={answer === null} onClick={() => onSubmit({ text, model_answer: answer })}>
        Submit
      </button>
    </div>
  );
}

function MainApp() {
  const {
    blockedReason, blockedExplanation, taskConfig, isPreview, isLoading, agentId, initialTaskData,
    handleSubmit, remoteProcedure, disconnectIssueText,
  } = useMephistoRemoteProcedureTask({});
  const [submitted, setSubmitted] = React.useState(false);

  if (blockedReason !== null) {
    return <h1 id="blocked">{blockedExplanation || getBlockedExplanation(blockedReason)}</h1>;
  }
  if (taskConfig === null) {
    return <div>Initializing...</div>;
  }
  if (isPreview) {
    return <div id="preview"><h1>{taskConfig.task_title}</h1><p>{taskConfig.task_description}</p></div>;
  }
  if (isLoading || agentId === null || initialTaskData === null) {
    return <div>Initializing...</div>;
  }
  if (submitted) {
    return <h1 id="done">Submitted, thank you.</h1>;
  }
  const submit = (data) => {
    setSubmitted(true);
    handleSubmit(data);
  };
  return (
    <Task
      taskData={initialTaskData.task_data}
      previousRequests={initialTaskData.previous_requests || []}
      classify={remoteProcedure("classify")}
      onSubmit={submit}
      disconnectIssueText={disconnectIssueText}
    />
  );
}

createRoot(document.getElementById("app")).render(<MainApp />);
