"""Every argument a task config may set, declared once.

The loader validates against these tables and the ``wut`` command prints them, so a new argument is
added here and nowhere else. Names, types and defaults follow Mephisto 1.x (``BlueprintArgs`` and its
mixins, ``StaticBlueprintArgs``, ``StaticHTMLBlueprintArgs``, ``ArchitectArgs``, ``LocalArchitectArgs``,
``MockArchitectArgs``, ``ProviderArgs``, ``TaskRunArgs``) so that Mephisto task folders load unchanged.
Where Mephisto declared a value as a string only because its launcher passed it on as text (the local
architect's ``port``), the type here is the one the value really has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mephisto_dist.errors import ConfigError


class _Missing:
    """Type of :data:`MISSING`; printed the way OmegaConf and Mephisto print a missing value."""

    def __repr__(self) -> str:
        return "???"

    def __reduce__(self) -> str:
        return "MISSING"  # copies and pickles stay the one module-level instance


MISSING: Final = _Missing()
"""Default of an argument that has none: the config must give it."""

BLUEPRINT: Final = "blueprint"
ARCHITECT: Final = "architect"
PROVIDER: Final = "provider"
TASK: Final = "task"
CHOICE_KINDS: Final = (BLUEPRINT, ARCHITECT, PROVIDER)
"""Kinds picked by name in the defaults list (``/mephisto/<kind>: <name>``)."""
KINDS: Final = (*CHOICE_KINDS, TASK)


@dataclass(frozen=True)
class Argument:
    """One configurable value: ``mephisto.<kind>.<dest>``.

    ``default`` is :data:`MISSING` for a required argument and ``None`` for an optional one that is
    simply absent unless given. ``minimum`` bounds numbers (inclusive).
    """

    dest: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    required: bool = False
    minimum: float | None = None
    implemented: bool = True
    """False for an argument accepted so that Mephisto's task folders load, whose meaning mephisto-dist
    does not carry out yet: ``wut`` marks it and ``run`` warns when it is set to another value."""

    @property
    def default_text(self) -> str:
        """The default as the ``wut`` table prints it: ``???`` when there is none."""
        return "???" if self.default is MISSING else repr(self.default)


@dataclass(frozen=True)
class Section:
    """The arguments of one blueprint, architect or provider (or of ``mephisto.task``)."""

    kind: str
    name: str
    description: str
    arguments: tuple[Argument, ...]
    implemented: bool = True
    """False for a kind whose arguments are accepted (configs load, ``wut`` lists them) but that cannot
    run yet."""

    @property
    def dests(self) -> tuple[str, ...]:
        return tuple(argument.dest for argument in self.arguments)

    def argument(self, dest: str) -> Argument | None:
        for argument in self.arguments:
            if argument.dest == dest:
                return argument
        return None


# -- blueprints --------------------------------------------------------------------------------------

_BLUEPRINT_BASE = (
    Argument("block_qualification", str, None,
             "Qualification that marks workers soft-blocked from this task; unset blocks nobody."),
    Argument("qualifications", list, None,
             "Qualification requirements a worker must meet (Mephisto's SharedTaskState.qualifications): "
             "a list of {qualification_name, comparator, value[, applicable_providers]}."),
    Argument("hooks_module", str, None,
             "Absolute path of a .py file (e.g. ${task_dir}/hooks.py) defining any of validate_onboarding, "
             "worker_can_do_unit, on_unit_submitted, onboarding_data, task_config."),
    Argument("tips_location", str, None,
             "CSV of accepted tips (header,text) from earlier runs, served in task_config.json's 'tips'."),
    Argument("task_source_review", str, None,
             "JS bundle of the task's review version for Mephisto's TaskReview app (accepted so Mephisto "
             "configs load; mephisto-dist reviews from the command line).", implemented=False),
)

_ONBOARDING = (
    Argument("onboarding_qualification", str, None,
             "Qualification recording the onboarding result; setting it turns onboarding on, and a worker "
             "who fails also gets '<name>-failed'."),
)

_SCREENING = (
    Argument("passed_qualification_name", str, None,
             "Qualification given to workers who passed the screening unit."),
    Argument("max_screening_units", int, None,
             "Most screening units this run may launch (they are paid like any unit).", minimum=0),
    Argument("use_screening_task", bool, False,
             "Give unscreened workers a screening unit first (needs a task script's screening_data_factory "
             "and validator)."),
)

_GOLDS = (
    Argument("gold_qualification_base", str, None,
             "Prefix of the qualifications that count a worker's gold results."),
    Argument("max_gold_units", int, None,
             "Most gold units this run may launch (they are paid like any unit).", minimum=0),
    Argument("use_golds", bool, False,
             "Mix units with known answers into workers' queues (needs a task script's "
             "get_gold_for_worker and validator)."),
    Argument("min_golds", int, 1,
             "Golds a worker must get right before receiving real units.", minimum=0),
    Argument("max_incorrect_golds", int, 0,
             "Golds a worker may get wrong before being disqualified.", minimum=0),
)

_STATIC_BASE = (
    Argument("units_per_assignment", int, 1,
             "How many different workers complete each data item.", minimum=1),
    Argument("extra_source_dir", str, None,
             "Folder of files the task HTML refers to (images, CSS, scripts), served next to it."),
    Argument("data_json", str, None, "JSON file holding a list of objects, one per assignment."),
    Argument("data_jsonl", str, None, "JSON-lines file, one object per line, one line per assignment."),
    Argument("data_csv", str, None,
             "CSV file with a header row; each further row is one assignment, every value a string."),
)

STATIC_TASK = Section(
    kind=BLUEPRINT,
    name="static_task",
    description=(
        "A templated HTML page shown to workers: each data row fills the page's ${column} "
        "placeholders and the fields of the page's form are the submitted result."
    ),
    arguments=(
        Argument("task_source", str, MISSING, "The (templated) HTML file workers see for the task.",
                 required=True),
        Argument("preview_source", str, None,
                 "HTML shown to workers previewing the task; defaults to the task HTML."),
        Argument("onboarding_source", str, None,
                 "HTML of the onboarding step (used when onboarding_qualification is set)."),
        *_STATIC_BASE,
        *_ONBOARDING,
        *_BLUEPRINT_BASE,
        *_SCREENING,
        *_GOLDS,
    ),
)

STATIC_REACT_TASK = Section(
    kind=BLUEPRINT,
    name="static_react_task",
    description=(
        "A prebuilt React bundle (typically on the mephisto-task package's useMephistoTask hook) shown "
        "to workers; each data row is the page's initialTaskData and what it submits is the result."
    ),
    arguments=(
        Argument("task_source", str, MISSING,
                 "The task's JavaScript bundle, e.g. ${task_dir}/webapp/build/bundle.js.", required=True),
        Argument("link_task_source", bool, False,
                 "Serve the bundle from the task folder rather than a copy (development)."),
        *_STATIC_BASE,
        *_ONBOARDING,
        *_BLUEPRINT_BASE,
        *_SCREENING,
        *_GOLDS,
    ),
)

REMOTE_PROCEDURE = Section(
    kind=BLUEPRINT,
    name="remote_procedure",
    description=(
        "A React page on mephisto-task's useMephistoRemoteProcedureTask that calls the task's Python "
        "functions (function_registry) while the worker works; each call runs on a Celery worker."
    ),
    arguments=(
        Argument("task_source", str, MISSING,
                 "The task's JavaScript bundle, e.g. ${task_dir}/webapp/build/bundle.js.", required=True),
        Argument("link_task_source", bool, False,
                 "Serve the bundle from the task folder rather than a copy (development)."),
        *_STATIC_BASE,
        *_ONBOARDING,
        *_BLUEPRINT_BASE,
        *_SCREENING,
        *_GOLDS,
    ),
)

PARLAI_CHAT = Section(
    kind=BLUEPRINT,
    name="parlai_chat",
    description=(
        "Mephisto's ParlAI chat: a ParlAI world (world_file) played by a runner worker with the workers "
        "of a conversation (get_world_params()['agent_count'] units per assignment) on bootstrap-chat's "
        "page over the live channel; onboarding plays the world's make_onboarding_world. Needs ParlAI "
        "(mephisto-dist's parlai extra) where the runner workers run and where a run is launched."
    ),
    arguments=(
        Argument("world_file", str, MISSING,
                 "Python file of the ParlAI world: make_world(opt, agents), get_world_params(), and optionally "
                 "make_onboarding_world(opt, agent) and validate_onboarding(data).", required=True),
        Argument("preview_source", str, None,
                 "HTML shown to workers previewing the task (task_config.json's preview_html)."),
        Argument("task_description_file", str, None,
                 "HTML of the task's description, shown next to the chat (task_config.json's "
                 "task_description); needed unless a custom front end shows its own."),
        Argument("custom_source_bundle", str, None,
                 "A prebuilt front end bundle.js served instead of the default bootstrap-chat page."),
        Argument("custom_source_dir", str, None,
                 "A folder with a custom main.js (and style.css, components/) built on bootstrap-chat "
                 "instead of the default page (accepted; mephisto-dist does not build it yet: use "
                 "custom_source_bundle).", implemented=False),
        Argument("extra_source_dir", str, None,
                 "Folder of files the front end refers to (images, CSS, scripts), served next to it."),
        Argument("context_csv", str, None,
                 "CSV with a header row: one conversation per row, the row its shared data."),
        Argument("context_jsonl", str, None,
                 "JSON-lines file: one conversation per line, the object its shared data."),
        Argument("num_conversations", int, None,
                 "How many conversations (assignments) to run when no context file is given.", minimum=1),
        *_ONBOARDING,
        *_BLUEPRINT_BASE,
    ),
)

# -- architects --------------------------------------------------------------------------------------

_ARCHITECT_BASE = (
    Argument("server_type", str, "node",
             "Mephisto's router flavour (accepted so Mephisto configs load; mephisto-dist always serves "
             "with its own web process).", choices=("node", "flask"), implemented=False),
    Argument("server_source_path", str, None,
             "A prepared Mephisto router folder (accepted so Mephisto configs load; not used).",
             implemented=False),
)

LOCAL_ARCHITECT = Section(
    kind=ARCHITECT,
    name="local",
    description="Serve the worker-facing pages from this machine (or a load-balanced group of web processes).",
    arguments=(
        *_ARCHITECT_BASE,
        Argument("hostname", str, "localhost", "Host name workers' browsers use to reach the server."),
        Argument("port", int, 3000, "Port the worker-facing server listens on.", minimum=1),
    ),
)

EC2_ARCHITECT = Section(
    kind=ARCHITECT,
    name="ec2",
    description="Serve the worker-facing pages from an EC2 instance tagged with the run, terminated when the "
                "run ends (AWS credentials as AWS tools keep them: a named profile or the environment).",
    arguments=(
        *_ARCHITECT_BASE,
        Argument("instance_type", str, "t2.micro", "Instance type of the server."),
        Argument("subdomain", str, None, "Name of the server under `domain` (default: the task_name)."),
        Argument("profile_name", str, None, "AWS profile to deploy with (default: the standard AWS environment)."),
        Argument("region_name", str, "us-east-2", "AWS region of the instance."),
        Argument("image_id", str, MISSING, "AMI with mephisto-dist installed in /opt/mephisto-dist/venv and the "
                 "deployment's settings in /etc/mephisto-dist.env (infra/README.md).", required=True),
        Argument("subnet_id", str, None, "Subnet to launch in (default: the account's default subnet)."),
        Argument("security_group_id", str, None, "Security group letting workers reach `port`."),
        Argument("key_pair_name", str, None, "Key pair for SSH access to the instance."),
        Argument("domain", str, None, "Domain routed to the instance: the server is https://SUBDOMAIN.DOMAIN "
                 "(default: the instance's public DNS name)."),
        Argument("port", int, 3000, "Port the server listens on.", minimum=1),
    ),
)

MOCK_ARCHITECT = Section(
    kind=ARCHITECT,
    name="mock",
    description="An architect for tests: deploys nothing unless asked to run a local server.",
    arguments=(
        *_ARCHITECT_BASE,
        Argument("should_run_server", bool, False, "Actually start a local server for the run."),
        Argument("port", int, 3000, "Port of that server.", minimum=1),
    ),
)

# -- providers ---------------------------------------------------------------------------------------

MOCK_PROVIDER = Section(
    kind=PROVIDER,
    name="mock",
    description="A local stand-in crowd: workers are whoever opens the task URL with a worker_id.",
    arguments=(
        Argument("requester_name", str, "MOCK_REQUESTER", "Requester account the run is launched under."),
        Argument("publish_latency_s", float, 0.0,
                 "Rehearse a remote marketplace: each publish takes this long, is rate-limited, and freed "
                 "slots are refilled by a Celery task.", minimum=0),
        Argument("publish_log", str, "", "File each publish appends '<unit id> <launch id>' to."),
        Argument("fault", str, "", "'publish': every publish fails (to rehearse a failing marketplace).",
                 choices=("", "publish")),
    ),
)

MTURK_ACCESS = (
    Argument("endpoint_url", str, None, "MTurk API endpoint; filled in from the requester's registration."),
    Argument("aws_profile", str, None,
             "AWS credentials profile of the requester; filled in from its registration (never a key)."),
    Argument("deployment", str, None, "Deployment name marked on every HIT; filled in from "
             "MEPHISTO_DIST_DEPLOYMENT."),
)

MTURK_PROVIDER = Section(
    kind=PROVIDER,
    name="mturk",
    description="Amazon Mechanical Turk (live marketplace, real payments).",
    arguments=(
        Argument("requester_name", str, MISSING,
                 "Registered requester whose AWS credentials launch the HITs.", required=True),
        *MTURK_ACCESS,
    ),
)

MTURK_SANDBOX_PROVIDER = Section(
    kind=PROVIDER,
    name="mturk_sandbox",
    description="Amazon Mechanical Turk's sandbox (test marketplace, no real payments).",
    arguments=(
        Argument("requester_name", str, MISSING,
                 "Registered sandbox requester whose AWS credentials launch the HITs.", required=True),
        *MTURK_ACCESS,
    ),
)

PROLIFIC_PROVIDER = Section(
    kind=PROVIDER,
    name="prolific",
    description="Prolific: a run is one study in a workspace and project found or made by name; each launched "
                "unit adds a place (places only grow); participants come back to Prolific with the study's "
                "completion code.",
    arguments=(
        Argument("requester_name", str, "prolific",
                 "Registered Prolific requester (mephisto-dist register prolific name=NAME api_key=...)."),
        Argument("prolific_external_study_url", str, "",
                 "The study URL participants are sent to; empty: the run's task page with participant_id, "
                 "study_id and submission_id filled in from {{%PROLIFIC_PID%}}, {{%STUDY_ID%}} and "
                 "{{%SESSION_ID%}} and the completion URL. A URL given is used as it is."),
        Argument("prolific_id_option", str, "url_parameters",
                 "How Prolific passes the participant id (the study's prolific_id_option).",
                 choices=("question", "url_parameters", "not_required")),
        Argument("prolific_estimated_completion_time_in_minutes", int, 5,
                 "Estimated minutes one participant takes (the study's estimated_completion_time; its "
                 "maximum_allowed_time is the larger of it and assignment_duration_in_seconds).", minimum=1),
        Argument("prolific_eligibility_requirements", list, [],
                 "Eligibility requirements as Mephisto lists them ({name: CLASS, ...attributes}; "
                 "AgeRange, ApprovalNumbers, ApprovalRate, CustomBlacklist, CustomWhitelist, JoinedBefore, "
                 "ParticipantGroup ...EligibilityRequirement), set on the study when it is made as Mephisto's "
                 "classes set them (Prolific's {_cls, attributes}); an unknown class or a missing attribute is "
                 "a config error (Mephisto skips the one, fails on the other)."),
        Argument("prolific_workspace_name", str, "My Workspace",
                 "Prolific workspace of the study (found by title, or made)."),
        Argument("prolific_project_name", str, "Project", "Prolific project of the study (found by title, or made)."),
        Argument("prolific_allow_list_group_name", str, "Allow list",
                 "Participant group of allowed workers. Not carried out: Prolific freezes a study's eligibility "
                 "once it is published, so an allow group would have to be filled, before the first place, with "
                 "every participant already known to hold the run's qualifications (Mephisto's way), shutting out "
                 "every new one; here a participant without them is refused by our server when they open the task "
                 "(the same check as on any provider) and returns the place.", implemented=False),
        Argument("prolific_block_list_group_name", str, "Block list",
                 "Participant group a blocked worker is added to at once (and removed from on unblock); a "
                 "study made afterwards keeps its members out with the study's custom block list."),
        Argument("endpoint_url", str, None,
                 "Prolific API endpoint; filled in from the requester's registration (prolific-local's URL)."),
        Argument("deployment", str, None, "Deployment name marked on the study's internal_name; filled in from "
                 "MEPHISTO_DIST_DEPLOYMENT."),
    ),
)

INHOUSE_PROVIDER = Section(
    kind=PROVIDER,
    name="inhouse",
    description="The lab's own annotators: each opens the task URL with ?worker_id=NAME&id=ANY (Mephisto's "
                "inhouse URL); no marketplace, no payment (approvals and bonuses are recorded for the lab to pay).",
    arguments=(
        Argument("requester_name", str, "inhouse", "Requester name the run is recorded under."),
        Argument("ui_base_url", str, None,
                 "Base URL annotators open the task at, when not the server's own (behind a proxy or a "
                 "container's published port); used in the worker URLs run prints. Mephisto's default is "
                 "http://localhost:3000; here the default is the run's server URL."),
    ),
)

# -- the task run ------------------------------------------------------------------------------------

TASK_RUN = Section(
    kind=TASK,
    name=TASK,
    description="The TaskRun: what workers see on the crowd provider, pay, timing and limits.",
    arguments=(
        Argument("task_name", str, MISSING,
                 "Name grouping runs of the same task; per-worker limits count across it.", required=True),
        Argument("task_title", str, MISSING, "Title workers see on the crowd provider.", required=True),
        Argument("task_description", str, MISSING, "Longer description of the work.", required=True),
        Argument("task_reward", float, MISSING, "Pay per worker per unit, in dollars.", required=True,
                 minimum=0),
        Argument("task_tags", str, MISSING, "Comma-separated keywords workers can search for.",
                 required=True),
        Argument("task_lifetime_in_seconds", int, 60 * 60 * 24 * 31,
                 "How long units stay available on the provider before expiring.", minimum=1),
        Argument("assignment_duration_in_seconds", int, 30 * 60,
                 "Time a worker has to finish a unit once accepted.", minimum=1),
        Argument("no_submission_patience", int, 60 * 60 * 12,
                 "Seconds without any submission after which the run is presumed stuck and shut down.",
                 minimum=1),
        Argument("allowed_concurrent", int, 0,
                 "Units one worker may hold at once in this run (0 = unlimited).", minimum=0),
        Argument("maximum_units_per_worker", int, 0,
                 "Units one worker may do across all runs with this task_name (0 = unlimited).", minimum=0),
        Argument("max_num_concurrent_units", int, 0,
                 "Units of the run launched or assigned at any moment (0 = unlimited).", minimum=0),
        Argument("max_assignments_per_hit", int, 1,
                 "Times one HIT can be accepted and completed (Mephisto launches one unit per HIT).",
                 minimum=1, implemented=False),
        Argument("submission_timeout", int, 600,
                 "Seconds a task script's TaskRunner's agents have to submit once run_assignment (or run_unit) "
                 "returned; then one that did not is timed out and its unit expires (a unit alone in its "
                 "assignment goes back to the pool) (0 = at once). A static task's worker has "
                 "assignment_duration_in_seconds.", minimum=0),
        Argument("partner_wait_in_seconds", int, 600,
                 "mephisto-dist's own: how long a worker of an assignment whose agents work together (a task "
                 "script's concurrent TaskRunner) waits for the others; then they are told, released and "
                 "their unit offered again (0 = as long as the page stays, as Mephisto waits).", minimum=0),
        Argument("runner_restarts", int, 0,
                 "mephisto-dist's own: how many times an assignment whose task script's TaskRunner died with "
                 "its runner worker (SIGKILL, a lost machine) is started again on another runner worker from "
                 "its stored messages (the runner's act() gets what the pages said, in order, without "
                 "waiting; what it observes again is not sent again), its pages told nothing; for a runner "
                 "that, given the same messages, says the same. 0 = never: the assignment ends, its units go "
                 "back to the pool.", minimum=0),
        Argument("resume_incomplete_run", bool, False,
                 "Instead of a new run, resume the newest unfinished run of this task_name."),
        Argument("post_install_script", str, "",
                 "Script run between npm install and build of a React webapp (a task script passes it to "
                 "build_custom_bundle)."),
        Argument("force_rebuild", bool, False,
                 "Rebuild a React webapp on every launch (a task script passes it to build_custom_bundle)."),
    ),
)

_REGISTRY: Final[dict[str, tuple[Section, ...]]] = {
    BLUEPRINT: (STATIC_TASK, STATIC_REACT_TASK, REMOTE_PROCEDURE, PARLAI_CHAT),
    ARCHITECT: (LOCAL_ARCHITECT, EC2_ARCHITECT, MOCK_ARCHITECT),
    PROVIDER: (MOCK_PROVIDER, MTURK_PROVIDER, MTURK_SANDBOX_PROVIDER, PROLIFIC_PROVIDER, INHOUSE_PROVIDER),
    TASK: (TASK_RUN,),
}


def sections(kind: str) -> tuple[Section, ...]:
    """Every section of one kind (``blueprint``, ``architect``, ``provider`` or ``task``)."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown argument kind '{kind}'; known: {', '.join(KINDS)}") from None


def get_section(kind: str, name: str) -> Section:
    """The section ``name`` of ``kind``; a :class:`ConfigError` listing the known names otherwise."""
    known = sections(kind)
    for section in known:
        if section.name == name:
            return section
    names = ", ".join(section.name for section in known)
    raise ConfigError(f"unknown {kind} '{name}'; known: {names}")
