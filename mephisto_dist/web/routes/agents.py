"""``/request_agent`` and ``/submit_onboarding``: a worker gets an agent (or onboarding, or a refusal)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mephisto_dist.metrics import record_agent_answer
from mephisto_dist.runners import channel as live_channel
from mephisto_dist.web.bodies import agent_id_of, json_body, json_object
from mephisto_dist.web.context import WebContext, context_of
from mephisto_dist.work import registration as service
from mephisto_dist.work.claims import Registration


async def request_agent(request: Request) -> Response:
    context = context_of(request)
    return JSONResponse(await agent_details(context, await json_body(request, context.max_body_bytes)))


async def agent_details(context: WebContext, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a ``/request_agent`` body (``web.hot_routes`` serves it without a ``Request``)."""
    reg = Registration.from_request(body)
    served = context.served
    details = await context.call_first(lambda statements, run: service.request_agent_on_loop(served, statements, run, reg),
                                       service.request_agent, served, reg)
    record_agent_answer(details.failure_reason, details.agent_id)
    return details.packet()


async def submit_onboarding(request: Request) -> Response:
    context = context_of(request)
    body = await json_body(request, context.max_body_bytes)
    nested = body.get("provider_data")
    if isinstance(nested, dict) and "USED_AGENT_ID" in nested:
        # What mephisto-task sends: the agent id and the answers inside provider_data.
        body = nested
    # bootstrap-chat submits an onboarding world with no data (handleSubmit()): the key is then absent.
    data = json_object(body, "onboarding_data", "submit_onboarding") if "onboarding_data" in body else {}
    agent_id = agent_id_of(body)
    verdict = None
    if (await context.run()).hooks.plays_onboarding:
        verdict = await context.call_in_thread(live_channel.onboarding_verdict, context.served, agent_id, data)
    details = await context.call_in_thread(service.submit_onboarding, context.served, agent_id, data,
                                           verdict=verdict)
    return JSONResponse(details.packet())


ROUTES = [
    Route("/request_agent", request_agent, methods=["POST"]),
    Route("/submit_onboarding", submit_onboarding, methods=["POST"]),
]
