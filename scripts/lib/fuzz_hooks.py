"""schemathesis hooks of scripts/fuzz-api.sh (SCHEMATHESIS_HOOKS=fuzz_hooks).

`GET /api/tenants/{id}/logs?follow=true` is an answer that never ends by
design (it follows the log until the client leaves); the fuzzer would wait
for its end and report a read timeout. Every other value of `follow` is
generated as usual."""
import schemathesis


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict) and query.get("follow") in (True, "true"):
        query = dict(query)
        query["follow"] = False
    return query
