"""The task's Python side: the functions the page may call (``function_registry``), each run on a
Celery worker. ``classify`` stands in for a model: slow on purpose (about a second), so the page shows
that the call is in flight."""

import time

POSITIVE = {"good", "great", "nice", "love", "happy", "excellent", "fine", "wonderful"}
NEGATIVE = {"bad", "awful", "terrible", "hate", "sad", "poor", "horrible", "wrong"}


def classify(request_id, args, agent_state):
    """A toy sentiment model: counts positive and negative words of ``args["text"]``."""
    time.sleep(1.0)
    words = [w.strip(".,!?;:").lower() for w in str(args.get("text", "")).split()]
    score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    return {"label": label, "score": score, "prompt_id": agent_state.init_data.get("id")}


function_registry = {"classify": classify}
