"""The batch drafting job: intake, the worker loop, engines (local processes, Ray), questions."""
