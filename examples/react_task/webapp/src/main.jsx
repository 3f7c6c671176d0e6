// A React task page on mephisto-task's useMephistoTask hook, in the shape of Mephisto's
// static_react_task example: rate a sentence as good or bad; onboarding asks one question first; a
// worker may leave a tip or feedback (handleMetadataSubmit) before submitting.
import React from "react";
import { createRoot } from "react-dom/client";
import { useMephistoTask, getBlockedExplanation } from "mephisto-task";

function Onboarding({ onSubmit }) {
  return (
    <div id="onboarding">
      <h2>Before you start</h2>
      <p>Is "The cat sat on the mat." a good sentence?</p>
      <button id="onboarding-yes" onClick={() => onSubmit({ success: true })}>Yes</button>
      <button id="onboarding-no" onClick={() => onSubmit({ success: false })}>No</button>
    </div>
  );
}

function Task({ taskData, onSubmit, onMetadata }) {
  const [note, setNote] = React.useState("");
  const [noteSent, setNoteSent] = React.useState(false);
  // The shapes Mephisto's worker add-ons send: a tip has a header and a text; feedback lists answers.
  const sendTip = () =>
    onMetadata({ type: "tips", header: "Tip", text: note }).then(() => setNoteSent(true));
  const sendFeedback = () =>
    onMetadata({ type: "feedback", data: [{ question: "Anything to tell us?", text: note }] })
      .then(() => setNoteSent(true));
  return (
    <div id="task">
      <p id="sentence">{taskData.text}</p>
      <textarea id="note" value={note} onChange={(e) => setNote(e.target.value)} />
      <button id="send-tip" onClick={sendTip}>Send as tip</button>
      <button id="send-feedback" onClick={sendFeedback}>Send as feedback</button>
      {noteSent ? <span id="note-sent">Thank you!</span> : null}
      <div>
        <button id="good" onClick={() => onSubmit({ rating: "good" })}>Good</button>
        <button id="bad" onClick={() => onSubmit({ rating: "bad" })}>Bad</button>
      </div>
    </div>
  );
}

function MainApp() {
  const {
    blockedReason, blockedExplanation, taskConfig, isPreview, isLoading, agentId, initialTaskData,
    handleSubmit, handleMetadataSubmit, isOnboarding,
  } = useMephistoTask();
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
  if (isOnboarding) {
    return <Onboarding onSubmit={handleSubmit} />;
  }
  if (submitted) {
    return <h1 id="done">Submitted, thank you.</h1>;
  }
  const submit = (data) => {
    setSubmitted(true);
    handleSubmit(data);
  };
  return <Task taskData={initialTaskData} onSubmit={submit} onMetadata={handleMetadataSubmit} />;
}

createRoot(document.getElementById("app")).render(<MainApp />);
