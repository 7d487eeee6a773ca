"""The OpenAPI document matches what the server does: schemathesis generates requests from
``/api/openapi.json`` and sends them to a real ``vachat serve`` as an administrator (every
permission), checking every answer: no 5xx, every status documented for its operation, every
body valid against the documented schema, content types as documented.

A bounded run: a fixed seed and a few examples per operation, so it is reproducible and takes
a couple of minutes on a small machine. A failure prints schemathesis's report, with the curl
command that reproduces each case.
"""

import asyncio
import sys

import pytest

# Examples per operation: enough to send each operation valid and invalid bodies, parameters
# and identifiers, small enough for the whole run to stay within a few minutes on 2 cores.
MAX_EXAMPLES = 8
SEED = 20261207
# The whole run's bound (s); the run is cut short beyond it and the test fails.
RUN_TIMEOUT = 400
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
# Operations that would end the administrator's own session or account midway, leaving every
# later request a 401 (documented, but then nothing else gets tested).
SESSION_ENDING = r"^/api/auth/(logout|logout-all|password|sessions/\{[^}]+\})$|^/api/users/me$"


@pytest.mark.gen_test(timeout=RUN_TIMEOUT + 60)
async def test_the_server_answers_as_its_openapi_document_says(server_process, admin_user, tmp_path):
    server = server_process()
    await server.wait_ready()
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.base_url}/api/openapi.json",
        "--checks", ",".join(CHECKS), "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "30",
        "--header", f"Authorization: Bearer {admin_user.access_token}",
        "--exclude-path-regex", SESSION_ENDING,
        "--no-color", "--report-dir", str(tmp_path / "schemathesis"),
    ]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        raise
    report = output.decode(errors="replace")
    print(report[-4000:])  # the summary, in the test's captured output
    assert process.returncode == 0, report[-20000:]
