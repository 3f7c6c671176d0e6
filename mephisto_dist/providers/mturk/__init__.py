"""Amazon Mechanical Turk behind the CrowdProvider contract, through boto3: ``mturk`` (the live
marketplace) and ``mturk_sandbox``.

``client`` builds the one boto3 client a provider uses, from a requester's stored access (a named profile
in the AWS shared credentials file, or the standard AWS environment, and an optional endpoint URL);
``mapping`` turns a run's arguments into MTurk's shapes (pure); ``provider`` makes the calls. The
local stand-in for MTurk (``mephisto_dist.mturk_local``) is never imported here: it is reached over HTTP
like MTurk itself.

The package itself loads nothing: a run on another provider imports ``client`` and ``credentials`` (every
requester's access is said here), never ``provider`` and ``mapping`` (the registry,
``mephisto_dist.providers``, loads them for an MTurk run).
"""
